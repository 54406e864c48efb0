"""Middlebury `.flo` files: magic float 202021.25, int32 width, int32 height, then float32 (u, v) row-major."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.atomic import write_bytes_atomic
from pipeline.errors import InputError

FLO_MAGIC = np.float32(202021.25)  # the bytes spell "PIEH"


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write an (H, W, 2) flow in pixels (x, y) to `path`, atomically (temporary name, then rename)."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {flow.shape}")
    h, w = flow.shape[:2]
    data = FLO_MAGIC.tobytes() + np.array([w, h], dtype="<i4").tobytes() + flow.astype("<f4").tobytes()
    write_bytes_atomic(path, data, durable=False)


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a `.flo` file into an (H, W, 2) float32 array; a bad file raises InputError naming it."""
    data = Path(path).read_bytes()
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != FLO_MAGIC:
        raise InputError(f"{path}: not a .flo file (bad magic number)")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(data) != 12 + 8 * w * h:
        raise InputError(f"{path}: truncated or corrupt .flo file ({w}x{h} header, {len(data)} bytes)")
    return np.frombuffer(data[12:], "<f4").reshape(h, w, 2).copy()
