"""The output-space discriminator D of AdaptSegNet/ADVENT, used by I2VDA's LS-GAN (Eq. 11-12)."""

from __future__ import annotations

import torch
import torch.nn as nn

# Every conv halves the map: kernel 4, stride 2, padding 1 (AdaptSegNet's FCDiscriminator).
KERNEL, STRIDE, PADDING = 4, 2, 1
# Slope of the LeakyReLU between the convs (AdaptSegNet).
LEAKY_SLOPE = 0.2


class FCDiscriminator(nn.Module):
    """Softmax map (B, C, H, W) -> raw score map (B, 1, H/32, W/32): C-64-128-256-512-1 convs, LeakyReLU 0.2."""

    def __init__(self, num_classes: int, ndf: int = 64):
        super().__init__()
        # Names as AdaptSegNet's FCDiscriminator, so its snapshots load unchanged.
        self.conv1 = nn.Conv2d(num_classes, ndf, KERNEL, STRIDE, PADDING)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, KERNEL, STRIDE, PADDING)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, KERNEL, STRIDE, PADDING)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, KERNEL, STRIDE, PADDING)
        self.classifier = nn.Conv2d(ndf * 8, 1, KERNEL, STRIDE, PADDING)
        self.leaky_relu = nn.LeakyReLU(negative_slope=LEAKY_SLOPE, inplace=True)

    def forward(self, prob: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, C, H, W) -> unbounded scores (B, 1, h, w); LS-GAN targets r=0 source, f=1 target."""
        x = self.leaky_relu(self.conv1(prob))
        x = self.leaky_relu(self.conv2(x))
        x = self.leaky_relu(self.conv3(x))
        x = self.leaky_relu(self.conv4(x))
        return self.classifier(x)
