"""Dataset readers (Cityscapes-Seq, VIPER, SYNTHIA-SEQS) and the class protocols that map their labels."""

from __future__ import annotations

import os

import numpy as np

from pipeline.errors import InputError
from pipeline.sources import synthia, viper
from pipeline.sources.protocols import SOURCE_NAMES, Protocol
from pipeline.sources.records import SourceRecord

_READERS = {"viper": viper, "synthia": synthia}


def _reader(src: str):
    if src not in _READERS:
        raise InputError(f"--source: unknown source dataset {src!r}; expected one of {', '.join(SOURCE_NAMES)}")
    return _READERS[src]


def list_source(src: str, root: str | os.PathLike) -> list[SourceRecord]:
    """The labelled frames of source dataset `src` ("viper" or "synthia") under `root`."""
    return _reader(src).list_samples(root)


def read_source_label(src: str, path: str | os.PathLike, protocol: Protocol) -> np.ndarray:
    """(H, W) uint8 train ids of one label file of source dataset `src` under `protocol`."""
    return _reader(src).read_label(path, protocol)
