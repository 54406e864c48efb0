"""Dataset readers (Cityscapes-Seq, VIPER, SYNTHIA-SEQS) and the class protocols that map their labels."""

from __future__ import annotations

import os

import numpy as np

from pipeline.errors import InputError
from pipeline.sources import cityscapes, synthia, viper
from pipeline.sources.protocols import SOURCE_NAMES, Protocol
from pipeline.sources.records import SourceRecord

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
