"""FlowNet2 (Ilg et al. 2017) in plain PyTorch, loading NVIDIA's `FlowNet2_checkpoint.pth.tar` unchanged.

The forward pass is that of NVIDIA's flownet2-pytorch `models.FlowNet2` step by step (NVIDIA's flownet2-pytorch,
github.com/NVIDIA/flownet2-pytorch): FlowNetC, then two FlowNetS that each see frame 1 warped by the flow so far,
FlowNetSD for small displacements, and FlowNetFusion merging the two. Resample2d is `warp(..., padding="border")`,
ChannelNorm `channel_norm`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.atomic import file_sha256
from pipeline.errors import InputError
from pipeline.flow.correlation import channel_norm
from pipeline.flow.flownet2_file import check_flownet2_fit, load_flownet2_state_dict
from pipeline.flow.flownet_parts import FlowNetC, FlowNetFusion, FlowNetS, FlowNetSD
from pipeline.flow.interface import FlowEstimator, frames_batch
from pipeline.flow.warp import warp

__all__ = ["FlowNet2", "FlowNet2Estimator", "load_flownet2_state_dict", "size_for_flownet"]

# Input images are 0..255 RGB (`--rgb_max` of the reference); after the mean subtraction they are divided by it.
RGB_MAX = 255.0
# The sub-networks predict flow / 20 (the scale the Caffe models were trained with).
DIV_FLOW = 20.0
# The sub-networks predict at 1/4 of the input resolution.
SUBNET_STRIDE = 4
# Six stride-2 levels: H and W must be divisible by 2^6.
SIZE_MULTIPLE = 64


def _upsample_bilinear(flow: torch.Tensor) -> torch.Tensor:
    """x4 bilinear, half-pixel centres: nn.Upsample(mode="bilinear") since torch 0.4 (§4.4)."""
    return F.interpolate(flow, scale_factor=SUBNET_STRIDE, mode="bilinear", align_corners=False)


def _upsample_nearest(flow: torch.Tensor) -> torch.Tensor:
    """x4 nearest: out[i] = in[floor(i / 4)] (§4.4)."""
    return F.interpolate(flow, scale_factor=SUBNET_STRIDE, mode="nearest")


class FlowNet2(nn.Module):
    """FlowNet2: (B, 3, 2, H, W) RGB 0..255 frame pairs, H and W multiples of 64 -> flow (B, 2, H, W) in pixels."""

    def __init__(self):
        super().__init__()
        # Registration order = the checkpoint's key order (Appendix A); only these five modules hold weights.
        self.flownetc = FlowNetC()
        self.flownets_1 = FlowNetS(input_channels=12)
        self.flownets_2 = FlowNetS(input_channels=12)
        self.flownets_d = FlowNetSD()
        self.flownetfusion = FlowNetFusion()

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> FlowNet2:
        """The network with the weights of `path` (the official checkpoint), strictly loaded, in eval mode."""
        state_dict = load_flownet2_state_dict(path)
        with torch.device("meta"):  # no memory for, and no time on, random weights that are replaced at once
            model = cls()
        check_flownet2_fit(model, state_dict, path)
        model.load_state_dict(state_dict, strict=True, assign=True)
        return model.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, 2, H, W) = (batch, RGB, frame 0/1, H, W), 0..255 -> flow 0->1 (B, 2, H, W), pixels (x, y)."""
        if frames.dim() != 5 or frames.shape[1:3] != (3, 2):
            raise ValueError(f"FlowNet2 takes (B, 3, 2, H, W) frame pairs, got {tuple(frames.shape)}")
        b, _, _, h, w = frames.shape
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(f"FlowNet2 needs H and W divisible by {SIZE_MULTIPLE}, got {h}x{w} (H x W)")
        # Steps 1-3: subtract the per-sample, per-colour mean over both frames; scale; stack to 6 channels.
        rgb_mean = frames.reshape(b, 3, -1).mean(-1).view(b, 3, 1, 1, 1)
        x = (frames - rgb_mean) / RGB_MAX
        img0, img1 = x[:, :, 0], x[:, :, 1]
        x = torch.cat((img0, img1), 1)  # (B, 6, H, W)

        # Steps 4-7: FlowNetC; warp frame 1 back with its flow; the brightness error of that warp.
        flownetc_flow = _upsample_bilinear(self.flownetc(x) * DIV_FLOW)
        warped_img1 = warp(img1, flownetc_flow)
        error = channel_norm(img0 - warped_img1)
        concat1 = torch.cat((x, warped_img1, flownetc_flow / DIV_FLOW, error), 1)  # (B, 12, H, W)

        # Steps 8-10: FlowNetS 1 refines; warp and error again.
        flownets1_flow = _upsample_bilinear(self.flownets_1(concat1) * DIV_FLOW)
        warped_img1 = warp(img1, flownets1_flow)
        error = channel_norm(img0 - warped_img1)
        concat2 = torch.cat((x, warped_img1, flownets1_flow / DIV_FLOW, error), 1)  # (B, 12, H, W)

        # Steps 11-12: FlowNetS 2 (nearest upsampling), its magnitude and warp error.
        flownets2_flow = _upsample_nearest(self.flownets_2(concat2) * DIV_FLOW)
        norm_flownets2_flow = channel_norm(flownets2_flow)
        diff_flownets2_img1 = channel_norm(img0 - warp(img1, flownets2_flow))

        # Steps 13-14: FlowNetSD on the frames; its flow is *divided* by DIV_FLOW, as in the Caffe original (§8.7).
        flownetsd_flow = _upsample_nearest(self.flownets_d(x) / DIV_FLOW)
        norm_flownetsd_flow = channel_norm(flownetsd_flow)
        diff_flownetsd_img1 = channel_norm(img0 - warp(img1, flownetsd_flow))

        # Steps 15-16: fuse; the channel order matters (it is the order the fusion weights were trained on).
        concat3 = torch.cat(
            (
                img0,
                flownetsd_flow,
                flownets2_flow,
                norm_flownetsd_flow,
                norm_flownets2_flow,
                diff_flownetsd_img1,
                diff_flownets2_img1,
            ),
            1,
        )  # (B, 11, H, W)
        return self.flownetfusion(concat3)


def size_for_flownet(n: int) -> int:
    """The multiple of 64 nearest to n pixels (halves round up), at least 64."""
    return max(SIZE_MULTIPLE, (n + SIZE_MULTIPLE // 2) // SIZE_MULTIPLE * SIZE_MULTIPLE)


class FlowNet2Estimator(FlowEstimator):
    """FlowNet2 behind the flow-estimator interface (docs/DEVELOPING.md): RGB frame pairs in, flow in pixels out.

    Frames whose sides are not multiples of 64 are resized (bilinear) to the nearest multiples, and the flow is
    resized back and scaled per axis (x by W / W64, y by H / H64).
    """

    name = "flownet2"

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 4):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size: expected a positive integer, got {batch_size!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r}: CUDA is not available on this machine (use device='cpu')")
        self.model = FlowNet2.from_checkpoint(checkpoint).to(self.device).eval()
        self.checkpoint_sha256 = file_sha256(checkpoint)
        self.batch_size = batch_size
        # The constructor's keyword options (recorded in meta.json; `FlowNet2Estimator(ckpt, device, **options)`).
        self.options = {"batch_size": batch_size}

    @torch.no_grad()
    def estimate_torch(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """img0, img1 float RGB 0..255 (B, 3, H, W) -> flow 0->1 (B, 2, H, W) in pixels on img0's device, no grad."""
        if img0.dim() != 4 or img0.shape[1] != 3 or img0.shape != img1.shape:
            raise ValueError(f"expected two (B, 3, H, W) RGB images of one shape, got {img0.shape}, {img1.shape}")
        h, w = img0.shape[-2:]
        h64, w64 = size_for_flownet(h), size_for_flownet(w)
        frames = torch.stack((img0, img1), 2).to(self.device, torch.float32)  # (B, 3, 2, H, W)
        resized = (h64, w64) != (h, w)
        if resized:
            pairs = frames.flatten(1, 2)  # bilinear resize of both frames at once: (B, 6, H, W)
            pairs = F.interpolate(pairs, size=(h64, w64), mode="bilinear", align_corners=False)
            frames = pairs.view(-1, 3, 2, h64, w64)
        flow = torch.cat([self.model(chunk) for chunk in frames.split(self.batch_size)])
        if resized:
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            # A displacement of u pixels at width W64 is u * W / W64 pixels at width W (likewise v with H).
            flow = flow * torch.tensor([w / w64, h / h64], device=flow.device).view(1, 2, 1, 1)
        return flow.to(img0.device)

    def flows(self, frames0: np.ndarray, frames1: np.ndarray) -> np.ndarray:
        """uint8 RGB (B, H, W, 3) or (H, W, 3) pairs -> float32 flow 0->1 (B, 2, H, W) or (2, H, W), pixels."""
        (batch0, single), (batch1, _) = frames_batch(frames0, "frames0"), frames_batch(frames1, "frames1")
        if batch0.shape != batch1.shape:
            raise InputError(f"frames0 and frames1 must have one shape, got {batch0.shape} and {batch1.shape}")
        img0 = torch.from_numpy(np.ascontiguousarray(batch0)).permute(0, 3, 1, 2).float()
        img1 = torch.from_numpy(np.ascontiguousarray(batch1)).permute(0, 3, 1, 2).float()
        flow = self.estimate_torch(img0, img1).numpy()
        return flow[0] if single else flow
