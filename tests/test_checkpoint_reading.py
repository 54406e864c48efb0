"""Reading a run back from its checkpoint (trainer/training/checkpoint.py): its settings as a TrainConfig, whatever
version wrote them, and `i2vda-eval --adapt-bn` reading each checkpoint once."""

import dataclasses

import numpy as np
import pytest
import torch
from test_eval_cli import constant_model, make_store, save_checkpoint
from test_train_loop import TARGET, make_stores

import trainer.evaluation.eval_cli as eval_cli
from pipeline.errors import InputError
from trainer.evaluation.evaluate import adapt_batchnorm, target_frames
from trainer.training.checkpoint import load_segmenter, saved_config
from trainer.training.config import TrainConfig


def test_a_config_of_an_older_or_newer_version_reads_back_as_a_train_config():
    written = TrainConfig(out="runs/a", arch="deeplab_tiny", protocol="synthia11", target_size_hw=(64, 128), delta=0.5)
    values = written.to_dict()
    del values["pl_select"]  # a setting added after this checkpoint was written
    values["copy_schedule"] = "legacy"  # one this version no longer has
    config = saved_config(values, "--ckpt old.pt")
    assert config == dataclasses.replace(written, pl_select=TrainConfig(out="x").pl_select)
    assert config.num_classes == 11 and config.target_size_hw == (64, 128)
    # The four settings eval needs are enough; `out` is then unknown.
    minimal = {"arch": "deeplab_tiny", "num_classes": 15, "protocol": "viper15", "target_size_hw": [16, 32]}
    assert saved_config(minimal, "--ckpt m.pt") == TrainConfig(
        out="", arch="deeplab_tiny", protocol="viper15", target_size_hw=(16, 32)
    )
    with pytest.raises(InputError, match="^--ckpt m.pt: its config says 11 classes, but protocol viper15 has 15$"):
        saved_config({**minimal, "num_classes": 11}, "--ckpt m.pt")


def test_adapt_bn_reads_the_checkpoint_once_and_adapts_as_a_fresh_load_would(tmp_path, monkeypatch, one_thread):
    rng = np.random.default_rng(0)
    val = make_store(tmp_path / "val", rng, keys=("aachen_000000_000019",))
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", constant_model(0))
    stores = make_stores(tmp_path / "stores")
    loads = []

    def counted(path, device="cpu", weights="model"):
        loads.append(path)
        return load_segmenter(path, device, weights)

    monkeypatch.setattr(eval_cli, "load_segmenter", counted)
    _, model, _, _ = eval_cli.score_checkpoints(
        ckpt, val, None, False, "ours", torch.device("cpu"), 2, adapt_bn=3, adapt_store=stores / TARGET
    )
    assert loads == [ckpt]
    expected = adapt_batchnorm(load_segmenter(ckpt)[0], target_frames(stores / TARGET, 3), "cpu", batch_size=1)
    for ours, theirs in zip(model.state_dict().values(), expected.state_dict().values()):
        assert torch.equal(ours, theirs)
    assert not torch.equal(model.bn1.running_mean, load_segmenter(ckpt)[0].bn1.running_mean)  # it did adapt
