"""FlowNetC's correlation layer and FlowNet2's channel norm, in plain PyTorch (no compiled extension).

Semantics of NVIDIA's CUDA kernels (NVIDIA's flownet2-pytorch, github.com/NVIDIA/flownet2-pytorch): for a
displacement (dy, dx) on a grid of step `stride` up to `max_displacement` pixels,

    corr[b, (j, i), y, x] = 1/C * sum_c f0[b, c, y, x] * f1[b, c, y + dy, x + dx]
    dy = stride * (j - r),  dx = stride * (i - r),  j, i in 0 .. 2r

with f1 read as zero outside the map, r = max_displacement // stride, and the (2r+1)^2 output channels ordered
dy-major (channel j*(2r+1) + i): channel 0 is (-20, -20), channel 20 is (-20, +20), channel 220 is (0, 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# FlowNetC's configuration: displacements up to 20 px at 1/8 resolution, every 2nd one, so 21 x 21 = 441 channels.
MAX_DISPLACEMENT = 20
DISPLACEMENT_STRIDE = 2


def correlation(
    f0: torch.Tensor, f1: torch.Tensor, max_displacement: int = MAX_DISPLACEMENT, stride: int = DISPLACEMENT_STRIDE
) -> torch.Tensor:
    """Correlation volume of f0, f1 (B, C, H, W) -> (B, (2r+1)^2, H, W), channel mean of f0 * shifted f1 (§4.1).

    For each vertical displacement dy, one batched matrix product over the rows gives the dot product of every
    pixel x of an f0 row with every pixel x' of the dy-shifted, zero-padded f1 row; the 2r+1 horizontal
    displacements are the band x' = x + stride*i of that (W, W + 2*max_displacement) product. Memory stays at
    one such product per row, not the (2r+1)^2 shifted copies of f1 an unfold would make.
    """
    if f0.shape != f1.shape or f0.dim() != 4:
        shapes = f"{tuple(f0.shape)}, {tuple(f1.shape)}"
        raise ValueError(f"correlation needs two (B, C, H, W) maps of one shape, got {shapes}")
    radius = max_displacement // stride
    size = 2 * radius + 1
    b, c, h, w = f0.shape
    pad = radius * stride
    # Accumulate in float32 as the CUDA kernel does, whatever the input dtype (autocast).
    rows0 = f0.float().permute(0, 2, 3, 1)  # (B, H, W, C)
    f1_padded = F.pad(f1.float(), (pad, pad, pad, pad))  # zero outside the map
    # Column of f1_padded that pairs output column x with horizontal displacement index i: x + stride*i.
    band = torch.arange(w, device=f0.device).view(w, 1) + stride * torch.arange(size, device=f0.device).view(1, size)
    band = band.view(1, 1, w, size).expand(b, h, w, size)
    volume = torch.empty(b, size, size, h, w, device=f0.device, dtype=torch.float32)  # (B, dy, dx, H, W)
    with torch.autocast(f0.device.type, enabled=False):  # keep the products in float32 under autocast
        for j in range(size):
            rows1 = f1_padded[:, :, stride * j : stride * j + h].permute(0, 2, 1, 3)  # (B, H, C, W + 2*pad)
            all_pairs = torch.matmul(rows0, rows1)  # (B, H, W, W + 2*pad)
            volume[:, j] = torch.gather(all_pairs, 3, band).permute(0, 3, 1, 2)  # (B, dx, H, W)
    return volume.view(b, size * size, h, w).div_(c).to(f0.dtype)


class Correlation(nn.Module):
    """FlowNetC's correlation layer (no parameters): see `correlation`."""

    def __init__(self, max_displacement: int = MAX_DISPLACEMENT, stride: int = DISPLACEMENT_STRIDE):
        super().__init__()
        self.max_displacement = max_displacement
        self.stride = stride

    def forward(self, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return correlation(f0, f1, self.max_displacement, self.stride)


def channel_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over channels: (B, C, H, W) -> (B, 1, H, W), FlowNet2's ChannelNorm (§4.3, no epsilon)."""
    return x.pow(2).sum(1, keepdim=True).sqrt()


class ChannelNorm(nn.Module):
    """FlowNet2's ChannelNorm layer (no parameters): see `channel_norm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_norm(x)
