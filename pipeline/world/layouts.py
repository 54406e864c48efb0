"""The real datasets' folder layouts and label encodings, as the demo world writes them.

the published archives' layouts: Cityscapes `leftImg8bit_sequence` + `gtFine` labelIds; VIPER `train/img` JPEG +
`train/cls` indexed PNG (palette index = VIPER id); SYNTHIA-SEQS `RGB/Stereo_Left/Omni_F` + 16-bit
`GT/LABELS/Stereo_Left/Omni_F` (class id in R, instance id in G).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import write_bytes_atomic
from pipeline.flow.flo import write_flo
from pipeline.sources.images import write_palette_png
from pipeline.sources.protocols import VIPER15
from pipeline.world.classes import to_cityscapes, to_synthia, to_viper

CITYSCAPES_DIR = "cityscapes"
VIPER_DIR = "viper"
SYNTHIA_PARENT_DIR = "synthia"
SYNTHIA_DIR = f"{SYNTHIA_PARENT_DIR}/SYNTHIA-SEQS-04-DAWN"  # the sequence folder is the SYNTHIA root
JPEG_QUALITY = 95  # VIPER's frames are JPEG; high quality keeps the labels' edges in place
VIPER_NUM_IDS = 32  # classes.csv ids 0..31
SYNTHIA_CLASS_CHANNEL, SYNTHIA_INSTANCE_CHANNEL = 2, 1  # R and G in OpenCV's BGR order


def _viper_palette() -> np.ndarray:
    """(32, 3) RGB palette of the cls PNGs: protocol colours for the trained ids, greys for the rest."""
    palette = np.array([(16 * (i % 8) + 40,) * 3 for i in range(VIPER_NUM_IDS)])
    for viper_id, train_id in VIPER15.source_to_train:
        palette[viper_id] = VIPER15.palette[train_id]
    return palette


VIPER_PALETTE = _viper_palette()


def cityscapes_image(root: Path, split: str, city: str, seq: int, frame: int) -> Path:
    """`leftImg8bit_sequence/<split>/<city>/<city>_<seq6>_<frame6>_leftImg8bit.png`."""
    name = f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png"
    return root / CITYSCAPES_DIR / "leftImg8bit_sequence" / split / city / name


def cityscapes_label(root: Path, split: str, city: str, seq: int, frame: int) -> Path:
    """`gtFine/<split>/<city>/<city>_<seq6>_<frame6>_gtFine_labelIds.png`."""
    return root / CITYSCAPES_DIR / "gtFine" / split / city / f"{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png"


def cityscapes_flow(root: Path, split: str, city: str, seq: int, frame_a: int, frame_b: int) -> Path:
    """`flow_gt/<split>/<city>/<city>_<seq6>_<a6>_<b6>.flo`: flow from frame a to frame b on frame a's grid."""
    return root / CITYSCAPES_DIR / "flow_gt" / split / city / f"{city}_{seq:06d}_{frame_a:06d}_{frame_b:06d}.flo"


def viper_image(root: Path, seq: int, frame: int) -> Path:
    """`train/img/<seq3>/<seq3>_<frame5>.jpg`."""
    return root / VIPER_DIR / "train" / "img" / f"{seq:03d}" / f"{seq:03d}_{frame:05d}.jpg"


def viper_label(root: Path, seq: int, frame: int) -> Path:
    """`train/cls/<seq3>/<seq3>_<frame5>.png`."""
    return root / VIPER_DIR / "train" / "cls" / f"{seq:03d}" / f"{seq:03d}_{frame:05d}.png"


def synthia_image(root: Path, frame: int) -> Path:
    """`RGB/Stereo_Left/Omni_F/<frame6>.png`."""
    return root / SYNTHIA_DIR / "RGB" / "Stereo_Left" / "Omni_F" / f"{frame:06d}.png"


def synthia_label(root: Path, frame: int) -> Path:
    """`GT/LABELS/Stereo_Left/Omni_F/<frame6>.png`."""
    return root / SYNTHIA_DIR / "GT" / "LABELS" / "Stereo_Left" / "Omni_F" / f"{frame:06d}.png"


def _write_encoded(path: Path, extension: str, image: np.ndarray, params=()) -> None:
    """Encode with OpenCV and write atomically (temporary name, then rename)."""
    ok, data = cv2.imencode(extension, image, list(params))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data.tobytes(), durable=False)  # the world is rewritten whole on a rerun


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB as a JPEG of quality JPEG_QUALITY."""
    _write_encoded(path, ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))


def write_cityscapes_label(path: Path, world_cls: np.ndarray) -> None:
    """Single-channel uint8 PNG of Cityscapes labelIds."""
    _write_encoded(path, ".png", to_cityscapes(world_cls))


def write_viper_label(path: Path, world_cls: np.ndarray) -> None:
    """8-bit indexed PNG whose palette index is the VIPER class id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_palette_png(path, to_viper(world_cls), VIPER_PALETTE)


def write_synthia_label(path: Path, world_cls: np.ndarray, instance: np.ndarray) -> None:
    """16-bit 3-channel PNG: SYNTHIA class id in R, instance id in G, B = 0."""
    label = np.zeros(world_cls.shape + (3,), dtype=np.uint16)
    label[..., SYNTHIA_CLASS_CHANNEL] = to_synthia(world_cls)
    label[..., SYNTHIA_INSTANCE_CHANNEL] = np.minimum(instance, np.iinfo(np.uint16).max)
    _write_encoded(path, ".png", label)


def write_flow(path: Path, flow: np.ndarray) -> None:
    """(2, H, W) float32 flow as a Middlebury `.flo` file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_flo(path, flow)
