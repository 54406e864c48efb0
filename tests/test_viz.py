"""Middlebury flow colours, checked against values worked by hand from the wheel's definition."""

import numpy as np
import pytest
from flow_checks import components_first

from pipeline.flow.viz import color_wheel, flow_legend, flow_to_color


def test_wheel_ramps_by_hand():
    wheel = color_wheel().astype(int)
    assert wheel.shape == (55, 3)
    # Ramp starts (15, 6, 4, 11, 13, 6 colours): red, yellow, green, cyan, blue, magenta.
    starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255), 36: (0, 0, 255), 49: (255, 0, 255)}
    for index, rgb in starts.items():
        assert tuple(wheel[index]) == rgb
    assert tuple(wheel[1]) == (255, 17, 0)  # floor(255 * 1 / 15)
    assert tuple(wheel[37]) == (19, 0, 255)  # floor(255 * 1 / 13)
    assert tuple(wheel[54]) == (255, 0, 43)  # 255 - floor(255 * 5 / 6)


def test_zero_flow_is_white_and_the_axes_have_their_wheel_colours():
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 0] = (4.0, 0.0)  # +x: angle atan2(-0, -1) = -pi -> wheel position 0, red
    flow[0, 1] = (0.0, 4.0)  # +y: atan2(-1, -0) = -pi/2 -> position 54/4 = 13.5, halfway between 13 and 14
    flow[0, 2] = (-4.0, 0.0)  # -x: atan2(0, 1) = 0 -> position 27 = cyan-blue ramp step 2
    flow[1, 0] = (0.0, -4.0)  # -y: atan2(1, -0) = pi/2 -> position 40.5, between 40 and 41
    flow[1, 1] = (2.0, 0.0)  # half the max magnitude: red faded halfway to white
    before = flow.copy()
    rgb = flow_to_color(components_first(flow))
    np.testing.assert_array_equal(flow, before)  # the input is not mutated (normalisation works on a copy)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[0, 1]) == (255, (221 + 238) // 2, 0)  # floor of 229.5
    assert tuple(rgb[0, 2]) == (0, 255 - 255 * 2 // 11, 255)
    assert tuple(rgb[1, 0]) == ((255 * 4 // 13 + 255 * 5 // 13) // 2, 0, 255)  # (78 + 98) / 2
    assert tuple(rgb[1, 1]) == (255, 127, 127)  # 1 - 0.5 * (1 - 0) -> floor(127.5)
    assert tuple(rgb[1, 2]) == (255, 255, 255)  # zero flow


def test_max_flow_scales_and_saturates():
    flow = np.array([[[3.0, 0.0], [12.0, 0.0]]])
    rgb = flow_to_color(components_first(flow), max_flow=6.0)
    assert tuple(rgb[0, 0]) == (255, 127, 127)  # 3 / 6 = half saturation
    assert tuple(rgb[0, 1]) == (191, 0, 0)  # beyond max_flow: red darkened to 3/4 -> floor(191.25)
    assert np.array_equal(flow_to_color(np.zeros((2, 4, 5))), np.full((4, 5, 3), 255, np.uint8))


def test_non_finite_flow_is_black_and_ignored_by_the_normalisation():
    flow = np.array([[[np.nan, 0.0], [1.0, 0.0], [np.inf, 3.0]]])
    rgb = flow_to_color(components_first(flow))
    assert tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[0, 2]) == (0, 0, 0)
    assert tuple(rgb[0, 1]) == (255, 0, 0)  # the largest finite magnitude is 1


def test_legend_is_white_at_the_centre_and_red_on_the_right():
    legend = flow_legend(21)
    assert legend.shape == (21, 21, 3)
    assert tuple(legend[10, 10]) == (255, 255, 255)
    assert tuple(legend[10, 20]) == (255, 0, 0)
    with pytest.raises(ValueError):
        flow_to_color(np.zeros((3, 3)))


def test_the_public_estimator_output_colours_and_writes_as_the_components_first_flow(tmp_path):
    # est(frames0, frames1) returns (H, W, 2); flow_to_color and write_flo take it as they take (2, H, W).
    from pipeline.flow import read_flo, write_flo

    rng = np.random.default_rng(3)
    flow_chw = rng.normal(0, 3, (2, 5, 7)).astype(np.float32)
    flow_hwc = np.ascontiguousarray(np.moveaxis(flow_chw, 0, -1))
    assert np.array_equal(flow_to_color(flow_hwc), flow_to_color(flow_chw))
    write_flo(tmp_path / "a.flo", flow_hwc)
    write_flo(tmp_path / "b.flo", flow_chw)
    assert (tmp_path / "a.flo").read_bytes() == (tmp_path / "b.flo").read_bytes()
    assert np.array_equal(read_flo(tmp_path / "a.flo"), flow_chw)
