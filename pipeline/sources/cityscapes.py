"""Cityscapes-Seq (the target): consecutive frame pairs, annotated frames with their snippets, gtFine labels.

Root = the folder holding `leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` and
`gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`. A pair is (I0, I1) = (frame f-1, frame f).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.sources.images import read_png_unchanged
from pipeline.sources.protocols import Protocol
from pipeline.sources.records import SourceRecord, existing_root, relative

IMAGE_DIR = "leftImg8bit_sequence"
LABEL_DIR = "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
PAIR_MODES = ("all", "annotated")  # every consecutive pair, or only the pair ending at each annotated frame (DA-VSN)


@dataclass(frozen=True)
class PairRecord:
    """A consecutive pair: path0 = frame f-1 (I0), path1 = frame f (I1); key = `<city>_<seq>_<f:06d>`."""

    key: str
    city: str
    seq: str  # six digits, as in the file name
    frame: int  # f, the frame number of I1
    path0: str
    path1: str
    rel0: str  # relative to the root, POSIX
    rel1: str


@dataclass(frozen=True)
class AnnotatedFrame:
    """A frame with a gtFine label; `snippet` = ((frame number, image path), ...) of its run of consecutive frames."""

    key: str
    city: str
    seq: str
    frame: int
    image_path: str
    label_path: str
    snippet: tuple[tuple[int, str], ...]


def _image_path(root: Path, split: str, city: str, seq: str, frame: int) -> Path:
    return root / IMAGE_DIR / split / city / f"{city}_{seq}_{frame:06d}{IMAGE_SUFFIX}"


def _expected_image(root: Path, split: str) -> str:
    return f"expected {root}/{IMAGE_DIR}/{split}/<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}"


def _expected_label(root: Path, split: str) -> str:
    return f"expected {root}/{LABEL_DIR}/{split}/<city>/<city>_<seq>_<frame>{LABEL_SUFFIX}"


def _scan(folder: Path, suffix: str) -> list[tuple[str, str, int, Path]]:
    """(city, seq, frame, path) of every `<city>/<city>_<seq6>_<frame6><suffix>` under `folder`, sorted."""
    found = []
    for city_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        city = city_dir.name
        name = re.compile(rf"^{re.escape(city)}_(\d{{6}})_(\d{{6}}){re.escape(suffix)}$")
        for entry in os.scandir(city_dir):
            match = name.match(entry.name)
            if match:
                found.append((city, match[1], int(match[2]), Path(entry.path)))
    return sorted(found)


def _frames(root: Path, split: str) -> dict[tuple[str, str], dict[int, Path]]:
    """{(city, seq): {frame: image path}} of leftImg8bit_sequence/<split>; no frame raises InputError."""
    folder = root / IMAGE_DIR / split
    if not folder.is_dir():
        raise InputError(f"{root}: not a Cityscapes-Seq root (no {IMAGE_DIR}/{split}/); {_expected_image(root, split)}")
    frames: dict[tuple[str, str], dict[int, Path]] = {}
    for city, seq, frame, path in _scan(folder, IMAGE_SUFFIX):
        frames.setdefault((city, seq), {})[frame] = path
    if not frames:
        raise InputError(f"{folder}: no frames found; {_expected_image(root, split)}")
    return frames


def _annotated(root: Path, split: str) -> list[tuple[str, str, int, Path]]:
    """(city, seq, frame, label path) of every gtFine labelIds file of the split; none raises InputError."""
    folder = root / LABEL_DIR / split
    if not folder.is_dir():
        raise InputError(f"{root}: no {LABEL_DIR}/{split}/ folder; {_expected_label(root, split)}")
    labels = _scan(folder, LABEL_SUFFIX)
    if not labels:
        raise InputError(f"{folder}: no annotated frames found; {_expected_label(root, split)}")
    return labels


def _runs(frame_numbers) -> list[list[int]]:
    """Split frame numbers into runs of consecutive numbers (the 30-frame snippets), each sorted."""
    runs: list[list[int]] = []
    for frame in sorted(frame_numbers):
        if runs and frame == runs[-1][-1] + 1:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


def _pair(root: Path, city: str, seq: str, frame: int, path0: Path, path1: Path) -> PairRecord:
    """The PairRecord of (frame - 1, frame), keyed by I1's frame number, its paths also relative to the root."""
    return PairRecord(
        f"{city}_{seq}_{frame:06d}",
        city,
        seq,
        frame,
        str(path0),
        str(path1),
        relative(path0, root),
        relative(path1, root),
    )


def _image_of(root: Path, split: str, frames, city: str, seq: str, frame: int, label: Path) -> Path:
    """The image of an annotated frame; a missing one raises InputError naming both files."""
    path = frames.get((city, seq), {}).get(frame)
    if path is None:
        expected = _image_path(root, split, city, seq, frame)
        raise InputError(f"{label}: annotated frame has no image; expected {expected}")
    return path


def list_pairs(root: str | os.PathLike, split: str = "train", pairs: str = "all") -> list[PairRecord]:
    """Consecutive pairs (f-1, f) of a split, sorted by (city, seq, f): every pair, or those ending at a label."""
    if pairs not in PAIR_MODES:
        raise InputError(f"--pairs: expected one of {', '.join(PAIR_MODES)}, got {pairs!r}")
    root = existing_root(root, "Cityscapes")
    frames = _frames(root, split)
    if pairs == "all":
        return [
            _pair(root, city, seq, frame, paths[frame - 1], paths[frame])
            for (city, seq), paths in sorted(frames.items())
            for frame in sorted(paths)
            if frame - 1 in paths
        ]
    records = []
    for city, seq, frame, label in _annotated(root, split):
        path1 = _image_of(root, split, frames, city, seq, frame, label)
        path0 = frames[(city, seq)].get(frame - 1)
        if path0 is None:
            raise InputError(
                f"{path1}: annotated frame without its previous frame; expected "
                f"{_image_path(root, split, city, seq, frame - 1)}"
            )
        records.append(_pair(root, city, seq, frame, path0, path1))
    return records


def list_annotated(root: str | os.PathLike, split: str = "val") -> list[AnnotatedFrame]:
    """The frames of a split that have a gtFine label, sorted by (city, seq, frame), each with its snippet."""
    root = existing_root(root, "Cityscapes")
    frames = _frames(root, split)
    records = []
    for city, seq, frame, label in _annotated(root, split):
        image = _image_of(root, split, frames, city, seq, frame, label)
        paths = frames[(city, seq)]
        run = next(run for run in _runs(paths) if frame in run)
        snippet = tuple((number, str(paths[number])) for number in run)
        records.append(AnnotatedFrame(f"{city}_{seq}_{frame:06d}", city, seq, frame, str(image), str(label), snippet))
    return records


def list_samples(root: str | os.PathLike, split: str = "train") -> list[SourceRecord]:
    """The annotated frames of a split as labelled samples (key `cityscapes_<city>_<seq>_<frame>`).

    This is the target-labelled store of the oracle row: the same frames the target pairs end at, with their
    gtFine labels, which an unsupervised method never sees.
    """
    root_path = existing_root(root, "Cityscapes")
    return [
        SourceRecord(
            f"cityscapes_{r.key}",
            r.image_path,
            r.label_path,
            relative(Path(r.image_path), root_path),
            relative(Path(r.label_path), root_path),
        )
        for r in list_annotated(root_path, split)
    ]


def label_files(root: str | os.PathLike, split: str = "val") -> list[Path]:
    """Every `<root>/gtFine/<split>/<city>/*_gtFine_labelIds.png`, sorted; none raises InputError naming --root."""
    labels = sorted((Path(root) / LABEL_DIR / split).glob(f"*/*{LABEL_SUFFIX}"))
    if not labels:
        raise InputError(f"--root {root}: no {LABEL_DIR}/{split}/<city>/*{LABEL_SUFFIX} files")
    return labels


def label_key(path: str | os.PathLike) -> str:
    """`<city>_<seq>_<frame>` of a gtFine labelIds file (its name without `_gtFine_labelIds.png`)."""
    return Path(path).name[: -len(LABEL_SUFFIX)]


def read_label(path: str | os.PathLike, protocol: Protocol) -> np.ndarray:
    """(H, W) uint8 train ids of a gtFine labelIds PNG under `protocol` (255 = ignore)."""
    label_ids = read_png_unchanged(path)
    if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
        raise InputError(
            f"{path}: expected a single-channel 8-bit Cityscapes labelIds PNG, "
            f"got shape {label_ids.shape} of {label_ids.dtype}"
        )
    return protocol.cityscapes_lut()[label_ids]
