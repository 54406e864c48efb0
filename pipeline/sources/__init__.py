"""Dataset readers (Cityscapes-Seq, VIPER, SYNTHIA-SEQS) and the class protocols that map their labels.

The face for the trainer: the class protocols (`get_protocol`, `Protocol`, `colorize`, `id_outside`, `IGNORE_ID`, the
one home of the ignore label 255), the image helpers it shares with prep (`resize_rgb`, `resize_label`,
`read_palette_png`) and the gtFine layout (`label_files`, `label_key`, `read_cityscapes_label`), so no trainer
module parses a dataset path.
"""

from __future__ import annotations

import os

import numpy as np

from pipeline.errors import InputError
from pipeline.sources import cityscapes, synthia, viper
from pipeline.sources.cityscapes import label_files, label_key
from pipeline.sources.cityscapes import read_label as read_cityscapes_label
from pipeline.sources.images import read_palette_png, resize_label, resize_rgb
from pipeline.sources.protocols import (
    IGNORE_ID,
    PROTOCOL_NAMES,
    SOURCE_NAMES,
    Protocol,
    colorize,
    default_protocol,
    get_protocol,
    id_outside,
)
from pipeline.sources.records import SourceRecord

__all__ = [
    "IGNORE_ID",
    "LABELLED_SOURCES",
    "PROTOCOL_NAMES",
    "SOURCE_NAMES",
    "Protocol",
    "SourceRecord",
    "colorize",
    "default_protocol",
    "get_protocol",
    "id_outside",
    "label_files",
    "label_key",
    "list_source",
    "read_cityscapes_label",
    "read_palette_png",
    "read_source_label",
    "resize_label",
    "resize_rgb",
]

# Labelled-image readers. "cityscapes" (the annotated train frames with gtFine) is the oracle's labelled store.
_READERS = {"viper": viper, "synthia": synthia, "cityscapes": cityscapes}
LABELLED_SOURCES = (*SOURCE_NAMES, "cityscapes")


def _reader(src: str):
    if src not in _READERS:
        raise InputError(f"--src: unknown labelled dataset {src!r}; expected one of {', '.join(LABELLED_SOURCES)}")
    return _READERS[src]


def list_source(src: str, root: str | os.PathLike) -> list[SourceRecord]:
    """The labelled frames of `src` ("viper", "synthia", or "cityscapes": its annotated train frames) under `root`."""
    return _reader(src).list_samples(root)


def read_source_label(src: str, path: str | os.PathLike, protocol: Protocol) -> np.ndarray:
    """(H, W) uint8 train ids of one label file of source dataset `src` under `protocol`."""
    return _reader(src).read_label(path, protocol)
