"""The registry of labelled datasets (`i2vda-prep source --src`) and, with each, the class protocols that map its
labels: `i2vda-prep`'s choices, defaults and help, the protocol names every command accepts, and the readers the
prep job calls all derive from it.

To add a source dataset: write its reader (`list_samples(root)`, `read_label(path, protocol)`, and its protocol made
with `make_protocol`) in a new module of this package and register a `SourceDataset` for it below
(docs/DEVELOPING.md, "Add a source dataset").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError
from pipeline.registry import Registry
from pipeline.sources import cityscapes, synthia, viper
from pipeline.sources.protocols import SYNTHIA11, SYNTHIA12, VIPER15, Protocol
from pipeline.sources.records import SourceRecord


@dataclass(frozen=True)
class SourceDataset:
    """A registered labelled dataset: its reader, the paper's input size, and the protocols of its labels."""

    name: str  # `--src NAME`, and the store's folder name
    title: str  # as people write it, e.g. "VIPER"
    list_samples: Callable[[str | os.PathLike], list[SourceRecord]]  # root -> its labelled frames, sorted
    read_label: Callable[[str | os.PathLike, Protocol], np.ndarray]  # (label file, protocol) -> (H, W) train ids
    size_wh: tuple[int, int]  # the stored size (W, H) by default: the paper's for the dataset
    root: str  # what `--root` names, for `--help`
    # The protocols made for its labels, the paper's first (the default). None of its own (the Cityscapes oracle):
    # its labels map through every protocol's Cityscapes table, and `--protocol` must name one.
    protocols: tuple[Protocol, ...] = ()

    def __post_init__(self) -> None:
        strangers = [p.name for p in self.protocols if p.source != self.name]
        if strangers:
            raise ValueError(f"{self.name}: protocol(s) {', '.join(strangers)} map another dataset's labels")


SOURCES: Registry[SourceDataset] = Registry("labelled dataset", "--src")
SOURCES.register(
    SourceDataset(
        "viper", "VIPER", viper.list_samples, viper.read_label, (896, 512), "the folder holding train/", (VIPER15,)
    )
)
SOURCES.register(
    SourceDataset(
        "synthia",
        "SYNTHIA",
        synthia.list_samples,
        synthia.read_label,
        (1280, 768),
        "the sequence folder (holding RGB/ and GT/)",
        (SYNTHIA11, SYNTHIA12),
    )
)
SOURCES.register(  # the annotated Cityscapes train frames with their labels: the oracle's store
    SourceDataset(
        "cityscapes",
        "Cityscapes",
        cityscapes.list_samples,
        cityscapes.read_label,
        (1024, 512),
        "the folder holding gtFine/",
    )
)


def protocols() -> dict[str, Protocol]:
    """Every registered class protocol by name, in the order of their datasets' registration."""
    found: dict[str, Protocol] = {}
    for dataset in SOURCES.entries():
        for protocol in dataset.protocols:
            if found.setdefault(protocol.name, protocol) is not protocol:
                raise ValueError(f"two registered protocols are named {protocol.name!r}")
    return found


def protocol_names() -> tuple[str, ...]:
    """The names `--protocol` accepts (viper15, synthia11, synthia12 and those of plugins)."""
    return tuple(protocols())


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`; an unknown name raises InputError listing the valid ones."""
    known = protocols()
    if name not in known:
        raise InputError(f"--protocol {name}: expected one of {', '.join(known)}")
    return known[name]


def default_protocol(source: str) -> Protocol:
    """The paper's protocol of a source dataset ("viper" -> viper15, "synthia" -> synthia11)."""
    dataset = SOURCES.get(source)
    if not dataset.protocols:
        raise InputError(
            f"--src {source} needs --protocol (its labels map to every protocol: name the one of the model it is an "
            f"oracle for)"
        )
    return dataset.protocols[0]


def list_source(src: str, root: str | os.PathLike) -> list[SourceRecord]:
    """The labelled frames of the registered dataset `src` under `root`."""
    return SOURCES.get(src).list_samples(root)


def read_source_label(src: str, path: str | os.PathLike, protocol: Protocol) -> np.ndarray:
    """(H, W) uint8 train ids of one label file of the registered dataset `src` under `protocol`."""
    return SOURCES.get(src).read_label(path, protocol)
