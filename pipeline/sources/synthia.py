"""SYNTHIA-SEQS (a source): the original or DA-VSN's flat layout, 16-bit labels with the class id in R.

Root = one sequence folder, e.g. `SYNTHIA-SEQS-04-DAWN/`. Every frame of SYNTHIA-Seq is labelled; all are used.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.sources.images import read_png_unchanged
from pipeline.sources.protocols import LUT_SIZE, Protocol
from pipeline.sources.records import SourceRecord, existing_root, relative, require_protocol

# (image folder, label folder) relative to the root, in the order they are looked for.
ORIGINAL_LAYOUT = ("RGB/Stereo_Left/Omni_F", "GT/LABELS/Stereo_Left/Omni_F")  # the published archive
FLAT_LAYOUT = ("rgb", "label")  # DA-VSN's re-organised copy
CLASS_CHANNEL = 2  # R in OpenCV's BGR order; G holds the instance id
_FRAME_NAME = re.compile(r"^(\d{6})\.png$")


def _layout(root: Path) -> tuple[Path, Path]:
    """(image folder, label folder) of the first layout present; neither raises InputError naming both."""
    for image_dir, label_dir in (ORIGINAL_LAYOUT, FLAT_LAYOUT):
        if (root / image_dir).is_dir() and (root / label_dir).is_dir():
            return root / image_dir, root / label_dir
    raise InputError(
        f"{root}: not a SYNTHIA-SEQS sequence folder; expected {root}/{ORIGINAL_LAYOUT[0]}/<frame6>.png "
        f"and {root}/{ORIGINAL_LAYOUT[1]}/<frame6>.png, or DA-VSN's {root}/{FLAT_LAYOUT[0]}/<frame6>.png "
        f"and {root}/{FLAT_LAYOUT[1]}/<frame6>.png"
    )


def list_samples(root: str | os.PathLike) -> list[SourceRecord]:
    """SYNTHIA frames with both an image and a label, sorted by frame number."""
    root = existing_root(root, "SYNTHIA")
    image_dir, label_dir = _layout(root)
    records = []
    for name in sorted(os.listdir(image_dir)):
        match = _FRAME_NAME.match(name)
        image, label = image_dir / name, label_dir / name
        if match and label.is_file():
            records.append(
                SourceRecord(
                    f"synthia_{match[1]}", str(image), str(label), relative(image, root), relative(label, root)
                )
            )
    if not records:
        raise InputError(
            f"{root}: no SYNTHIA frames found; expected <frame6>.png files in both {image_dir} and {label_dir}"
        )
    return records


def read_label(path: str | os.PathLike, protocol: Protocol) -> np.ndarray:
    """(H, W) uint8 train ids of a SYNTHIA GT/LABELS PNG under `protocol` (class id from the R channel)."""
    require_protocol(protocol, "synthia")
    raw = read_png_unchanged(path)
    if raw.ndim != 3 or raw.shape[2] < 3:
        raise InputError(
            f"{path}: expected a SYNTHIA label PNG with 3 or 4 channels (class id in R), got shape {raw.shape}"
        )
    class_ids = raw[:, :, CLASS_CHANNEL]
    # 16-bit ids above 255 name no class: clamp them onto 255, which every table maps to ignore.
    return protocol.source_lut()[np.minimum(class_ids, LUT_SIZE - 1)]
