"""Eq. 1-9 of I2VDA on hand-worked examples (trainer/temporal.py)."""

import math

import pytest
import torch

from pipeline.errors import InputError
from trainer.temporal import (
    PROB_EPS,
    intermediate_flows,
    linear_flow_1t,
    normalized_entropy,
    occlusion_mask,
    propagate_prediction,
    pseudo_label,
    synthesize_intermediate,
    temporal_consistency_loss,
)


def constant_flow(dx: float, dy: float, b: int = 1, h: int = 1, w: int = 4) -> torch.Tensor:
    """A (b, 2, h, w) flow that moves every pixel by (dx, dy) pixels."""
    flow = torch.zeros(b, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def row_image(values, b: int = 1) -> torch.Tensor:
    """A (b, 1, 1, W) one-row image."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1).repeat(b, 1, 1, 1)


def test_eq2_intermediate_flows_scale_each_sample_by_its_t():
    flow_01, flow_10 = constant_flow(2.0, -4.0, b=2), constant_flow(-2.0, 4.0, b=2)
    flow_t0, flow_t1 = intermediate_flows(flow_01, flow_10, torch.tensor([0.25, 0.5]))
    # sample 0: t=0.25 -> F_t0 = 0.25 * (-2, 4) = (-0.5, 1), F_t1 = 0.75 * (2, -4) = (1.5, -3)
    assert torch.equal(flow_t0[0, :, 0, 0], torch.tensor([-0.5, 1.0]))
    assert torch.equal(flow_t1[0, :, 0, 0], torch.tensor([1.5, -3.0]))
    # sample 1: t=0.5 -> (-1, 2) and (1, -2)
    assert torch.equal(flow_t0[1, :, 0, 0], torch.tensor([-1.0, 2.0]))
    assert torch.equal(flow_t1[1, :, 0, 0], torch.tensor([1.0, -2.0]))


def test_eq3_synthesized_frame_by_hand():
    # The scene moves 2 px to the right from I0 to I1: F_0->1 = +2, F_1->0 = -2 (x only).
    i0 = row_image([0.0, 10.0, 20.0, 30.0], b=2)
    i1 = row_image([100.0, 200.0, 300.0, 400.0], b=2)
    flow_01, flow_10 = constant_flow(2.0, 0.0, b=2), constant_flow(-2.0, 0.0, b=2)
    it = synthesize_intermediate(i0, i1, flow_01, flow_10, torch.tensor([0.5, 0.25]))
    # t=0.5: I0 read at x-1 (clamped to the border) = [0, 0, 10, 20]; I1 read at x+1 = [200, 300, 400, 400].
    assert torch.allclose(it[0, 0, 0], torch.tensor([100.0, 150.0, 205.0, 210.0]))
    # t=0.25: I0 read at x-0.5 = [0, 5, 15, 25]; I1 read at x+1.5 = [250, 350, 400, 400].
    assert torch.allclose(it[1, 0, 0], torch.tensor([125.0, 177.5, 207.5, 212.5]))
    # alpha=1 keeps only the I0 half; a float t applies to every sample.
    only_i0 = synthesize_intermediate(i0, i1, flow_01, flow_10, 0.5, alpha=1.0)
    assert torch.allclose(only_i0[1, 0, 0], torch.tensor([0.0, 0.0, 10.0, 20.0]))


def test_linear_flow_1t():
    flow_1t = linear_flow_1t(constant_flow(-2.0, 6.0, b=2), torch.tensor([0.25, 1.0]))
    assert torch.equal(flow_1t[0, :, 0, 0], torch.tensor([-1.5, 4.5]))  # 0.75 * (-2, 6)
    assert torch.equal(flow_1t[1], torch.zeros(2, 1, 4))  # t=1: I_t is I_1


def brute_force_bilinear(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """x (C, H, W) read at p + flow(p) with coordinates clamped to the image, one pixel at a time."""
    c, h, w = x.shape
    out = torch.zeros(c, h, w, dtype=torch.float64)
    for py in range(h):
        for px in range(w):
            sx = min(max(px + float(flow[0, py, px]), 0.0), w - 1.0)
            sy = min(max(py + float(flow[1, py, px]), 0.0), h - 1.0)
            x0, y0 = int(math.floor(sx)), int(math.floor(sy))
            x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
            ax, ay = sx - x0, sy - y0
            for k in range(c):
                top = (1 - ax) * float(x[k, y0, x0]) + ax * float(x[k, y0, x1])
                bottom = (1 - ax) * float(x[k, y1, x0]) + ax * float(x[k, y1, x1])
                out[k, py, px] = (1 - ay) * top + ay * bottom
    return out


def test_eq4_propagation_is_bilinear_warp_of_probabilities():
    gen = torch.Generator().manual_seed(0)
    prob_t = torch.softmax(torch.randn(1, 3, 3, 4, generator=gen), dim=1)
    flow_1t = torch.randn(1, 2, 3, 4, generator=gen) * 1.5  # fractional, some samples leave the image
    prob_1w = propagate_prediction(prob_t, flow_1t)
    expected = brute_force_bilinear(prob_t[0], flow_1t[0])
    assert torch.allclose(prob_1w[0].double(), expected, atol=1e-6)
    # A convex combination of distributions is a distribution.
    assert torch.allclose(prob_1w.sum(dim=1), torch.ones(1, 3, 4), atol=1e-6)


def test_eq6_entropy_extremes_and_a_two_class_value():
    uniform = torch.full((1, 5, 2, 2), 0.2)
    assert torch.allclose(normalized_entropy(uniform), torch.ones(1, 2, 2))
    one_hot = torch.zeros(1, 5, 2, 2)
    one_hot[:, 3] = 1.0
    e = normalized_entropy(one_hot)
    assert torch.equal(e, torch.zeros(1, 2, 2))  # exact 0, no NaN from 0 log 0
    two = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    # -(0.25 log2 0.25 + 0.75 log2 0.75) = 0.5 + 0.75 * 0.4150375 bits = 0.8112781
    assert normalized_entropy(two).item() == pytest.approx(0.8112781244591328, abs=1e-6)


def moving_object_flows():
    """1 x 8 world: a 2 px object at x=2,3 in I0 moves to x=4,5 in I1 over a static background."""
    flow_01 = torch.zeros(1, 2, 1, 8)
    flow_01[0, 0, 0, 2:4] = 2.0  # object pixels of I0 go right by 2; I0's x=4,5 get covered
    flow_10 = torch.zeros(1, 2, 1, 8)
    flow_10[0, 0, 0, 4:6] = -2.0  # object pixels of I1 come from 2 px to the left; I1's x=2,3 are uncovered
    return flow_01, flow_10


def test_eq7_occlusion_on_both_grids_by_hand():
    flow_01, flow_10 = moving_object_flows()
    # I1's grid: uncovered background x=2,3 has F_10 = 0 but reads F_01 = +2 there -> round trip 2 px > eta.
    on_i1 = occlusion_mask(flow_01, flow_10, eta=1.0, grid="i1")
    assert on_i1[0, 0].tolist() == [True, True, False, False, True, True, True, True]
    # I0's grid (the paper's formula): covered background x=4,5 has F_01 = 0 but reads F_10 = -2 at x=4,5.
    on_i0 = occlusion_mask(flow_01, flow_10, eta=1.0, grid="i0")
    assert on_i0[0, 0].tolist() == [True, True, True, True, False, False, True, True]
    # A threshold above the 2 px error keeps everything.
    assert occlusion_mask(flow_01, flow_10, eta=2.5).all()
    with pytest.raises(InputError, match="occlusion grid"):
        occlusion_mask(flow_01, flow_10, grid="i2")


def test_eq8_pseudo_label_table():
    # argmax per pixel: [0, 2, 1, 2]
    prob_1 = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7]]).T.reshape(1, 3, 1, 4)
    entropy = torch.tensor([0.10, 0.50, 0.20, 0.29]).view(1, 1, 4)
    not_occluded = torch.tensor([True, True, False, True]).view(1, 1, 4)
    table = {  # (use E, use O) -> PL; 255 where E >= 0.3 (x=1) or O = 0 (x=2)
        (True, True): [0, 255, 255, 2],
        (True, False): [0, 255, 1, 2],
        (False, True): [0, 2, 255, 2],
        (False, False): [0, 2, 1, 2],
    }
    for (use_e, use_o), expected in table.items():
        pl = pseudo_label(prob_1, entropy if use_e else None, not_occluded if use_o else None, delta=0.3)
        assert pl.dtype == torch.long
        assert pl[0, 0].tolist() == expected, (use_e, use_o)
    assert pseudo_label(prob_1, entropy, None, delta=0.3, ignore_index=-1)[0, 0].tolist() == [0, -1, 1, 2]


def test_eq9_consistency_loss_is_mean_nll_over_labelled_pixels():
    gen = torch.Generator().manual_seed(1)
    prob_1w = torch.softmax(torch.randn(2, 3, 2, 2, generator=gen), dim=1).requires_grad_(True)
    pl = torch.tensor([[[0, 255], [2, 1]], [[255, 255], [1, 0]]])
    loss = temporal_consistency_loss(prob_1w, pl)
    p = prob_1w.detach()
    terms = [
        -math.log(float(p[b, pl[b, y, x], y, x]) + PROB_EPS)
        for b in range(2)
        for y in range(2)
        for x in range(2)
        if pl[b, y, x] != 255
    ]
    assert len(terms) == 5
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    loss.backward()
    # d/dp of -log(p) / n at a labelled (b, class, y, x): -1 / (n p); zero at every other entry.
    expected_grad = torch.zeros_like(prob_1w)
    for b, y, x in [(0, 0, 0), (0, 1, 0), (0, 1, 1), (1, 1, 0), (1, 1, 1)]:
        k = int(pl[b, y, x])
        expected_grad[b, k, y, x] = -1.0 / (5 * (float(p[b, k, y, x]) + PROB_EPS))
    assert torch.allclose(prob_1w.grad, expected_grad, rtol=1e-5)


def test_eq9_all_ignored_gives_zero_with_a_graph():
    prob_1w = torch.full((1, 3, 2, 2), 1 / 3, requires_grad=True)
    loss = temporal_consistency_loss(prob_1w, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(prob_1w.grad, torch.zeros_like(prob_1w))


def test_class_balanced_pseudo_labels_by_hand():
    """Class 0's entropies 0.1 0.2 0.5 0.6, class 1's 0.7 0.8 0.9 0.95; delta 0.3, portion 0.5.

    delta_0 = median 0.35 -> keeps 0.1, 0.2 (as delta alone would); delta_1 = 0.85 -> keeps 0.7, 0.8 (delta: none).
    """
    from trainer.temporal import class_balanced_entropy

    label = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    entropy = torch.tensor([0.1, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]).view(1, 1, 8)
    prob = torch.nn.functional.one_hot(label, 2).float().T.reshape(1, 2, 1, 8) * 0.4 + 0.3
    rescaled = class_balanced_entropy(prob, entropy, delta=0.3, portion=0.5)
    pl = pseudo_label(prob, rescaled, None, delta=0.3)
    assert pl.flatten().tolist() == [0, 0, 255, 255, 1, 1, 255, 255]
    assert pseudo_label(prob, entropy, None, delta=0.3).flatten().tolist() == [0, 0] + [255] * 6
