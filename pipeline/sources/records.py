"""What the source readers hand to the pipeline, and the checks every reader makes on its arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.sources.protocols import Protocol


@dataclass(frozen=True)
class SourceRecord:
    """One labelled source frame: `key` is the WebDataset key, rel_* are relative to the dataset root (POSIX)."""

    key: str
    image_path: str
    label_path: str
    rel_image: str
    rel_label: str


def existing_root(root: str | os.PathLike, dataset: str) -> Path:
    """`root` as an absolute Path; a missing or non-directory root raises InputError."""
    path = Path(root)
    if not path.is_dir():
        raise InputError(f"{dataset} root {root}: no such directory")
    return path.absolute()


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root`, with forward slashes (as recorded in meta.json)."""
    return path.relative_to(root).as_posix()


def require_protocol(protocol: Protocol, source: str) -> None:
    """Refuse a class protocol made for another source dataset."""
    if protocol.source != source:
        raise InputError(f"--protocol {protocol.name} maps {protocol.source} labels, not {source} labels")
