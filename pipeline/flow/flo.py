"""Middlebury `.flo` files: magic float 202021.25, int32 width, int32 height, then float32 (u, v) row-major, the two
components of a pixel side by side. In memory a flow is (2, H, W), as everywhere in i2vda: the axes move here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.atomic import write_bytes_atomic
from pipeline.errors import InputError

FLO_MAGIC = np.float32(202021.25)  # the bytes spell "PIEH"


def components_first(flow: np.ndarray) -> np.ndarray:
    """A flow as (2, H, W): given so, or with the components last, (H, W, 2), as the public `est(frames0, frames1)`
    returns it (then H > 2 tells the layouts apart); anything else is a ValueError."""
    flow = np.asarray(flow)
    if flow.ndim == 3 and flow.shape[0] == 2:
        return flow
    if flow.ndim == 3 and flow.shape[-1] == 2:
        return np.moveaxis(flow, -1, 0)
    raise ValueError(f"flow must be (2, H, W) or (H, W, 2), got {flow.shape}")


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write a flow in pixels (x, y), (2, H, W) or (H, W, 2), to `path`, atomically (temporary name, then rename)."""
    flow = components_first(np.asarray(flow, dtype=np.float32))
    h, w = flow.shape[1:]
    interleaved = np.moveaxis(flow, 0, -1).astype("<f4")  # (H, W, 2): u and v of each pixel side by side
    data = FLO_MAGIC.tobytes() + np.array([w, h], dtype="<i4").tobytes() + interleaved.tobytes()
    write_bytes_atomic(path, data, durable=False)


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a `.flo` file into a (2, H, W) float32 array; a bad file raises InputError naming it."""
    data = Path(path).read_bytes()
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != FLO_MAGIC:
        raise InputError(f"{path}: not a .flo file (bad magic number)")
    w, h = (int(v) for v in np.frombuffer(data[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(data) != 12 + 8 * w * h:
        raise InputError(f"{path}: truncated or corrupt .flo file ({w}x{h} header, {len(data)} bytes)")
    return np.ascontiguousarray(np.frombuffer(data[12:], "<f4").reshape(h, w, 2).transpose(2, 0, 1), dtype=np.float32)
