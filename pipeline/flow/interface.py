"""The interface every flow estimator implements, shared by the Ray job (offline flows) and the trainer (online
F(I1, It)), and the check of the frames it is given.

An estimator maps two uint8 RGB frames (or batches) to the flow from the first to the second, in pixels on the
first frame's grid, channel 0 = x (right), channel 1 = y (down). A flow in memory is (..., 2, H, W) everywhere in
i2vda; the one exception is `est(frames0, frames1)`, the public numpy call, which returns (..., H, W, 2) as the
project's design fixes it (the same flows, the axes moved once).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from pipeline.errors import InputError


@runtime_checkable
class FlowEstimator(Protocol):
    """Two frames in, F_0->1 out; `name`, `checkpoint_sha256` and `options` are recorded in each sample's meta.
    An estimator subclasses this class: it writes `flows` and `estimate_torch`, and inherits `__call__`."""

    name: str  # its registry name, e.g. "dis" or "flownet2"
    checkpoint_sha256: str | None  # of the weights file; None for estimators without weights (DIS)
    options: dict  # JSON-able settings (e.g. {"preset": "medium"})

    def flows(self, frames0: np.ndarray, frames1: np.ndarray) -> np.ndarray:
        """uint8 RGB (B, H, W, 3) or (H, W, 3) pairs -> float32 flow (B, 2, H, W) or (2, H, W), pixels, (x, y)."""
        ...

    def estimate_torch(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """Float RGB 0..255 tensors (B, 3, H, W) on any device -> (B, 2, H, W) float32 flow on that device."""
        ...

    def __call__(self, frames0: np.ndarray, frames1: np.ndarray) -> np.ndarray:
        """The public numpy call: `flows` with the components last, (B, H, W, 2) or (H, W, 2)."""
        return np.ascontiguousarray(np.moveaxis(self.flows(frames0, frames1), -3, -1))


def frames_batch(frames: object, what: str) -> tuple[np.ndarray, bool]:
    """uint8 RGB (H, W, 3) or (B, H, W, 3) -> (B, H, W, 3) and whether the input was a single frame; anything else
    is an InputError naming `what`."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise InputError(
            f"{what}: expected a uint8 RGB array (B, H, W, 3) or (H, W, 3), got {frames.dtype} of shape {frames.shape}"
        )
    if frames.shape[-1] != 3:
        raise InputError(f"{what}: expected 3 colour channels last (RGB), got shape {frames.shape}")
    return (frames[None], True) if frames.ndim == 3 else (frames, False)
