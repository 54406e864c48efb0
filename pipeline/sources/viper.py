"""VIPER (a source): labelled frames of `train/img` + `train/cls`, indexed-PNG labels, ego-vehicle removal.

Root = the folder holding `train/img/<seq>/<seq>_<frame5>.jpg` and `train/cls/<seq>/<seq>_<frame5>.png`.
A cls PNG is indexed: the palette index of a pixel is its VIPER class id (classes.csv).
"""

from __future__ import annotations

import os
import re

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.sources.images import read_palette_png
from pipeline.sources.protocols import Protocol
from pipeline.sources.records import SourceRecord, existing_root, relative, require_protocol

IMAGE_DIR = "train/img"
LABEL_DIR = "train/cls"
IMAGE_EXTENSIONS = (".jpg", ".png")  # VIPER ships its frames as JPEG (DA-VSN's choice) or as lossless PNG
LABEL_EVERY = 10  # VIPER labels frames whose number ends in 0 (DA-VSN's list holds exactly those)
CAR_ID = 24  # classes.csv
UNLABELED_ID = 0  # classes.csv; every protocol maps it to ignore
EGO_CONNECTIVITY = 8  # as DA-VSN's cv2.connectedComponentsWithStats default


def _expected(root) -> str:
    return f"expected {root}/{IMAGE_DIR}/<seq>/<seq>_<frame5>.jpg and {root}/{LABEL_DIR}/<seq>/<seq>_<frame5>.png"


def list_samples(root: str | os.PathLike) -> list[SourceRecord]:
    """Labelled VIPER frames (number ending in 0, image and cls file both present), sorted by (seq, frame)."""
    root = existing_root(root, "VIPER")
    image_dir, label_dir = root / IMAGE_DIR, root / LABEL_DIR
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise InputError(f"{root}: not a VIPER root; {_expected(root)}")
    records = []
    for seq_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
        seq = seq_dir.name
        name = re.compile(rf"^{re.escape(seq)}_(\d{{5}})\.png$")
        for label_name in sorted(os.listdir(seq_dir)):
            match = name.match(label_name)
            if not match or int(match[1]) % LABEL_EVERY != 0:
                continue
            stem = label_name[: -len(".png")]
            images = [image_dir / seq / (stem + ext) for ext in IMAGE_EXTENSIONS]
            image = next((path for path in images if path.is_file()), None)
            if image is None:
                continue
            label = seq_dir / label_name
            records.append(
                SourceRecord(f"viper_{stem}", str(image), str(label), relative(image, root), relative(label, root))
            )
    if not records:
        raise InputError(f"{root}: no labelled VIPER frames found; {_expected(root)}")
    return records


def remove_ego_vehicle(viper_ids: np.ndarray) -> np.ndarray:
    """Set the 8-connected car component holding the bottom-row centre pixel to unlabeled (a copy)."""
    viper_ids = np.asarray(viper_ids)
    out = viper_ids.copy()
    width = viper_ids.shape[1]
    if viper_ids[-1, width // 2] != CAR_ID:
        return out
    _, components = cv2.connectedComponents((viper_ids == CAR_ID).astype(np.uint8), connectivity=EGO_CONNECTIVITY)
    out[components == components[-1, width // 2]] = UNLABELED_ID
    return out


def read_label(path: str | os.PathLike, protocol: Protocol) -> np.ndarray:
    """(H, W) uint8 train ids of a VIPER cls PNG: palette index = VIPER id, ego vehicle removed, then the LUT."""
    require_protocol(protocol, "viper")
    return protocol.source_lut()[remove_ego_vehicle(read_palette_png(path))]
