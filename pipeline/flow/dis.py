"""OpenCV's DIS optical flow (Kroeger et al., ECCV 2016) behind the FlowEstimator interface; needs no weights.

DIS matches grayscale patches by inverse-search gradient descent over a coarse-to-fine pyramid, then refines the
dense flow variationally. OpenCV stops the pyramid at `finest_scale` (1 = half resolution for MEDIUM) and upsamples
from there. Presets "ultrafast", "fast" and "medium" are OpenCV's; "fine" is MEDIUM refined down to full resolution
(finest scale 0), the one MEDIUM setting that paid in `bench/bench_dis.py` (numbers in `docs/FLOW_CODEC.md`): on the
scikit-image motorcycle stereo pair at 1024x512 it lowers MEDIUM's end-point error from 3.42 to 3.01 px at 4x the
CPU time (204 vs 50 ms on one core); more descent or refinement iterations and larger patches gained nothing.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.flow.interface import FlowEstimator, frames_batch

# preset name -> (OpenCV preset, finest pyramid level or None to keep the preset's).
DIS_PRESETS = {
    "ultrafast": (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, None),
    "fast": (cv2.DISOPTICAL_FLOW_PRESET_FAST, None),
    "medium": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, None),
    "fine": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, 0),
}
DEFAULT_PRESET = "medium"  # OpenCV's middle preset; "fine" costs 4x its time for 12% less end-point error


class DISEstimator(FlowEstimator):
    """Dense flow F_0->1 on frame 0's grid from OpenCV DIS on the grayscale frames; batches are a loop."""

    name = "dis"
    checkpoint_sha256 = None

    def __init__(self, preset: str = DEFAULT_PRESET):
        if preset not in DIS_PRESETS:
            raise InputError(f"DIS preset {preset!r}: expected one of {', '.join(DIS_PRESETS)}")
        opencv_preset, finest_scale = DIS_PRESETS[preset]
        self._dis = cv2.DISOpticalFlow_create(opencv_preset)
        if finest_scale is not None:
            self._dis.setFinestScale(finest_scale)
        self.options = {"preset": preset}

    def __reduce__(self):
        """Pickle by preset (OpenCV objects do not pickle), so the estimator can travel to Ray workers."""
        return (DISEstimator, (self.options["preset"],))

    def flows(self, frames0: np.ndarray, frames1: np.ndarray) -> np.ndarray:
        """uint8 RGB (B, H, W, 3) or (H, W, 3) pairs -> float32 flow (B, 2, H, W) or (2, H, W), pixels, (x, y)."""
        batch0, single = frames_batch(frames0, "frames0")
        batch1, _ = frames_batch(frames1, "frames1")
        if batch0.shape != batch1.shape:
            raise InputError(f"DIS needs frames of one size: frames0 {batch0.shape} vs frames1 {batch1.shape}")
        b, h, w, _ = batch0.shape
        flows = np.empty((b, 2, h, w), dtype=np.float32)
        for i in range(b):
            gray0 = cv2.cvtColor(batch0[i], cv2.COLOR_RGB2GRAY)
            gray1 = cv2.cvtColor(batch1[i], cv2.COLOR_RGB2GRAY)
            flows[i] = self._dis.calc(gray0, gray1, None).transpose(2, 0, 1)  # OpenCV gives (H, W, 2)
        return flows[0] if single else flows

    def estimate_torch(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """Float RGB 0..255 tensors (B, 3, H, W) on any device -> (B, 2, H, W) float32 flow on that device."""
        if img0.dim() != 4 or img0.shape[1] != 3 or img0.shape != img1.shape:
            raise ValueError(
                f"img0, img1 must be (B, 3, H, W) of one shape, got {tuple(img0.shape)}, {tuple(img1.shape)}"
            )

        def to_uint8(img: torch.Tensor) -> np.ndarray:  # (B, 3, H, W) float -> (B, H, W, 3) uint8 on the CPU
            return img.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

        return torch.from_numpy(self.flows(to_uint8(img0), to_uint8(img1))).to(img0.device)
