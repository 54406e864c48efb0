"""The built-in demo world: layouts read back by the real readers, determinism, exact ground-truth flow."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from flow_checks import warp_with_mask

from pipeline.errors import InputError
from pipeline.flow.flo import read_flo
from pipeline.flow.warp import forward_backward_consistent, warp
from pipeline.sources import cityscapes, synthia, viper
from pipeline.sources.images import read_palette_png, read_png_unchanged, read_rgb
from pipeline.sources.protocols import IGNORE_ID, SYNTHIA11, VIPER15
from pipeline.world import WorldConfig, write_world
from pipeline.world.camera import Pinhole, Pose, Trajectory
from pipeline.world.classes import WorldClass
from pipeline.world.command import demo_world
from pipeline.world.flow_gt import ground_truth_flow
from pipeline.world.raycast import GROUND, SKY, ego_mask, trace
from pipeline.world.render import paint
from pipeline.world.shots import draw_shot
from pipeline.world.street import build_street
from pipeline.world.styles import camera_style

TINY = WorldConfig(
    target_size_wh=(256, 128),
    viper_size_wh=(112, 64),
    synthia_size_wh=(96, 64),
    train_snippets=1,
    val_snippets=1,
    snippet_frames=6,
    annotated_index=3,
    viper_sequences=2,
    viper_frames=4,
    synthia_frames=3,
)
# Ids each dataset defines for the classes the world contains (the datasets' published label tables, Cityscapes labels).
CITYSCAPES_IDS = {1, 7, 8, 11, 13, 17, 19, 20, 21, 22, 23, 24, 26}
VIPER_IDS = {2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 14, 20, 24}
SYNTHIA_IDS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return out, write_world(out, seed=0, config=TINY)


def _tree_bytes(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _torch(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (1, C, H, W) float tensor."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]


def _flow_torch(flow: np.ndarray) -> torch.Tensor:
    """(2, H, W) flow -> (1, 2, H, W) float tensor."""
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32))[None]


def test_cityscapes_tree_reads_back(world):
    out, summary = world
    root = out / "cityscapes"
    for split in ("train", "val"):
        (record,) = cityscapes.list_annotated(root, split)
        numbers = [n for n, _ in record.snippet]
        assert len(numbers) == TINY.snippet_frames and numbers == list(range(numbers[0], numbers[0] + 6))
        assert record.frame == numbers[0] + TINY.annotated_index
        assert read_rgb(record.image_path).shape == (128, 256, 3)
        label_ids = read_png_unchanged(record.label_path)
        assert label_ids.dtype == np.uint8 and label_ids.shape == (128, 256)
        assert set(np.unique(label_ids)) <= CITYSCAPES_IDS and {7, 11, 23} <= set(np.unique(label_ids))
        train_ids = cityscapes.read_label(record.label_path, VIPER15)
        assert np.array_equal(train_ids == IGNORE_ID, np.isin(label_ids, [1, 17]))  # ego vehicle, pole
        assert len(cityscapes.list_pairs(root, split, "all")) == TINY.snippet_frames - 1
    flows = sorted((root / "flow_gt" / "val").rglob("*.flo"))
    assert len(flows) == 2 * (TINY.snippet_frames - 1) == summary["counts"]["target_flows"]
    assert not (root / "flow_gt" / "train").exists()  # only with --train-flow


def test_viper_tree_reads_back_with_ego_car(world):
    out, summary = world
    records = viper.list_samples(out / "viper")
    assert [r.key for r in records] == ["viper_001_00010", "viper_001_00020", "viper_002_00010", "viper_002_00020"]
    for record in records:
        assert record.image_path.endswith(".jpg") and read_rgb(record.image_path).shape == (64, 112, 3)
        ids = read_palette_png(record.label_path)
        assert set(np.unique(ids)) <= VIPER_IDS
        assert ids[-1, 112 // 2] == 24  # the ego car touches the bottom centre, as in the real data
        train_ids = viper.read_label(record.label_path, VIPER15)
        assert train_ids[-1, 112 // 2] == IGNORE_ID and (train_ids == 0).any()  # ego removed, road kept


def test_synthia_tree_reads_back(world):
    out, summary = world
    records = synthia.list_samples(out / "synthia" / "SYNTHIA-SEQS-04-DAWN")
    assert [r.key for r in records] == ["synthia_000000", "synthia_000001", "synthia_000002"]
    for record in records:
        raw = read_png_unchanged(record.label_path)
        assert raw.dtype == np.uint16 and raw.shape == (64, 96, 3)
        class_ids, instance = raw[..., 2], raw[..., 1]
        assert set(np.unique(class_ids)) <= SYNTHIA_IDS and (raw[..., 0] == 0).all()
        assert (instance[~np.isin(class_ids, [8, 10])] == 0).all()  # instances only on cars and pedestrians
        train_ids = synthia.read_label(record.label_path, SYNTHIA11)
        assert np.array_equal(train_ids == IGNORE_ID, np.isin(class_ids, [5, 12]))  # fence, lane marking


def test_summary_and_contact_sheet(world):
    out, summary = world
    on_disk = json.loads((out / "world.json").read_text())
    assert on_disk["seed"] == 0 and on_disk["config"]["snippet_frames"] == 6
    assert summary["counts"] == {
        "target_frames": 12,
        "target_labels": 2,
        "target_flows": 10,
        "viper_frames": 4,
        "synthia_frames": 3,
    }
    for protocol in ("viper15", "synthia11"):
        for domain in ("source", "target"):
            assert sum(on_disk["class_share"][protocol][domain].values()) == pytest.approx(1.0, abs=1e-3)
    # the target share is what the labels on disk hold
    labels = [
        read_png_unchanged(r.label_path)
        for s in ("train", "val")
        for r in cityscapes.list_annotated(out / "cityscapes", s)
    ]
    road = np.mean([np.mean(label == 7) for label in labels])
    assert on_disk["class_share"]["viper15"]["target"]["road"] == pytest.approx(road, abs=1e-4)
    assert read_rgb(out / "contact_sheet.png").shape[2] == 3


def test_same_seed_same_bytes_other_seed_other_world(world, tmp_path):
    out, _ = world
    write_world(tmp_path / "again", seed=0, config=TINY)
    first, again = _tree_bytes(out), _tree_bytes(tmp_path / "again")
    assert first.keys() == again.keys() and all(first[k] == again[k] for k in first)
    write_world(tmp_path / "other", seed=1, config=TINY)
    other = _tree_bytes(tmp_path / "other")
    images = [k for k in first if k.endswith(("_leftImg8bit.png", ".jpg"))]
    assert sum(first[k] != other.get(k) for k in images) == len(images)


def test_ground_truth_flow_warps_next_frame_onto_frame(world):
    """W(I_{f+1}, F_{f->f+1}) matches I_f on pixels that pass the forward-backward check; zero flow does not."""
    root = world[0] / "cityscapes"
    (record,) = cityscapes.list_annotated(root, "val")
    for (fa, path_a), (fb, path_b) in zip(record.snippet[:-1], record.snippet[1:]):
        stem = f"{record.city}_{record.seq}"
        flow_ab = _flow_torch(read_flo(root / "flow_gt" / "val" / record.city / f"{stem}_{fa:06d}_{fb:06d}.flo"))
        flow_ba = _flow_torch(read_flo(root / "flow_gt" / "val" / record.city / f"{stem}_{fb:06d}_{fa:06d}.flo"))
        image_a, image_b = _torch(read_rgb(path_a)), _torch(read_rgb(path_b))
        warped, inside = warp_with_mask(image_b, flow_ab)
        visible = forward_backward_consistent(flow_ab, flow_ba, eta=0.5)[0] & (inside[0, 0] > 0)
        assert visible.float().mean() > 0.7
        error = (warped - image_a).abs().mean(1)[0][visible].mean()
        error_zero = (image_b - image_a).abs().mean(1)[0][visible].mean()
        assert error < 0.75 * error_zero, (error, error_zero)


def test_flow_moves_texture_exactly_without_sensor_noise():
    """Noise-free camera-style frames: textures ride on the surfaces, so the warp error is tiny except at edges."""
    style = camera_style(1.0)
    shot = draw_shot(np.random.default_rng(7), (256, 128), 60.0, 1.0, 0.1, style)
    t0, t1 = 0.3, 0.3 + 1 / 17
    pose0, pose1 = shot.trajectory.pose(t0), shot.trajectory.pose(t1)
    gb0 = trace(shot.cam, pose0, t0, shot.street, 12, shot.ego)
    gb1 = trace(shot.cam, pose1, t1, shot.street, 12, shot.ego)
    flow_01 = _flow_torch(ground_truth_flow(shot.cam, shot.street, gb0, pose0, t0, pose1, t1))
    flow_10 = _flow_torch(ground_truth_flow(shot.cam, shot.street, gb1, pose1, t1, pose0, t0))
    image0, image1 = _torch(paint(gb0, style, shot.look)), _torch(paint(gb1, style, shot.look))
    warped, inside = warp_with_mask(image1, flow_01)
    visible = forward_backward_consistent(flow_01, flow_10, eta=0.5)[0] & (inside[0, 0] > 0)
    error = (warped - image0).abs().mean(1)[0][visible]
    error_zero = (image1 - image0).abs().mean(1)[0][visible]
    assert error.median() < 0.5 and error.mean() < 0.35 * error_zero.mean(), (error.mean(), error_zero.mean())
    moving = torch.from_numpy(np.isin(gb0.cls, [WorldClass.CAR, WorldClass.PERSON]))[visible]
    assert moving.any()


def test_flow_lands_on_the_same_surface_point():
    """Following F_{0->1}, every pixel finds in frame 1 the same surface at the same surface coordinates.

    Surface coordinates (metres along a wall or car side and height; X, Z on the ground) are intrinsic to each
    surface and move with it, so this checks camera motion, object motion and projection at once.
    """
    shot = draw_shot(np.random.default_rng(5), (256, 128), 60.0, 1.0, 0.1, camera_style(1.0))
    t0, t1 = 0.3, 0.3 + 1 / 17
    pose0, pose1 = shot.trajectory.pose(t0), shot.trajectory.pose(t1)
    gb0 = trace(shot.cam, pose0, t0, shot.street, 12, shot.ego)
    gb1 = trace(shot.cam, pose1, t1, shot.street, 12, shot.ego)
    flow_01 = _flow_torch(ground_truth_flow(shot.cam, shot.street, gb0, pose0, t0, pose1, t1)).double()
    # Bilinear samples of the surface id and its square equal id and id^2 only if every neighbour used is that id.
    code0, code1 = gb0.sprite.astype(np.float64), gb1.sprite.astype(np.float64)
    code_w = warp(torch.from_numpy(np.stack([code1, code1**2]))[None], flow_01, padding="zeros")[0].numpy()
    same = (np.abs(code_w[0] - code0) < 1e-6) & (np.abs(code_w[1] - code0**2) < 1e-3)
    tex_w = warp(torch.from_numpy(gb1.tex_m.astype(np.float64)).permute(2, 0, 1)[None], flow_01)[0].numpy()
    error_m = np.abs(tex_w.transpose(1, 2, 0) - gb0.tex_m).max(axis=-1)
    moving = (gb0.sprite >= 0) & (np.abs(shot.street.sprites.vel_xz[np.maximum(gb0.sprite, 0)]).sum(-1) > 0)
    for region, min_pixels in ((gb0.sprite >= 0, 5000), (moving, 500), (gb0.sprite == GROUND, 3000)):
        errors = error_m[same & region]
        assert len(errors) > min_pixels
        assert np.median(errors) < 2e-3 and np.percentile(errors, 95) < 0.05, np.percentile(errors, [50, 95])
    assert np.abs(error_m[same & (gb0.sprite == SKY)]).max() < 1e-4


def _rotation(yaw: float) -> np.ndarray:
    """World (X right, Y up, Z ahead) -> camera (x right, y down, z forward) for a camera yawed by `yaw`."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, -s], [0.0, -1.0, 0.0], [s, 0.0, c]])


def _intrinsics(cam: Pinhole) -> np.ndarray:
    return np.array([[cam.focal_px, 0, cam.center_uv[0]], [0, cam.focal_px, cam.center_uv[1]], [0, 0, 1.0]])


def test_static_ground_flow_is_the_pinhole_projection():
    """Ground pixels: unproject onto Y = 0 with K and R, move the camera, project again (closed form)."""
    cam = Pinhole.from_fov((64, 128), 60.0, 1.45, 0.45)
    trajectory = Trajectory(1.7, 20.0, 9.0, 0.5, 0.2, math.radians(2.0), 4.0, 0.7)
    street = build_street(np.random.default_rng(3), trajectory, 1.0)
    pose_a, pose_b = trajectory.pose(0.2), trajectory.pose(0.2 + 1 / 17)
    gbuffer = trace(cam, pose_a, 0.2, street, 12, ego_mask(cam.size_hw, 0.0))
    flow = ground_truth_flow(cam, street, gbuffer, pose_a, 0.2, pose_b, 0.2 + 1 / 17)
    v, u = np.nonzero(gbuffer.sprite == GROUND)
    assert len(u) > 500
    k = _intrinsics(cam)
    centre_a = np.array([pose_a.x, cam.height_m, pose_a.z])
    centre_b = np.array([pose_b.x, cam.height_m, pose_b.z])
    rays = _rotation(pose_a.yaw).T @ np.linalg.inv(k) @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)
    points = centre_a[:, None] + rays * (-centre_a[1] / rays[1])  # on the plane Y = 0
    seen = k @ _rotation(pose_b.yaw) @ (points - centre_b[:, None])
    expected = np.stack([seen[0] / seen[2] - u, seen[1] / seen[2] - v], axis=-1)
    np.testing.assert_allclose(flow[:, v, u].T, expected, atol=1e-3)
    assert np.abs(expected).max() > 1.0  # the camera did move


def test_sky_flow_is_a_pure_rotation():
    """Sky pixels (at infinity) move only with the camera's yaw: u' = K R_b R_a^T K^-1 u."""
    cam = Pinhole.from_fov((64, 128), 60.0, 1.45, 0.45)
    trajectory = Trajectory(1.7, 20.0, 9.0, 0.0, 0.0, math.radians(3.0), 2.0, 0.0)
    street = build_street(np.random.default_rng(4), trajectory, 1.0)
    pose_a, pose_b = trajectory.pose(0.3), Pose(12.0, 99.0, trajectory.pose(0.45).yaw)  # position is irrelevant
    gbuffer = trace(cam, pose_a, 0.3, street, 12, ego_mask(cam.size_hw, 0.0))
    flow = ground_truth_flow(cam, street, gbuffer, pose_a, 0.3, pose_b, 0.45)
    v, u = np.nonzero(gbuffer.sprite == SKY)
    assert len(u) > 100
    k = _intrinsics(cam)
    homography = k @ _rotation(pose_b.yaw) @ _rotation(pose_a.yaw).T @ np.linalg.inv(k)
    seen = homography @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)
    expected = np.stack([seen[0] / seen[2] - u, seen[1] / seen[2] - v], axis=-1)
    np.testing.assert_allclose(flow[:, v, u].T, expected, atol=1e-3)
    assert np.abs(expected[:, 0]).max() > 0.5


def test_command_writes_a_world_and_refuses_bad_options(tmp_path):
    runner = CliRunner()
    options = [
        "--target-size",
        "64x32",
        "--viper-size",
        "56x32",
        "--synthia-size",
        "48x32",
        "--train-snippets",
        "1",
        "--val-snippets",
        "1",
        "--snippet-frames",
        "3",
        "--annotated-index",
        "1",
        "--viper-sequences",
        "1",
        "--viper-frames",
        "1",
        "--synthia-frames",
        "1",
        "--train-flow",
    ]
    result = runner.invoke(demo_world, ["--out", str(tmp_path / "w"), "--seed", "5", *options])
    assert result.exit_code == 0, result.output
    assert "cityscapes 6 frames, 2 labels, 8 ground-truth flows" in result.output
    assert json.loads((tmp_path / "w" / "world.json").read_text())["seed"] == 5
    again = runner.invoke(demo_world, ["--out", str(tmp_path / "w"), *options])
    assert isinstance(again.exception, InputError) and "--overwrite" in str(again.exception)
    assert runner.invoke(demo_world, ["--out", str(tmp_path / "w"), "--overwrite", *options]).exit_code == 0
    bad = runner.invoke(demo_world, ["--out", str(tmp_path / "x"), "--snippet-frames", "6"])
    assert isinstance(bad.exception, InputError) and "--annotated-index 19" in str(bad.exception)
    bad = runner.invoke(demo_world, ["--out", str(tmp_path / "x"), "--target-size", "64by32"])
    assert isinstance(bad.exception, InputError) and "--target-size" in str(bad.exception)
    bad = runner.invoke(demo_world, ["--out", str(tmp_path / "x"), "--style-gap", "1.5"])
    assert isinstance(bad.exception, InputError) and "--style-gap" in str(bad.exception)
    bad = runner.invoke(demo_world, ["--out", str(tmp_path / "x"), "--seed", "-1"])
    assert isinstance(bad.exception, InputError) and "--seed" in str(bad.exception)
    assert not (tmp_path / "x").exists()  # nothing is written before the options are checked


def test_colour_gap_moves_only_the_surface_colours():
    from pipeline.world.styles import camera_style, game_style

    full, game = camera_style(1.0), game_style()
    colours_kept = camera_style(1.0, colour_gap=0.0)
    assert np.array_equal(colours_kept.palette, game.palette) and np.array_equal(colours_kept.parts, game.parts)
    assert colours_kept.noise == full.noise and colours_kept.blur_px == full.blur_px  # the sensor stays the camera's
    halfway = camera_style(1.0, colour_gap=0.5)
    assert np.allclose(halfway.palette, (game.palette + full.palette) / 2)
