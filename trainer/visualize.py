"""Predictions people can look at: colourised labels, overlays, figure grids with titles, mp4 clips."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.sources import IGNORE_ID, Protocol, colorize, resize_label, resize_rgb

DEFAULT_ALPHA = 0.5  # weight of the class colour over the frame in an overlay
GRID_PAD = 4  # white pixels between tiles of a figure grid
TITLE_HEIGHT = 22  # pixels of the white strip that carries a column title
TITLE_FONT = cv2.FONT_HERSHEY_SIMPLEX
TITLE_SCALE = 0.5
WHITE = 255
MP4_FOURCC = "mp4v"  # MPEG-4 part 2: written by every OpenCV build, read by common players
MP4_BLOCK = 2  # mp4v frames need even sides; odd frames are padded by one black row/column


def overlay(rgb: np.ndarray, label: np.ndarray, protocol: Protocol, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8: the frame blended with the label colours (alpha on the colour); ignored pixels unchanged.

    A label of another size is resized to the frame's size (nearest).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    h, w = rgb.shape[:2]
    label = resize_label(np.asarray(label, dtype=np.uint8), (w, h))
    color = colorize(label, protocol).astype(np.float32)
    blend = (1.0 - alpha) * rgb.astype(np.float32) + alpha * color
    known = (label != IGNORE_ID) & (label < protocol.num_classes)
    out = np.where(known[..., None], blend, rgb.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images joined left to right, each resized to the first one's height and width."""
    h, w = images[0].shape[:2]
    return np.concatenate([resize_rgb(_as_rgb(img), (w, h)) for img in images], axis=1)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def _title_strip(title: str, width: int) -> np.ndarray:
    strip = np.full((TITLE_HEIGHT, width, 3), WHITE, dtype=np.uint8)
    (text_w, text_h), _ = cv2.getTextSize(title, TITLE_FONT, TITLE_SCALE, 1)
    origin = (max((width - text_w) // 2, 0), (TITLE_HEIGHT + text_h) // 2)
    cv2.putText(strip, title, origin, TITLE_FONT, TITLE_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def figure_grid(rows, titles=None, tile_hw=None, pad: int = GRID_PAD) -> np.ndarray:
    """(H, W, 3) uint8 figure: `rows` of equally many images, `titles` one per column above the first row.

    Every tile is resized to `tile_hw` (default: the first image's size); grey images are shown as RGB.
    """
    rows = [list(row) for row in rows]
    if not rows or not rows[0] or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError("figure_grid needs a non-empty list of rows with equally many images")
    cols = len(rows[0])
    if titles is not None and len(titles) != cols:
        raise ValueError(f"figure_grid got {len(titles)} titles for {cols} columns")
    tile_h, tile_w = tile_hw if tile_hw is not None else rows[0][0].shape[:2]
    height = len(rows) * tile_h + (len(rows) + 1) * pad + (TITLE_HEIGHT if titles else 0)
    width = cols * tile_w + (cols + 1) * pad
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)
    top = pad
    if titles:
        for c, title in enumerate(titles):
            left = pad + c * (tile_w + pad)
            canvas[top : top + TITLE_HEIGHT, left : left + tile_w] = _title_strip(str(title), tile_w)
        top += TITLE_HEIGHT
    for r, row in enumerate(rows):
        y = top + r * (tile_h + pad)
        for c, image in enumerate(row):
            x = pad + c * (tile_w + pad)
            canvas[y : y + tile_h, x : x + tile_w] = resize_rgb(_as_rgb(image), (tile_w, tile_h))
    return canvas


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB (or (H, W) grey) image as PNG; an unwritable path raises InputError."""
    image = np.asarray(rgb, dtype=np.uint8)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), bgr):
        raise InputError(f"{path}: cannot write the PNG (is the folder writable?)")


def write_mp4(path: str | os.PathLike, frames, fps: float) -> int:
    """Write (H, W, 3) uint8 RGB frames as an mp4 ('mp4v'); returns the number of frames written."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("write_mp4 needs at least one frame")
    h, w = first.shape[:2]
    out_h, out_w = h + h % MP4_BLOCK, w + w % MP4_BLOCK
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*MP4_FOURCC), float(fps), (out_w, out_h))
    if not writer.isOpened():
        raise InputError(f"{path}: cannot open an mp4 ({MP4_FOURCC}) writer there")
    count = 0
    try:
        for frame in itertools.chain([first], frames):
            if frame.shape[:2] != (h, w):
                raise ValueError(f"all frames must be {w}x{h}, got {frame.shape[1]}x{frame.shape[0]}")
            padded = np.zeros((out_h, out_w, 3), dtype=np.uint8)
            padded[:h, :w] = _as_rgb(frame)
            writer.write(cv2.cvtColor(padded, cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        writer.release()
    return count


def save_prediction_pngs(out_dir: str | os.PathLike, key: str, rgb: np.ndarray, pred: np.ndarray,
                         label: np.ndarray | None, protocol: Protocol) -> list[Path]:  # fmt: skip
    """Write `<key>_pred.png` (train ids), `_pred_color.png`, `_overlay.png` (and `_gt_color.png`) at the label size."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = pred.shape
    pictures = {
        "_pred.png": pred,  # grey train ids, readable back by `i2vda-eval --pred-dir`
        "_pred_color.png": colorize(pred, protocol),
        "_overlay.png": overlay(resize_rgb(rgb, (w, h)), pred, protocol),
    }
    if label is not None:
        pictures["_gt_color.png"] = colorize(label, protocol)
    paths = []
    for suffix, image in pictures.items():
        paths.append(out_dir / f"{key}{suffix}")
        write_png(paths[-1], image)
    return paths


def snippet_frames(clip_thw3: np.ndarray, preds_thw: np.ndarray, protocol: Protocol) -> list[np.ndarray]:
    """Video frames: each clip frame (left) beside its colourised prediction (right)."""
    return [side_by_side(frame, colorize(pred, protocol)) for frame, pred in zip(clip_thw3, preds_thw)]
