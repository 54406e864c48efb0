"""DIS flow accuracy on an analytic sub-pixel translation and on a real stereo pair; the estimator interface."""

import pickle

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from pipeline.errors import InputError
from pipeline.flow import ESTIMATORS, FlowEstimator, load_estimator
from pipeline.flow.dis import DIS_PRESETS, DISEstimator
from pipeline.flow.flo import read_flo
from pipeline.flow.warp import forward_backward_consistent

SHIFTS_PX = [(0.25, 0.5), (2.3, -1.7), (-5.6, 3.1), (10.4, -0.6), (-0.7, -7.3)]
SIZE_HW = (192, 256)
MARGIN_PX = 16  # pixels near the border see content that entered or left the frame; EPE is measured inside
# Bounds on the mean end-point error (px). Measured with OpenCV 5.0.0 on this data: translation max over the shifts
# ultrafast 0.13, fast 0.15, medium 0.065, fine 0.018; motorcycle ultrafast 3.77, fast 3.23, medium 2.63, fine 2.24.
SHIFT_EPE_BOUND = {"ultrafast": 0.25, "fast": 0.25, "medium": 0.1, "fine": 0.05}
STEREO_EPE_BOUND = {"ultrafast": 4.5, "fast": 4.5, "medium": 3.0, "fine": 2.6}
# Demo world (seed 0, one val snippet of two 512x256 frames), medium, non-occluded pixels: measured mean EPE 3.22 and
# 3.56 px, median 0.58 and 0.67 px, against a zero-flow EPE of 8.9 and 10.3 px. DIS fails on ~20% of the pixels
# (flat road and sky) and is sub-pixel elsewhere.
DEMO_MEAN_EPE_BOUND, DEMO_MEDIAN_EPE_BOUND = 4.0, 1.0
FB_ETA_PX = 0.5  # forward-backward tolerance that marks occluded pixels of the ground truth


def sinusoid_texture(size_hw, shift_xy=(0.0, 0.0), seed=0) -> np.ndarray:
    """uint8 RGB sum of 24 plane waves (wavelengths 4-40 px) evaluated at p - shift: the scene moved by shift_xy."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : size_hw[0], 0 : size_hw[1]].astype(np.float64)
    xs, ys = xs - shift_xy[0], ys - shift_xy[1]
    img = np.zeros(size_hw + (3,))
    for _ in range(24):
        wavelength, theta, phase = rng.uniform(4, 40), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        colour = rng.uniform(0.3, 1.0, 3)
        img += colour * np.sin(2 * np.pi / wavelength * (np.cos(theta) * xs + np.sin(theta) * ys) + phase)[..., None]
    return np.clip(np.rint((img + 12.0) * (255 / 24.0)), 0, 255).astype(np.uint8)  # |img| <= 24 * 1


def mean_epe(flow, truth, mask) -> float:
    """Mean end-point error over `mask` of (2, H, W) flows (truth may be a broadcastable (2, 1, 1) constant)."""
    return float(np.linalg.norm(flow - truth, axis=0)[mask].mean())


@pytest.fixture(scope="module")
def motorcycle():
    """The Middlebury 2014 motorcycle pair: left -> right flow is u = -disparity, v = 0; unknown disparity masked."""
    left, right, disparity = skimage.data.stereo_motorcycle()
    valid = np.isfinite(disparity)
    truth = np.zeros((2, *disparity.shape), np.float32)
    truth[0] = -np.where(valid, disparity, 0.0)
    return left, right, truth, valid


@pytest.mark.parametrize("preset", list(DIS_PRESETS))
def test_dis_recovers_a_subpixel_translation(preset):
    est = DISEstimator(preset)
    frame0 = sinusoid_texture(SIZE_HW)
    interior = np.zeros(SIZE_HW, bool)
    interior[MARGIN_PX:-MARGIN_PX, MARGIN_PX:-MARGIN_PX] = True
    for shift in SHIFTS_PX:
        flow = est.flows(frame0, sinusoid_texture(SIZE_HW, shift))
        assert flow.shape == (2, *SIZE_HW) and flow.dtype == np.float32
        assert mean_epe(flow, np.float32(shift).reshape(2, 1, 1), interior) < SHIFT_EPE_BOUND[preset], shift


@pytest.mark.parametrize("preset", list(DIS_PRESETS))
def test_dis_on_the_motorcycle_stereo_pair(motorcycle, preset):
    left, right, truth, valid = motorcycle
    epe = mean_epe(DISEstimator(preset).flows(left, right), truth, valid)
    zero_flow_epe = mean_epe(np.zeros_like(truth), truth, valid)  # 34.3 px: the mean disparity
    assert epe < STEREO_EPE_BOUND[preset] < 0.15 * zero_flow_epe


def test_dis_on_the_demo_world_ground_truth(tmp_path):
    from pipeline.world.world import WorldConfig, write_world

    config = WorldConfig(
        train_snippets=0, val_snippets=1, snippet_frames=2, annotated_index=0, viper_frames=0, synthia_frames=0
    )
    write_world(tmp_path, seed=0, config=config)
    city_root = tmp_path / "cityscapes"
    flo_paths = sorted((city_root / "flow_gt" / "val").glob("*/*.flo"))
    assert len(flo_paths) == 2  # both directions of the one pair
    est = DISEstimator("medium")
    for path in flo_paths:
        city, seq, a, b = path.stem.rsplit("_", 3)
        image_dir = city_root / "leftImg8bit_sequence" / "val" / city
        frames = [cv2.imread(str(image_dir / f"{city}_{seq}_{f}_leftImg8bit.png")) for f in (a, b)]
        truth, back = read_flo(path), read_flo(path.with_name(f"{city}_{seq}_{b}_{a}.flo"))
        visible = forward_backward_consistent(*(torch.from_numpy(f)[None] for f in (truth, back)), eta=FB_ETA_PX)
        visible = visible[0].numpy()
        flow = est.flows(*(cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames))
        error = np.linalg.norm(flow - truth, axis=0)[visible]
        zero_flow_epe = float(np.linalg.norm(truth, axis=0)[visible].mean())
        assert error.mean() < min(DEMO_MEAN_EPE_BOUND, 0.5 * zero_flow_epe), path.name
        assert np.median(error) < DEMO_MEDIAN_EPE_BOUND, path.name


def test_batch_is_the_loop_and_torch_path_matches(motorcycle):
    left, right = motorcycle[0][:96, :128], motorcycle[1][:96, :128]
    frames0 = np.stack([left, sinusoid_texture((96, 128))])
    frames1 = np.stack([right, sinusoid_texture((96, 128), (1.5, -0.5))])
    est = pickle.loads(pickle.dumps(load_estimator("dis", preset="fast")))  # as shipped to a Ray worker
    assert isinstance(est, FlowEstimator) and est.name == "dis" and est.checkpoint_sha256 is None
    assert est.options == {"preset": "fast"}
    batch = est.flows(frames0, frames1)
    assert batch.shape == (2, 2, 96, 128) and batch.dtype == np.float32
    for i in range(2):
        np.testing.assert_allclose(batch[i], est.flows(frames0[i], frames1[i]), atol=1e-5)
    # The public numpy call: the same flows with the components last.
    np.testing.assert_array_equal(est(frames0, frames1), batch.transpose(0, 2, 3, 1))
    assert est(frames0[0], frames1[0]).shape == (96, 128, 2)
    as_tensor = torch.from_numpy(frames0).permute(0, 3, 1, 2).float(), torch.from_numpy(frames1).permute(0, 3, 1, 2)
    flow_t = est.estimate_torch(as_tensor[0], as_tensor[1].double())
    assert flow_t.shape == (2, 2, 96, 128) and flow_t.dtype == torch.float32
    np.testing.assert_allclose(flow_t.numpy(), batch, atol=1e-5)


def test_bad_frames_raise_input_error():
    est = DISEstimator("ultrafast")
    frame = sinusoid_texture((32, 48))
    with pytest.raises(InputError, match="one size"):
        est(frame, sinusoid_texture((32, 40)))
    with pytest.raises(InputError, match="uint8 RGB"):
        est(frame.astype(np.float32), frame)
    with pytest.raises(InputError, match="uint8 RGB"):
        est(frame, frame[..., 0])


def test_load_estimator_errors():
    assert ESTIMATORS.names() == ("dis", "flownet2")
    with pytest.raises(InputError, match="^--flow flownet2 needs --flow-ckpt FlowNet2_checkpoint.pth.tar$"):
        load_estimator("flownet2")
    with pytest.raises(InputError, match="^--flow raft: expected one of dis, flownet2$"):
        load_estimator("raft")
    with pytest.raises(InputError, match="takes no checkpoint"):
        load_estimator("dis", checkpoint="FlowNet2_checkpoint.pth.tar")
    with pytest.raises(InputError, match="^--dis-preset slow: expected one of ultrafast, fast, medium, fine$"):
        load_estimator("dis", preset="slow")
    with pytest.raises(InputError, match="DIS preset 'slow'"):  # the class checks its own argument too
        DISEstimator("slow")
    with pytest.raises(InputError, match="unknown option"):
        load_estimator("dis", finest_scale=0)
