"""The flow estimator interface shared by the Ray job (offline flows) and the trainer (online F(I1, It)).

An estimator maps two uint8 RGB frames (or batches) to the flow from the first to the second, in pixels on the
first frame's grid, channel 0 = x (right), channel 1 = y (down). `load_estimator` builds one by name.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from pipeline.errors import InputError

ESTIMATOR_NAMES = ("dis", "flownet2")


@runtime_checkable
class FlowEstimator(Protocol):
    """Two frames in, F_0->1 out; `name`, `checkpoint_sha256` and `options` are recorded in each sample's meta."""

    name: str  # "dis" or "flownet2"
    checkpoint_sha256: str | None  # of the weights file; None for estimators without weights (DIS)
    options: dict  # JSON-able settings that change the flow (e.g. {"preset": "medium"})

    def __call__(self, frames0: np.ndarray, frames1: np.ndarray) -> np.ndarray:
        """uint8 RGB (B, H, W, 3) or (H, W, 3) pairs -> float32 flow (B, H, W, 2) or (H, W, 2), pixels, (x, y)."""
        ...

    def estimate_torch(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """Float RGB 0..255 tensors (B, 3, H, W) on any device -> (B, 2, H, W) float32 flow on that device."""
        ...


def load_estimator(
    name: str, checkpoint: str | os.PathLike | None = None, device: str = "cpu", **options
) -> FlowEstimator:
    """Build the estimator `name` ("dis": options preset; "flownet2": needs `checkpoint`) on `device`."""
    if name == "dis":
        if checkpoint is not None:
            raise InputError(f"--flow dis takes no checkpoint, got --flow-ckpt {checkpoint}")
        unknown = sorted(set(options) - {"preset"})
        if unknown:
            raise InputError(f"--flow dis: unknown option(s) {', '.join(unknown)}; it takes only preset")
        from pipeline.flow.dis import DISEstimator  # OpenCV only; DIS runs on the CPU whatever `device` says

        return DISEstimator(**options)
    if name == "flownet2":
        if checkpoint is None:
            raise InputError("--flow flownet2 needs --flow-ckpt FlowNet2_checkpoint.pth.tar")
        from pipeline.flow.flownet2 import FlowNet2Estimator  # imported late: the network is large

        return FlowNet2Estimator(checkpoint, device=device, **options)
    raise InputError(f"--flow: unknown estimator {name!r}, expected one of {', '.join(ESTIMATOR_NAMES)}")
