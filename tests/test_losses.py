"""Eq. 10-12 and the poly schedule on hand-worked values (trainer/losses.py)."""

import math

import numpy as np
import pytest
import torch

from trainer.losses import (
    LAMBDA_ADV,
    SOURCE_LABEL_R,
    TARGET_LABEL_F,
    adversarial_loss,
    discriminator_loss,
    poly_lr,
    segmentation_loss,
    upsample_to,
)


def upsample_align_corners(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(C, h, w) -> (C, out_h, out_w), bilinear with corner pixels aligned: source coord = i (in - 1) / (out - 1)."""
    c, h, w = x.shape
    out = np.zeros((c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            sy, sx = i * (h - 1) / (out_h - 1), j * (w - 1) / (out_w - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ay, ax = sy - y0, sx - x0
            out[:, i, j] = (1 - ay) * ((1 - ax) * x[:, y0, x0] + ax * x[:, y0, x1]) + ay * (
                (1 - ax) * x[:, y1, x0] + ax * x[:, y1, x1]
            )
    return out


def test_upsample_to_matches_align_corners_bilinear():
    x = torch.arange(12, dtype=torch.float32).view(1, 2, 2, 3) ** 1.5
    up = upsample_to(x, (3, 5))
    assert torch.allclose(up[0].double(), torch.from_numpy(upsample_align_corners(x[0].numpy(), 3, 5)), atol=1e-5)
    assert upsample_to(x, (2, 3)) is x


def test_eq10_segmentation_loss_is_ce_on_upsampled_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 2, 3, generator=gen, requires_grad=True)
    labels = torch.tensor([[[0, 1, 2, 3, 255], [3, 255, 2, 1, 0], [1, 1, 255, 0, 2]]], dtype=torch.uint8)
    loss = segmentation_loss(logits, labels)
    up = upsample_align_corners(logits.detach()[0].double().numpy(), 3, 5)  # (4, 3, 5)
    log_prob = up - np.log(np.exp(up).sum(axis=0, keepdims=True))
    lab = labels[0].numpy()
    terms = [-log_prob[lab[i, j], i, j] for i in range(3) for j in range(5) if lab[i, j] != 255]
    assert len(terms) == 12
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-5)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_eq10_all_ignored_is_zero():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), 255, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()  # the graph is intact
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_gan_constants():
    assert (SOURCE_LABEL_R, TARGET_LABEL_F, LAMBDA_ADV) == (0.0, 1.0, 0.01)


def test_eq11_adversarial_loss_by_hand():
    d_p0 = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]]])
    d_pt = torch.tensor([[[[2.0]]]])
    # r=0: mean(0.25, 0.25, 1, 0) = 0.375, plus mean(4) = 4
    assert adversarial_loss([d_p0, d_pt]).item() == pytest.approx(4.375)
    # r=1: mean(0.25, 2.25, 0, 1) = 0.875, plus (2 - 1)^2 = 1
    assert adversarial_loss([d_p0, d_pt], r=1.0).item() == pytest.approx(1.875)
    assert adversarial_loss([d_p0]).item() == pytest.approx(0.375)


def test_eq12_discriminator_loss_by_hand():
    d_ps = torch.tensor([[[[0.5, 0.5]]]])  # (0.5 - 0)^2 = 0.25
    d_p0 = torch.tensor([[[[1.0, 0.0]]]])  # mean(0, 1) = 0.5, weight 1/2 -> 0.25
    d_pt = torch.tensor([[[[3.0]]]])  # (3 - 1)^2 = 4, weight 1/2 -> 2
    assert discriminator_loss(d_ps, d_p0, d_pt).item() == pytest.approx(2.5)
    # Without P_t the target half is D(P_0)'s term alone: 0.25 + 0.5.
    assert discriminator_loss(d_ps, d_p0).item() == pytest.approx(0.75)
    # Swapped labels r=1, f=0: mean(0.25, 0.25) + 0.5 mean(1, 0) + 0.5 * 9
    assert discriminator_loss(d_ps, d_p0, d_pt, r=1.0, f=0.0).item() == pytest.approx(0.25 + 0.25 + 4.5)


def test_poly_lr_closed_form():
    base, horizon = 2.5e-4, 50_000
    assert poly_lr(base, 0, horizon) == pytest.approx(base)
    # (1 - 1/2)^0.9 = exp(-0.9 ln 2)
    assert poly_lr(base, 25_000, horizon) == pytest.approx(base * math.exp(-0.9 * math.log(2.0)))
    assert poly_lr(base, 45_000, horizon) == pytest.approx(base * 0.1**0.9)
    assert poly_lr(1.0, 3, 4, power=1.0) == pytest.approx(0.25)
    assert poly_lr(base, horizon, horizon) == 0.0
    assert poly_lr(base, horizon + 10, horizon) == 0.0
