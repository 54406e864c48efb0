"""Backward warping W(X, F)(p) = X(p + F(p)) and the forward-backward occlusion check.

Flows are in pixels, defined on the grid of the *output*: channel 0 is x (right), channel 1 is y (down).
The default `padding="border"` reproduces FlowNet2's Resample2d (bilinear, neighbours clamped to the
border); `padding="zeros"` reads zero outside the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) pixel flow -> (B, H, W, 2) normalised grid for grid_sample(align_corners=True)."""
    b, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    # align_corners=True maps -1 and +1 to the centres of the first and last pixels.
    gx = 2.0 * x / max(w - 1, 1) - 1.0
    gy = 2.0 * y / max(h - 1, 1) - 1.0
    return torch.stack((gx, gy), dim=-1)


def warp(x: torch.Tensor, flow: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """W(x, flow): x (B, C, Hx, Wx) sampled at p + flow(p) for every p of flow's (B, 2, H, W) grid.

    x and flow normally share H, W. `padding` is "border" (Resample2d) or "zeros".
    """
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W), got {tuple(flow.shape)}")
    if x.dim() != 4 or x.shape[0] != flow.shape[0]:
        raise ValueError(f"x must be (B, C, H, W) with the flow's batch, got {tuple(x.shape)}")
    grid = _sampling_grid(flow.to(x.dtype) if x.is_floating_point() else flow)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def forward_backward_consistent(flow_ab: torch.Tensor, flow_ba: torch.Tensor, eta: float) -> torch.Tensor:
    """Non-occlusion mask on a's grid: ||W(F_b->a, F_a->b) + F_a->b|| < eta, as a (B, H, W) bool tensor.

    A pixel p of a goes to p + F_ab(p) in b; coming back with F_ba must land on p again, so the two
    flows cancel: F_ab(p) + F_ba(p + F_ab(p)) ~ 0. Where they do not, p is occluded (or the flow is wrong).
    """
    round_trip = warp(flow_ba, flow_ab) + flow_ab
    return torch.linalg.vector_norm(round_trip, dim=1) < eta
