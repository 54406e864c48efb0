"""Training objectives of I2VDA: Eq. 10 (L_seg), Eq. 11 (L_adv), Eq. 12 (L_d), and the poly learning rate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pipeline.sources import IGNORE_ID

# LS-GAN domain labels on D's raw output: r marks the source, f the target (AdaptSegNet `--gan LS`, paper Eq. 11-12).
SOURCE_LABEL_R = 0.0
TARGET_LABEL_F = 1.0
# Weight of L_adv in L = L_seg + L_tc + 0.01 L_adv (paper §3.6, Algorithm 1).
LAMBDA_ADV = 0.01
# Exponent of the poly schedule (DeepLab-v2, AdaptSegNet, paper §4.2).
POLY_POWER = 0.9
# Label value that no loss looks at: the stores' ignore id (255, Cityscapes convention; its home is pipeline.sources).
IGNORE_INDEX = IGNORE_ID


def upsample_to(logits: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=True, as ADVENT) resize of (B, C, h, w) to (B, C, H, W) = size_hw."""
    if tuple(logits.shape[-2:]) == tuple(size_hw):
        return logits
    return F.interpolate(logits, size=tuple(size_hw), mode="bilinear", align_corners=True)


def masked_nll(log_prob: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean of -log_prob[label] over pixels whose label != ignore_index; 0 (graph intact) when there are none."""
    labels = labels.long()
    total = F.nll_loss(log_prob, labels, ignore_index=ignore_index, reduction="sum")
    # Divide by the count on the device, without a host sync; all-ignored gives 0 / 1 = 0, not NaN.
    count = (labels != ignore_index).sum().clamp(min=1)
    return total / count


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Eq. 10: L_seg = CE(P^s, GT^s), logits (B, C, h, w) upsampled to labels (B, H, W), mean over labelled pixels."""
    logits_full = upsample_to(logits, labels.shape[-2:]).float()
    return masked_nll(F.log_softmax(logits_full, dim=1), labels, ignore_index)


def adversarial_loss(d_outputs: Sequence[torch.Tensor], r: float = SOURCE_LABEL_R) -> torch.Tensor:
    """Eq. 11: L_adv = sum over the target D outputs (D(P_0), D(P_t)) of mean (D - r)^2, r the source label."""
    if len(d_outputs) == 0:
        raise ValueError("adversarial_loss needs at least one discriminator output")
    return sum(((d.float() - r) ** 2).mean() for d in d_outputs)


def discriminator_loss(
    d_source: torch.Tensor,
    d_target0: torch.Tensor,
    d_target_t: torch.Tensor | None = None,
    r: float = SOURCE_LABEL_R,
    f: float = TARGET_LABEL_F,
) -> torch.Tensor:
    """Eq. 12: L_d = mean (D(P^s) - r)^2 + 1/2 mean (D(P_0) - f)^2 + 1/2 mean (D(P_t) - f)^2.

    The target half is the average over the target outputs given: without P_t (a baseline with no It) it is
    mean (D(P_0) - f)^2 alone.
    """
    targets = [d for d in (d_target0, d_target_t) if d is not None]
    source_term = ((d_source.float() - r) ** 2).mean()
    target_term = sum(((d.float() - f) ** 2).mean() for d in targets) / len(targets)
    return source_term + target_term


def poly_lr(base_lr: float, it: int, max_iter: int, power: float = POLY_POWER) -> float:
    """Poly schedule: base_lr * (1 - it / max_iter) ** power, 0 from max_iter on."""
    if max_iter <= 0:
        raise ValueError(f"max_iter must be positive, got {max_iter}")
    progress = min(max(it, 0) / max_iter, 1.0)
    return base_lr * (1.0 - progress) ** power
