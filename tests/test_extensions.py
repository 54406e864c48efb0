"""Adding a flow estimator or a labelled dataset takes one new module and one registration: a toy of each, written and
registered here, goes through `i2vda-prep` (its Ray job), `i2vda-train` and `i2vda-predict --tc` untouched."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
import torch
from prep_trees import write_cityscapes

from pipeline.cli import main as prep_main
from pipeline.flow import ESTIMATORS, EstimatorEntry, EstimatorOption, FlowEstimator
from pipeline.flow.interface import frames_batch
from pipeline.shards import open_store, read_samples
from pipeline.sources import SOURCES, SourceDataset, SourceRecord, make_protocol
from trainer.evaluation.predict_cli import cli as predict_cli
from trainer.training.config import TrainConfig
from trainer.training.loop import train

SIZE_HW = (32, 64)
SHIFT_PX = 1.5  # the toy estimator's flow: every pixel moves this far right


# ---- the new module of a flow estimator: a constant flow (SHIFT_PX, 0), counting its calls
class ToyEstimator(FlowEstimator):
    name = "toy"
    checkpoint_sha256 = None
    calls = {"numpy": 0, "torch": 0}  # class-wide: what the online flow of training and predict's TC asked for

    def __init__(self, shift_px: float = 0.0):
        self.options = {"shift_px": shift_px}

    def flows(self, frames0, frames1):
        batch0, single = frames_batch(frames0, "frames0")
        ToyEstimator.calls["numpy"] += 1
        flows = np.zeros((len(batch0), 2, *batch0.shape[1:3]), np.float32)
        flows[:, 0] = self.options["shift_px"]
        return flows[0] if single else flows

    def estimate_torch(self, img0, img1):
        ToyEstimator.calls["torch"] += 1
        flows = torch.zeros(img0.shape[0], 2, *img0.shape[2:], device=img0.device)
        flows[:, 0] = self.options["shift_px"]
        return flows


def _build_toy(checkpoint, device, **options):
    return ToyEstimator(**options)


# ---- the new module of a labelled dataset: root/img/<n>.png and root/lbl/<n>.png holding ids 0..2
TOY3 = make_protocol("toy3", "toyset", ("road", "sky", "car"), range(3), [(0, 0), (1, 1), (2, 2)], [(7, 0), (23, 1)])


def _list_toyset(root) -> list[SourceRecord]:
    root = Path(root)
    return [
        SourceRecord(f"toy_{p.stem}", str(p), str(root / "lbl" / p.name), f"img/{p.name}", f"lbl/{p.name}")
        for p in sorted((root / "img").glob("*.png"))
    ]


def _read_toy_label(path, protocol) -> np.ndarray:
    return protocol.source_lut()[cv2.imread(str(path), cv2.IMREAD_UNCHANGED)]


# ---- the registrations (one each), undone after the test
@pytest.fixture
def registered():
    toy = EstimatorEntry("toy", "a constant flow", _build_toy, options=(EstimatorOption("shift_px", SHIFT_PX),))
    toyset = SourceDataset("toyset", "Toyset", _list_toyset, _read_toy_label, (64, 32), "the folder of img/", (TOY3,))
    ESTIMATORS.register(toy)
    SOURCES.register(toyset)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import a test module
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, _temp_dir=temp)
    try:
        yield
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ESTIMATORS.unregister("toy")
        SOURCES.unregister("toyset")


def _write_toyset(root: Path, count: int, rng) -> dict[str, np.ndarray]:
    labels = {}
    for folder in ("img", "lbl"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        label = rng.integers(0, 3, SIZE_HW).astype(np.uint8)
        image = np.stack([label * 100] * 3, axis=-1).astype(np.uint8)  # the class sets the grey level
        cv2.imwrite(str(root / "img" / f"{i:03d}.png"), image)
        cv2.imwrite(str(root / "lbl" / f"{i:03d}.png"), label)
        labels[f"toy_{i:03d}"] = label
    return labels


def test_a_registered_estimator_and_dataset_go_through_prep_train_and_predict(registered, tmp_path, one_thread):
    rng = np.random.default_rng(0)
    city, stores = tmp_path / "cityscapes", tmp_path / "stores"
    write_cityscapes(city, "train", [("aachen", "000000", 0, 4, None)], SIZE_HW)
    labels = _write_toyset(tmp_path / "toyset", 4, rng)

    common = ["--out", str(stores), "--size", "64x32", "--workers", "1"]
    assert prep_main(["flows", "--root", str(city), "--flow", "toy", *common]) is None
    assert prep_main(["source", "--src", "toyset", "--root", str(tmp_path / "toyset"), *common]) is None

    target, source = open_store(stores / "cityscapes_seq"), open_store(stores / "toyset")
    assert (target.estimator, dict(target.estimator_options)) == ("toy", {"shift_px": SHIFT_PX})
    assert source.protocol == "toy3" and source.num_samples == 4
    pairs = list(read_samples(stores / "cityscapes_seq"))
    assert len(pairs) == 3
    for pair in pairs:  # the toy's flow, both ways, through the codec (1/64 px steps: exact for 1.5)
        assert np.all(pair["flow01"][0] == SHIFT_PX) and np.all(pair["flow01"][1] == 0)
        assert np.all(pair["flow10"][0] == SHIFT_PX) and np.all(pair["flow10"][1] == 0)  # the toy's constant
    for sample in read_samples(stores / "toyset"):
        assert np.array_equal(sample["label"], labels[sample["__key__"]])  # ids through toy3's table (identity)

    run = tmp_path / "run"
    config = TrainConfig(
        out=str(run),
        shards=str(stores),
        source="toyset",
        arch="deeplab_tiny",
        disc_width=8,
        max_iter=2,
        iter_copy=1,
        iter_launch=0,
        delta=1.0,
        device="cpu",
        num_workers=0,
        shuffle_buffer=2,
        block_iters=2,
    )
    torch_calls = ToyEstimator.calls["torch"]
    result = train(config)
    assert ToyEstimator.calls["torch"] == torch_calls + 2  # F(I1, It) of Eq. 5 at both iterations
    saved = json.loads((run / "config.json").read_text())
    assert (saved["protocol"], saved["flow_estimator"], saved["num_classes"]) == ("toy3", "toy", 3)

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:02d}.png"), rng.integers(0, 256, (*SIZE_HW, 3), dtype=np.uint8))
    numpy_calls = ToyEstimator.calls["numpy"]
    args = ["--ckpt", result["checkpoint"], "--input", str(frames), "--out", str(tmp_path / "pred")]
    predict_cli.main([*args, "--device", "cpu", "--tc", "--flow", "toy"], standalone_mode=False)
    summary = json.loads((tmp_path / "pred" / "predict.json").read_text())
    assert (summary["protocol"], summary["flow"], summary["tc_pairs"]) == ("toy3", "toy", 2)
    assert ToyEstimator.calls["numpy"] > numpy_calls
