"""The world's ImageNet analog and `i2vda-pretrain`: random looks, crops labelled with the classes they show, and an
init that `--init` reads exactly as it reads the DeepLab-v2 ImageNet file (classifier left at its random init)."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.world import WorldConfig, write_world
from pipeline.world.classes import WorldClass
from pipeline.world.imagenet_analog import ANALOG_DIR, CLASS_NAMES, CROP_PX, PRESENT_SHARE, crops_of
from pipeline.world.styles import N_OPTIONS, RANDOM_LOOK, RANDOM_SATURATION, RANDOM_VALUE, camera_style, random_style
from trainer.experiment.pretrain import average_precision, pretrain, record_path
from trainer.models import build_segmenter, load_deeplab_imagenet
from trainer.models.weights import CLASSIFIER_PREFIXES
from trainer.training.config import TrainConfig
from trainer.training.networks import build_nets

pytestmark = pytest.mark.usefixtures("one_thread")


def test_random_looks_are_hsv_colours_in_their_ranges_and_differ_from_the_domains():
    style = random_style(np.random.default_rng(5))
    rng = np.random.default_rng(5)  # the same draws, converted by the standard library
    for table in ("palette", "parts"):
        count = getattr(style, table).shape[0]
        h, s, v = (
            rng.uniform(0, 1, (count, N_OPTIONS)),
            rng.uniform(*RANDOM_SATURATION, (count, N_OPTIONS)),
            rng.uniform(*RANDOM_VALUE, (count, N_OPTIONS)),
        )
        expected = [[colorsys.hsv_to_rgb(h[i, j], s[i, j], v[i, j]) for j in range(N_OPTIONS)] for i in range(count)]
        np.testing.assert_allclose(getattr(style, table), 255 * np.array(expected), atol=1e-9)
    for name, (low, high) in RANDOM_LOOK.items():
        assert low <= getattr(style, name) <= high
    assert not np.allclose(style.palette, camera_style(1.0).palette)
    assert not np.allclose(style.palette, camera_style(0.0).palette)  # the game look
    assert not np.allclose(style.palette, random_style(np.random.default_rng(6)).palette)


def test_a_crop_is_labelled_with_every_class_covering_its_share_of_the_window():
    h, w = 40, 80
    cls = np.full((h, w), WorldClass.ROAD, np.uint8)
    cls[:10] = WorldClass.SKY
    cls[12:14, 30:32] = WorldClass.LIGHT  # 4 pixels: shown only in windows where 4 >= PRESENT_SHARE * side^2
    cls[20:, 60:] = WorldClass.EGO  # never a label
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for crop, shown, (y, x, side) in crops_of(rgb, cls, np.random.default_rng(1)):
        assert crop.shape == (CROP_PX, CROP_PX, 3)
        expected = []
        for c, name in zip([c for c in WorldClass if c != WorldClass.EGO], CLASS_NAMES):
            pixels = sum(int(cls[i, j]) == c for i in range(y, y + side) for j in range(x, x + side))
            if pixels >= PRESENT_SHARE * side * side:
                expected.append(name)
        assert shown == expected and "ego" not in shown
        window = cv2.resize(rgb[y : y + side, x : x + side], (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA)
        assert np.array_equal(crop, window)


def _analog(root: Path, pictures: int = 16) -> Path:
    config = WorldConfig(
        target_size_wh=(64, 32),
        train_snippets=0,
        val_snippets=1,
        snippet_frames=2,
        annotated_index=1,
        viper_frames=0,
        synthia_frames=0,
        analog_pictures=pictures,
        analog_size_wh=(64, 32),
    )
    write_world(root, seed=4, config=config)
    return root / ANALOG_DIR


def test_the_analog_is_an_imagenet_like_folder_split_and_reproducible(tmp_path):
    data = _analog(tmp_path / "a")
    assert json.loads((data / "classes.json").read_text()) == list(CLASS_NAMES)
    train = json.loads((data / "train" / "labels.json").read_text())
    val = json.loads((data / "val" / "labels.json").read_text())
    assert (len(train), len(val)) == (14 * 6, 2 * 6)  # pictures 7 and 15 (one in 8) go to val, 6 crops each
    for split, table in (("train", train), ("val", val)):
        for name, shown in table.items():
            assert set(shown) <= set(CLASS_NAMES)
            assert cv2.imread(str(data / split / name)).shape == (CROP_PX, CROP_PX, 3)
    again = _analog(tmp_path / "b")
    for name in list(train)[:5]:
        assert (data / "train" / name).read_bytes() == (again / "train" / name).read_bytes()


def test_the_pretrained_init_loads_through_init_as_the_deeplab_imagenet_file(tmp_path):
    data = _analog(tmp_path / "world", pictures=8)
    init = tmp_path / "init.pth"
    record = pretrain(data, init, "deeplab_tiny", iters=3, batch_size=4, lr=0.01, seed=0)
    assert json.loads(record_path(init).read_text()) == record and record["train_crops"] == 7 * 6
    state = torch.load(init, weights_only=True)
    backbone = {k for k in build_segmenter("deeplab_tiny", 15).state_dict() if not k.startswith(CLASSIFIER_PREFIXES)}
    assert set(state) == {f"Scale.{k}" for k in backbone}  # the DeepLab file's key layout, no segmentation head
    trained = build_segmenter("deeplab_tiny", 15).state_dict()
    assert not all(torch.equal(state[f"Scale.{k}"], trained[k]) for k in backbone)  # it learnt something
    # i2vda-train's path: TrainConfig --init FILE --init-format deeplab -> build_nets -> the DeepLab loader.
    config = TrainConfig(out=str(tmp_path / "run"), arch="deeplab_tiny", protocol="viper15", init=str(init), seed=9)
    model = build_nets(config, torch.device("cpu"), distributed=False).model.state_dict()
    torch.manual_seed(9)
    random_head = build_segmenter("deeplab_tiny", 15).state_dict()
    for key, value in model.items():
        if key.startswith(CLASSIFIER_PREFIXES):
            assert torch.equal(value, random_head[key]), key  # the classifier keeps its random init
        else:
            assert torch.equal(value, state[f"Scale.{key}"]), key
    fresh = build_segmenter("deeplab_tiny", 15)
    load_deeplab_imagenet(fresh, init)  # the same loader as the published file
    assert all(torch.equal(fresh.state_dict()[k], state[f"Scale.{k}"]) for k in backbone)


def test_average_precision_by_hand():
    # Ranked: hit, miss, hit, miss -> precisions at the hits 1/1 and 2/3 -> AP = 5/6.
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.1, 0.9]), np.array([1, 0])) == pytest.approx(0.5)
    assert np.isnan(average_precision(np.array([0.3, 0.2]), np.array([0, 0])))
