"""DeepLab-v2 (ResNet, output stride 8, ASPP-v2 summed), built as ADVENT/AdaptSegNet build it.

Key names follow the caffe-converted DeepLab-v2 checkpoint (`DeepLab_resnet_pretrained_imagenet.pth`) that
AdaptSegNet, ADVENT and DA-VSN start from: `conv1`, `bn1`, `layer1..4` with `.conv1/.bn1/.conv2/.bn2/.conv3/.bn3/
.downsample.0/.downsample.1`, the aux head `layer5` and the main head `layer6.conv2d_list.{0..3}` (ADVENT's names),
so that checkpoint and ADVENT-style snapshots load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.errors import InputError

# The Caffe ImageNet mean in BGR order, on 0..255 pixels: what the DeepLab-v2 init was trained with.
IMG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
# Channel growth of a Bottleneck block: its output has 4 x planes channels (He et al. 2016).
EXPANSION = 4
# ASPP-v2 rates on the stride-8 map (DeepLab-v2 "ASPP-L"); each conv's padding equals its dilation.
ASPP_RATES = (6, 12, 18, 24)
# Dilations of layer3 and layer4 replace their strides, keeping the output stride at 8.
LAYER_DILATIONS = (1, 1, 2, 4)
LAYER_STRIDES = (1, 2, 1, 1)
# Init of every conv weight, as ADVENT and the DeepLab-v2 prototxt (gaussian std 0.01).
INIT_STD = 0.01
# State-dict prefixes of the heads: ADVENT's names for the aux (on layer3) and the main (on layer4) ASPP classifier.
AUX_HEAD_PREFIX, MAIN_HEAD_PREFIX = "layer5.", "layer6."


def caffe_normalize(rgb: torch.Tensor) -> torch.Tensor:
    """Float RGB 0..255 (B, 3, H, W) -> BGR minus IMG_MEAN_BGR (no /255), the DeepLab-v2 input."""
    mean_bgr = torch.tensor(IMG_MEAN_BGR, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return rgb.flip(1) - mean_bgr


def _frozen_affine_bn(channels: int) -> nn.BatchNorm2d:
    """BN whose affine weight/bias are frozen; running statistics stay live (batch stats in train mode), as ADVENT."""
    bn = nn.BatchNorm2d(channels)
    bn.weight.requires_grad_(False)
    bn.bias.requires_grad_(False)
    return bn


class Bottleneck(nn.Module):
    """ResNet bottleneck with the stride in the first 1x1 conv (Caffe ResNet) and a dilated 3x3."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
        self.bn1 = _frozen_affine_bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _frozen_affine_bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = _frozen_affine_bn(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ClassifierModule(nn.Module):
    """ASPP-v2: the sum of four 3x3 convs with dilation = padding = 6, 12, 18, 24 (with bias)."""

    def __init__(self, inplanes: int, num_classes: int, rates=ASPP_RATES):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(inplanes, num_classes, 3, padding=r, dilation=r, bias=True) for r in rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d_list[0](x)
        for conv in self.conv2d_list[1:]:
            out = out + conv(x)
        return out


class DeepLabV2(nn.Module):
    """DeepLab-v2 on a dilated ResNet: `forward(x)` -> main logits (B, C, h, w) at stride 8.

    `layers` are the Bottleneck counts of layer1..4 ((3, 4, 23, 3) = ResNet-101), `width` the planes of layer1
    (64 in ResNet). With `multi_level=True` an aux head `layer5` reads layer3; `forward_levels(x)` then returns
    (aux, main). `forward` always returns the main logits, so callers that do not use the aux head never see it.
    """

    def __init__(self, num_classes: int, layers=(3, 4, 23, 3), width: int = 64, multi_level: bool = False):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1 or width < 1 or num_classes < 1:
            raise InputError(f"DeepLabV2 expects 4 positive layer counts, width and classes; got {layers}, {width}")
        self.num_classes = num_classes
        self.multi_level = multi_level
        self.inplanes = width
        # Stem: 7x7 s2 conv and a 3x3 s2 max pool with ceil_mode (why 512x1024 gives 65x129 logits).
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _frozen_affine_bn(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        planes = [width * 2**i for i in range(4)]
        self.layer1 = self._make_layer(planes[0], layers[0], LAYER_STRIDES[0], LAYER_DILATIONS[0])
        self.layer2 = self._make_layer(planes[1], layers[1], LAYER_STRIDES[1], LAYER_DILATIONS[1])
        self.layer3 = self._make_layer(planes[2], layers[2], LAYER_STRIDES[2], LAYER_DILATIONS[2])
        self.layer4 = self._make_layer(planes[3], layers[3], LAYER_STRIDES[3], LAYER_DILATIONS[3])
        # The aux head exists for one tested purpose: loading the multi-level snapshots of ADVENT and DA-VSN (and our
        # checkpoints of such a network) that carry `layer5` (tests/test_models.py, "multi_level"). I2VDA trains
        # single-level (paper §4.2), so `build_nets` never asks for it.
        self.layer5 = ClassifierModule(planes[2] * EXPANSION, num_classes) if multi_level else None
        self.layer6 = ClassifierModule(planes[3] * EXPANSION, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        """Stack `blocks` Bottlenecks; the first gets a 1x1 conv + BN shortcut when ADVENT's rule asks for one."""
        downsample = None
        if stride != 1 or self.inplanes != planes * EXPANSION or dilation in (2, 4):
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * EXPANSION, 1, stride=stride, bias=False),
                _frozen_affine_bn(planes * EXPANSION),
            )
        stack = [Bottleneck(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * EXPANSION
        stack += [Bottleneck(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*stack)

    def _init_weights(self) -> None:
        """Conv weights ~ N(0, 0.01), conv biases 0, BN weight 1 and bias 0 (ADVENT)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _layer3_features(self, x: torch.Tensor) -> torch.Tensor:
        """Caffe-normalised image (B, 3, H, W) -> layer3's output (B, 16 * width, h, w) at stride 8."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Caffe-normalised image (B, 3, H, W) -> the backbone's output (B, 32 * width, h, w) at stride 8: what the
        main head reads (and what an image-level pretraining pools)."""
        return self.layer4(self._layer3_features(x))

    def forward_levels(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Caffe-normalised image (B, 3, H, W) -> (aux logits or None, main logits), both (B, C, h, w) at stride 8."""
        feat3 = self._layer3_features(x)  # (B, 16 * width, h, w)
        aux = self.layer5(feat3) if self.layer5 is not None else None
        main = self.layer6(self.layer4(feat3))  # (B, C, h, w)
        return aux, main

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Caffe-normalised image (B, 3, H, W) -> main logits (B, C, h, w) at output stride 8."""
        return self.forward_levels(x)[1]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of conv1, bn1 and layer1..4 (the frozen BN affine is left out)."""
        parts = [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]
        return [p for part in parts for p in part.parameters() if p.requires_grad]

    def classifier_parameters(self) -> list[nn.Parameter]:
        """Parameters of the ASPP heads (layer6, and layer5 when multi_level)."""
        heads = [h for h in (self.layer5, self.layer6) if h is not None]
        return [p for head in heads for p in head.parameters() if p.requires_grad]

    def optim_parameters(self, lr: float, classifier_lr_mult: float) -> list[dict]:
        """SGD param groups: [backbone at lr, classifiers at classifier_lr_mult x lr] (ADVENT's two-group form; the
        factor's one home is TrainConfig.classifier_lr_mult); each group keeps its factor as "lr_mult", which the
        poly schedule multiplies in."""
        return [
            {"params": self.backbone_parameters(), "lr": lr, "lr_mult": 1.0},
            {"params": self.classifier_parameters(), "lr": classifier_lr_mult * lr, "lr_mult": classifier_lr_mult},
        ]


def deeplab_r101(num_classes: int, multi_level: bool = False) -> DeepLabV2:
    """DeepLab-v2 ResNet-101, the paper's segmenter."""
    return DeepLabV2(num_classes, layers=(3, 4, 23, 3), width=64, multi_level=multi_level)


def deeplab_r50(num_classes: int, multi_level: bool = False) -> DeepLabV2:
    """DeepLab-v2 ResNet-50."""
    return DeepLabV2(num_classes, layers=(3, 4, 6, 3), width=64, multi_level=multi_level)


def deeplab_tiny(num_classes: int, multi_level: bool = False) -> DeepLabV2:
    """A one-block-per-stage, width-16 DeepLab-v2 for the CPU demo and the tests."""
    return DeepLabV2(num_classes, layers=(1, 1, 1, 1), width=16, multi_level=multi_level)


SEGMENTERS = {"deeplab_r101": deeplab_r101, "deeplab_r50": deeplab_r50, "deeplab_tiny": deeplab_tiny}


def build_segmenter(arch: str, num_classes: int, multi_level: bool = False) -> DeepLabV2:
    """Build a segmenter by name: one of SEGMENTERS (`--arch`)."""
    if arch not in SEGMENTERS:
        raise InputError(f"--arch: unknown segmenter {arch!r}; expected one of {', '.join(SEGMENTERS)}")
    return SEGMENTERS[arch](num_classes, multi_level=multi_level)
