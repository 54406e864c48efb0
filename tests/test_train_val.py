"""`i2vda-train --val STORE --val-interval N`: M scored on a val store while training, without changing the run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_eval_cli import make_store
from test_train_loop import load, make_stores, read_log, same_state, tiny_config

from pipeline.errors import InputError
from trainer.training.checkpoint import checkpoint_path
from trainer.training.config import RESUMABLE_FIELDS
from trainer.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")
MAX_ITER = 4


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="module")
def val_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("val") / "cityscapes_val", np.random.default_rng(3))


def _run(stores, out, **overrides):
    config = tiny_config(stores, out, method="adv_only", max_iter=MAX_ITER, checkpoint_interval=2, **overrides)
    return train(config)


def test_validation_leaves_the_run_bit_identical_and_logs_miou(stores, val_store, tmp_path):
    _run(stores, tmp_path / "plain")
    result = _run(stores, tmp_path / "val", val=str(val_store), val_interval=3)
    for done in (2, MAX_ITER):
        a = load(checkpoint_path(tmp_path / "plain", done))
        b = load(checkpoint_path(tmp_path / "val", done))
        for part in ("model", "disc"):  # weights and BN running statistics
            assert same_state(a[part], b[part]), (done, part)
        assert a["opt_seg"]["state"].keys() == b["opt_seg"]["state"].keys()
        assert all(
            torch.equal(a["opt_seg"]["state"][k]["momentum_buffer"], b["opt_seg"]["state"][k]["momentum_buffer"])
            for k in a["opt_seg"]["state"]
        )
        assert [r["torch"] for r in a["rng"]] != [] and all(
            torch.equal(ra["torch"], rb["torch"]) for ra, rb in zip(a["rng"], b["rng"], strict=True)
        )
    assert result["model"].training and all(m.training for m in result["model"].modules())
    plain_log = read_log(tmp_path / "plain")
    val_log = read_log(tmp_path / "val")
    scored = [e for e in val_log if "val_miou" in e]
    assert [e["iteration"] for e in scored] == [2, MAX_ITER - 1]  # after 3 iterations and at the end
    for entry in scored:
        assert 0.0 <= entry["val_miou"] <= 100.0 and len(entry["val_per_class"]) == 15
        known = [v for v in entry["val_per_class"].values() if v is not None]
        assert math.isclose(entry["val_miou"], sum(known) / len(known), rel_tol=1e-9)
    losses = [{k: v for k, v in e.items() if k.startswith("loss_")} for e in val_log if "val_miou" not in e]
    assert losses == [{k: v for k, v in e.items() if k.startswith("loss_")} for e in plain_log]
    assert not any("val_miou" in e for e in plain_log)


def test_validation_keeps_the_modes_and_bn_statistics_of_m(stores, val_store, tmp_path):
    from trainer.models import build_segmenter
    from trainer.training.monitor import Monitor

    config = tiny_config(stores, tmp_path / "run", val=str(val_store), val_interval=1, max_iter=2, protocol="viper15")
    model = build_segmenter("deeplab_tiny", 15).train()
    model.layer1.eval()  # a submodule left in eval mode on purpose must stay so
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monitor = Monitor(config, 0, enabled=True, device="cpu")
    try:
        assert monitor.validate(0, model)["iteration"] == 0
    finally:
        monitor.close()
    assert same_state(before, model.state_dict())
    assert model.training and not model.layer1.training and not any(m.training for m in model.layer1.modules())


def test_val_settings_are_resumable_and_checked(stores, tmp_path):
    assert {"val", "val_interval"} <= set(RESUMABLE_FIELDS)
    with pytest.raises(InputError, match="--val-interval 5: .* --val is not given"):
        tiny_config(stores, tmp_path / "run", val_interval=5)
    with pytest.raises(InputError, match="--val-interval -1"):
        tiny_config(stores, tmp_path / "run", val="x", val_interval=-1)
    with pytest.raises(InputError, match="no val store here"):
        _run(stores, tmp_path / "missing", val=str(tmp_path / "nowhere"))
