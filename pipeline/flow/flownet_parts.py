"""FlowNet2's sub-networks: FlowNetC, FlowNetS, FlowNetSD, FlowNetFusion, and the layers they are built of.

Layer names, shapes and bias flags are those of NVIDIA's flownet2-pytorch with batchNorm=False, so the state_dict
keys are the official checkpoint's (NVIDIA's flownet2-pytorch, github.com/NVIDIA/flownet2-pytorch); modules are
registered in the checkpoint's key order. Each sub-network returns only its finest flow, flow2 (B, 2, H/4, W/4), in
units of 1/DIV_FLOW pixels: the coarser flows exist for multi-scale training losses, and FlowNet2 uses flow2 alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.flow.correlation import Correlation

# Every activation in FlowNet is a leaky ReLU with this negative slope.
LEAKY_SLOPE = 0.1
# Channels of the encoder features (skips) and of the deconvolutions at decoder levels 5, 4, 3, 2 (1/32 .. 1/4).
SKIP_CHANNELS = (512, 512, 256, 128)
DECONV_CHANNELS = (512, 256, 128, 64)
DECODER_LEVELS = (5, 4, 3, 2)
# FlowNetC's redirection of frame 0's conv3 features, concatenated with the correlation volume (32 + 441 = 473).
REDIR_CHANNELS = 32
CORRELATION_CHANNELS = 441


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution + LeakyReLU(0.1); a Sequential so the keys read `<name>.0.weight` as in the checkpoint."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=True),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def i_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution without activation (FlowNetSD's and FlowNetFusion's `inter_conv`), keys `<name>.0.*`."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, padding=1, bias=True))


def deconv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Transposed convolution doubling H and W, + LeakyReLU(0.1); keys `<name>.0.*`."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, 2, padding=1, bias=True),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


def predict_flow(in_channels: int) -> nn.Conv2d:
    """3x3 convolution to a 2-channel flow (x, y), no activation; keys `<name>.weight`, `<name>.bias`."""
    return nn.Conv2d(in_channels, 2, 3, 1, padding=1, bias=True)


def upsample_flow(bias: bool) -> nn.ConvTranspose2d:
    """Learned x2 flow upsampling; FlowNetS has no bias here, the other sub-networks have one."""
    return nn.ConvTranspose2d(2, 2, 4, 2, padding=1, bias=bias)


class _CoarseToFine(nn.Module):
    """Common part of FlowNetC, -S and -SD: encoder levels 4-6 and the decoder from 1/64 (flow6) to 1/4 (flow2)."""

    def _add_deep_encoder(self) -> None:
        """Register conv4 (1/16) .. conv6_1 (1/64), identical in the three networks."""
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)

    def _add_decoder(self, upsample_bias: bool, inter_convs: bool) -> None:
        """Register deconv5..2, [inter_conv5..2], predict_flow6..2, upsampled_flow6_to_5..3_to_2, in key order."""
        self.inter_convs = inter_convs
        concat_channels = []  # channels of concat5 .. concat2: skip + deconv + 2 (upsampled flow)
        in_channels = 1024
        for level, skip, out in zip(DECODER_LEVELS, SKIP_CHANNELS, DECONV_CHANNELS):
            self.add_module(f"deconv{level}", deconv(in_channels, out))
            in_channels = skip + out + 2
            concat_channels.append(in_channels)
        predict_in = concat_channels
        if inter_convs:  # FlowNetSD predicts from a 3x3 convolution of the concatenation, not from it directly
            for level, channels, out in zip(DECODER_LEVELS, concat_channels, DECONV_CHANNELS):
                self.add_module(f"inter_conv{level}", i_conv(channels, out))
            predict_in = list(DECONV_CHANNELS)
        self.predict_flow6 = predict_flow(1024)
        for level, channels in zip(DECODER_LEVELS, predict_in):
            self.add_module(f"predict_flow{level}", predict_flow(channels))
        for level in DECODER_LEVELS:
            self.add_module(f"upsampled_flow{level + 1}_to_{level}", upsample_flow(upsample_bias))

    def _encode_deep(self, feat3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Level-3 features (1/8) -> features at 1/16, 1/32, 1/64."""
        feat4 = self.conv4_1(self.conv4(feat3))
        feat5 = self.conv5_1(self.conv5(feat4))
        feat6 = self.conv6_1(self.conv6(feat5))
        return feat4, feat5, feat6

    def _predict(self, level: int, concat: torch.Tensor) -> torch.Tensor:
        """flow at `level` from its concatenation (through inter_conv for FlowNetSD)."""
        if self.inter_convs:
            concat = getattr(self, f"inter_conv{level}")(concat)
        return getattr(self, f"predict_flow{level}")(concat)

    def _decode(self, feat6, feat5, feat4, feat3, feat2) -> torch.Tensor:
        """Refine flow from 1/64 to 1/4: concat_l = [skip_l, deconv_l(concat_{l+1}), up(flow_{l+1})] (§2.1)."""
        flow6 = self.predict_flow6(feat6)
        concat5 = torch.cat((feat5, self.deconv5(feat6), self.upsampled_flow6_to_5(flow6)), 1)
        flow5 = self._predict(5, concat5)
        concat4 = torch.cat((feat4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)), 1)
        flow4 = self._predict(4, concat4)
        concat3 = torch.cat((feat3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)), 1)
        flow3 = self._predict(3, concat3)
        concat2 = torch.cat((feat2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)), 1)
        return self._predict(2, concat2)


class FlowNetC(_CoarseToFine):
    """FlowNetC: shared encoder on both frames, correlation at 1/8, then the common decoder."""

    def __init__(self):
        super().__init__()
        self.conv1 = conv(3, 64, kernel_size=7, stride=2)
        self.conv2 = conv(64, 128, kernel_size=5, stride=2)
        self.conv3 = conv(128, 256, kernel_size=5, stride=2)
        self.conv_redir = conv(256, REDIR_CHANNELS, kernel_size=1)
        self.corr = Correlation()
        self.conv3_1 = conv(REDIR_CHANNELS + CORRELATION_CHANNELS, 256)
        self._add_deep_encoder()
        self._add_decoder(upsample_bias=True, inter_convs=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 6, H, W) = [frame 0 RGB, frame 1 RGB], normalised -> flow2 (B, 2, H/4, W/4) / DIV_FLOW."""
        b = x.shape[0]
        # conv1..conv3 are shared by the two frames: run them once on both, stacked along the batch.
        frames = torch.cat((x[:, :3], x[:, 3:]), 0)
        feat2 = self.conv2(self.conv1(frames))
        feat3 = self.conv3(feat2)
        feat3_0, feat3_1 = feat3[:b], feat3[b:]
        corr = F.leaky_relu(self.corr(feat3_0, feat3_1), LEAKY_SLOPE)  # (B, 441, H/8, W/8)
        feat3 = self.conv3_1(torch.cat((self.conv_redir(feat3_0), corr), 1))
        feat4, feat5, feat6 = self._encode_deep(feat3)
        return self._decode(feat6, feat5, feat4, feat3, feat2[:b])


class FlowNetS(_CoarseToFine):
    """FlowNetS: one encoder on stacked inputs (12 channels inside FlowNet2: frames, warped frame, flow, error)."""

    def __init__(self, input_channels: int = 12):
        super().__init__()
        self.conv1 = conv(input_channels, 64, kernel_size=7, stride=2)
        self.conv2 = conv(64, 128, kernel_size=5, stride=2)
        self.conv3 = conv(128, 256, kernel_size=5, stride=2)
        self.conv3_1 = conv(256, 256)
        self._add_deep_encoder()
        self._add_decoder(upsample_bias=False, inter_convs=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, input_channels, H, W) -> flow2 (B, 2, H/4, W/4) / DIV_FLOW."""
        feat2 = self.conv2(self.conv1(x))
        feat3 = self.conv3_1(self.conv3(feat2))
        feat4, feat5, feat6 = self._encode_deep(feat3)
        return self._decode(feat6, feat5, feat4, feat3, feat2)


class FlowNetSD(_CoarseToFine):
    """FlowNetSD: the small-displacement network (3x3 kernels, a full-resolution conv0, inter_conv before each flow)."""

    def __init__(self):
        super().__init__()
        self.conv0 = conv(6, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.conv3 = conv(128, 256, stride=2)
        self.conv3_1 = conv(256, 256)
        self._add_deep_encoder()
        self._add_decoder(upsample_bias=True, inter_convs=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 6, H, W) = [frame 0 RGB, frame 1 RGB], normalised -> flow2 (B, 2, H/4, W/4) / DIV_FLOW."""
        feat1 = self.conv1_1(self.conv1(self.conv0(x)))
        feat2 = self.conv2_1(self.conv2(feat1))
        feat3 = self.conv3_1(self.conv3(feat2))
        feat4, feat5, feat6 = self._encode_deep(feat3)
        return self._decode(feat6, feat5, feat4, feat3, feat2)


class FlowNetFusion(nn.Module):
    """FlowNetFusion: merges the large- (CSS) and small-displacement (SD) flows at full, 1/2 and 1/4 resolution."""

    def __init__(self):
        super().__init__()
        self.conv0 = conv(11, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.deconv1 = deconv(128, 32)
        self.deconv0 = deconv(128 + 32 + 2, 16)
        self.inter_conv1 = i_conv(128 + 32 + 2, 32)
        self.inter_conv0 = i_conv(64 + 16 + 2, 16)
        self.predict_flow2 = predict_flow(128)
        self.predict_flow1 = predict_flow(32)
        self.predict_flow0 = predict_flow(16)
        self.upsampled_flow2_to_1 = upsample_flow(bias=True)
        self.upsampled_flow1_to_0 = upsample_flow(bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 11, H, W) (FlowNet2 step 15) -> the final flow (B, 2, H, W) in pixels."""
        feat0 = self.conv0(x)
        feat1 = self.conv1_1(self.conv1(feat0))
        feat2 = self.conv2_1(self.conv2(feat1))
        flow2 = self.predict_flow2(feat2)
        concat1 = torch.cat((feat1, self.deconv1(feat2), self.upsampled_flow2_to_1(flow2)), 1)
        flow1 = self.predict_flow1(self.inter_conv1(concat1))
        concat0 = torch.cat((feat0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)), 1)
        return self.predict_flow0(self.inter_conv0(concat0))
