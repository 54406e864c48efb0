"""Test-only flow helpers: a warp with an inside mask (checks ground-truth flows in test_demo_world without a
production user), and hand-written (u, v) pairs per pixel turned into the (2, H, W) layout of every flow."""

import numpy as np
import torch

from pipeline.flow import warp


def warp_with_mask(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padding warp plus a (B, 1, H, W) float mask, 1 where p + flow(p) lies inside the image."""
    _, _, h, w = x.shape
    out = warp(x, flow, padding="zeros")
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    px = xs + flow[:, 0]
    py = ys + flow[:, 1]
    inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
    return out, inside.unsqueeze(1).to(x.dtype)


def components_first(flow_hw2) -> np.ndarray:
    """A flow written pixel by pixel, (..., H, W, 2), as (..., 2, H, W)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(flow_hw2), -1, -3))
