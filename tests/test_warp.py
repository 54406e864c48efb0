"""Backward warp W(X, F)(p) = X(p + F(p)) against closed forms, a per-pixel bilinear sampler, an occlusion."""

import math

import numpy as np
import pytest
import torch
from flow_checks import warp_with_mask

from pipeline.flow.warp import forward_backward_consistent, warp


def _bilinear_reference(x: np.ndarray, flow: np.ndarray, padding: str) -> np.ndarray:
    """Pixel-by-pixel bilinear sampling of x (B, C, H, W) at p + flow(p); 'border' clamps the four neighbour
    indices into the image (FlowNet2's Resample2d), 'zeros' reads 0 for neighbours outside it."""
    b, c, h, w = x.shape
    out = np.zeros((b, c) + flow.shape[2:], dtype=np.float64)
    for n in range(b):
        for py in range(flow.shape[2]):
            for px in range(flow.shape[3]):
                sx = px + float(flow[n, 0, py, px])
                sy = py + float(flow[n, 1, py, px])
                x0, y0 = math.floor(sx), math.floor(sy)
                ax, ay = sx - x0, sy - y0
                for dy, wy in ((0, 1 - ay), (1, ay)):
                    for dx, wx in ((0, 1 - ax), (1, ax)):
                        xi, yi = x0 + dx, y0 + dy
                        if padding == "border":
                            xi, yi = min(max(xi, 0), w - 1), min(max(yi, 0), h - 1)
                        elif not (0 <= xi < w and 0 <= yi < h):
                            continue
                        out[n, :, py, px] += wy * wx * x[n, :, yi, xi]
    return out


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_warp_matches_per_pixel_bilinear_sampler(padding):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    flow = (torch.rand(2, 2, 5, 7, generator=gen, dtype=torch.float64) - 0.5) * 12  # reaches past every border
    expected = _bilinear_reference(x.numpy(), flow.numpy(), padding)
    np.testing.assert_allclose(warp(x, flow, padding=padding).numpy(), expected, atol=1e-10)


def test_linear_ramp_shifted_by_quarter_pixel_is_exact():
    h, w = 6, 9
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (3.0 * xs - 2.0 * ys + 1.0)[None, None]  # bilinear interpolation reproduces a linear function exactly
    flow = torch.zeros(1, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = 0.25, -0.5
    out = warp(ramp, flow)[0, 0]
    expected = 3.0 * (xs + 0.25) - 2.0 * (ys - 0.5) + 1.0
    interior = (slice(1, h), slice(0, w - 1))  # where p + flow stays inside [0, W-1] x [0, H-1]
    torch.testing.assert_close(out[interior], expected[interior], rtol=0, atol=1e-12)


def test_zero_flow_is_identity():
    x = torch.rand(2, 4, 8, 11, generator=torch.Generator().manual_seed(1))
    # Not bit-exact in float32: grid_sample maps pixels to [-1, 1] and back (error ~1 ulp of the coordinate).
    torch.testing.assert_close(warp(x, torch.zeros(2, 2, 8, 11)), x, rtol=0, atol=1e-6)
    out, mask = warp_with_mask(x, torch.zeros(2, 2, 8, 11))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
    assert torch.equal(mask, torch.ones(2, 1, 8, 11))


def test_integer_flow_right_reads_the_next_column_and_repeats_the_last():
    x = torch.arange(3 * 5, dtype=torch.float32).view(1, 1, 3, 5)
    flow = torch.zeros(1, 2, 3, 5)
    flow[:, 0] = 1.0  # W(x, F)(p) = x(p + (1, 0)): content moves one pixel left
    out = warp(x, flow)
    expected = torch.cat((x[..., 1:], x[..., -1:]), dim=-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_far_flow_reads_edges_with_border_padding_and_zeros_with_the_mask():
    x = torch.arange(4 * 6, dtype=torch.float32).view(1, 1, 4, 6) + 1.0
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0, :, :3] = -100.0  # left half looks far left
    flow[:, 1, :, 3:] = 100.0  # right half looks far down
    out = warp(x, flow)[0, 0]
    torch.testing.assert_close(out[:, :3], x[0, 0, :, :1].expand(4, 3), rtol=0, atol=1e-4)  # first column
    torch.testing.assert_close(out[:, 3:], x[0, 0, -1:, 3:].expand(4, 3), rtol=0, atol=1e-4)  # last row
    zeros, mask = warp_with_mask(x, flow)
    assert torch.equal(zeros, torch.zeros_like(x)) and torch.equal(mask, torch.zeros(1, 1, 4, 6))


def test_mask_marks_exactly_the_pixels_whose_target_is_inside():
    flow = torch.zeros(1, 2, 3, 4)
    flow[:, 0] = 1.5  # p + 1.5 <= 3 only for x <= 1
    _, mask = warp_with_mask(torch.ones(1, 1, 3, 4), flow)
    expected = torch.tensor([1.0, 1.0, 0.0, 0.0]).expand(1, 1, 3, 4)
    assert torch.equal(mask, expected)


def test_forward_backward_check_flags_the_background_that_the_object_covers():
    # Static background; an object at columns 2..4 of frame a moves +2 px to columns 4..6 of frame b.
    h, w, step = 3, 10, 2
    flow_ab = torch.zeros(1, 2, h, w)
    flow_ab[:, 0, :, 2:5] = step
    flow_ba = torch.zeros(1, 2, h, w)
    flow_ba[:, 0, :, 4:7] = -step  # the object on b's grid goes back
    consistent = forward_backward_consistent(flow_ab, flow_ba, eta=0.5)
    # Background of a at columns 5, 6 lands under the object in b: F_ab + F_ba(p + F_ab) = 0 - 2, occluded.
    expected = torch.ones(1, h, w, dtype=torch.bool)
    expected[:, :, 5:7] = False
    assert torch.equal(consistent, expected)
