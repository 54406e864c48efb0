"""Tiny dataset trees in the Cityscapes layout for the prep tests: textured frames that slide, random gtFine labels."""

from pathlib import Path

import cv2
import numpy as np

MAX_SHIFT_PX = 3  # per-frame slide of the texture, so the flows are not zero
LABEL_IDS = np.array([0, 7, 8, 11, 13, 17, 21, 24, 25, 26, 27, 33], np.uint8)  # a mix of mapped and ignored ids


def frame_path(root, split, city, seq, frame) -> Path:
    """Where Cityscapes keeps a sequence frame."""
    return Path(root) / "leftImg8bit_sequence" / split / city / f"{city}_{seq}_{frame:06d}_leftImg8bit.png"


def label_path(root, split, city, seq, frame) -> Path:
    """Where Cityscapes keeps a gtFine labelIds file."""
    return Path(root) / "gtFine" / split / city / f"{city}_{seq}_{frame:06d}_gtFine_labelIds.png"


def write_cityscapes(root, split, snippets, size_hw, seed=0, label_hw=None) -> None:
    """snippets: (city, seq, first frame, frame count, annotated frame or None); frames (H, W) = size_hw."""
    rng = np.random.default_rng(seed)
    height, width = size_hw
    for city, seq, first, count, annotated in snippets:
        margin = MAX_SHIFT_PX * count
        noise = rng.uniform(0, 255, size=((height + margin) // 4 + 2, (width + margin) // 4 + 2, 3))
        texture = np.clip(
            cv2.resize(noise.astype(np.float32), (width + margin, height + margin), interpolation=cv2.INTER_CUBIC),
            0,
            255,
        ).astype(np.uint8)
        for i in range(count):
            dy, dx = i, MAX_SHIFT_PX * i
            path = frame_path(root, split, city, seq, first + i)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.ascontiguousarray(texture[dy : dy + height, dx : dx + width, ::-1]))
        if annotated is not None:
            lh, lw = label_hw or size_hw
            path = label_path(root, split, city, seq, annotated)
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.choice(LABEL_IDS, size=(lh, lw)))
