"""Exact resume: a run preempted and resumed equals the run that never stopped; the data stream it relies on."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_train_loop import load, make_stores, read_log, same_state, tiny_config

import trainer.training.loop as loop
from pipeline.errors import InputError
from pipeline.shards import read_samples
from trainer.training.checkpoint import save_checkpoint
from trainer.training.data import iteration_batches, open_stores
from trainer.training.loop import train
from trainer.training.rng import capture_rng, restore_rng

# Wall-clock numbers and what each process says once (device, ranks): the only log fields allowed to differ.
TIMING_FIELDS = ("it_per_s", "data_wait_frac", "time", "elapsed_s", "device", "world_size")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("stores"), shards=3, per_shard=5)


@pytest.fixture(autouse=True)
def deterministic():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


class Preempted(Exception):
    """Stands for the job being killed."""


def test_preempted_run_resumes_as_if_never_stopped(stores, tmp_path, monkeypatch):
    # I2VDA with a copy and L_tc on both sides of the stop; the stop at 3 falls inside data block 0 (4 iterations).
    # delta = 1 keeps every non-occluded pixel in PL, so M' (restored from the checkpoint) shapes L_tc at once.
    settings = dict(max_iter=6, batch_size=2, iter_copy=2, iter_launch=2, checkpoint_interval=3, delta=1.0)
    straight = tmp_path / "straight"
    train(tiny_config(stores, straight, **settings))

    stopped = tmp_path / "stopped"
    real_step = loop.segmenter_step

    def killed_at_4(nets, batch, config, step):
        if step.it == 4:
            raise Preempted
        return real_step(nets, batch, config, step)

    monkeypatch.setattr(loop, "segmenter_step", killed_at_4)
    with pytest.raises(Preempted):
        train(tiny_config(stores, stopped, **settings))
    monkeypatch.setattr(loop, "segmenter_step", real_step)
    assert [e["iteration"] for e in read_log(stopped)] == [0, 1, 2, 3]  # iteration 3 ran after checkpoint 3
    train(tiny_config(stores, stopped, resume="latest", **settings))

    a, b = read_log(straight), read_log(stopped)
    assert [e["iteration"] for e in b] == list(range(6))
    for entry_a, entry_b in zip(a, b):
        assert {k: v for k, v in entry_a.items() if k not in TIMING_FIELDS} == {
            k: v for k, v in entry_b.items() if k not in TIMING_FIELDS
        }
    end_a, end_b = load(straight / "checkpoints" / "iter_0000006.pt"), load(stopped / "checkpoints" / "iter_0000006.pt")
    for part in ("model", "proxy", "disc"):
        assert same_state(end_a[part], end_b[part]), part
    assert end_a["opt_seg"]["param_groups"] == end_b["opt_seg"]["param_groups"]
    for k, state in end_a["opt_seg"]["state"].items():
        assert torch.equal(state["momentum_buffer"], end_b["opt_seg"]["state"][k]["momentum_buffer"])


def test_resume_with_another_setting_is_refused(stores, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(stores, run, method="source_only", max_iter=1))
    with pytest.raises(InputError, match="lr") as err:
        train(tiny_config(stores, run, method="source_only", max_iter=2, lr=5e-3, resume="latest"))
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="--resume"):
        train(tiny_config(stores, run, method="source_only", max_iter=2))  # checkpoints exist, no --resume


def test_resume_keeps_the_classifier_lr_factor_of_the_config(stores, tmp_path):
    """Checkpoints written before M's param groups carried "lr_mult" resume with the config's factor."""
    run = tmp_path / "run"
    settings = dict(method="source_only", max_iter=2, checkpoint_interval=1, classifier_lr_mult=4.0, lr=1e-3)
    train(tiny_config(stores, run, **settings))
    state = load(run / "checkpoints" / "iter_0000001.pt")
    for group in state["opt_seg"]["param_groups"]:
        del group["lr_mult"]  # as an older checkpoint holds them
    (run / "checkpoints" / "iter_0000002.pt").unlink()
    save_checkpoint(state, run / "checkpoints" / "iter_0000001.pt")
    lrs = [e["lr"] for e in read_log(run)]
    result = train(tiny_config(stores, run, **settings, resume="latest"))
    assert result["iterations"] == 2 and lrs[1] < 1e-3
    groups = torch.load(run / "checkpoints" / "iter_0000002.pt", weights_only=True)["opt_seg"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [1.0, 4.0]
    assert groups[1]["lr"] == pytest.approx(4.0 * groups[0]["lr"])


def test_each_iteration_gets_the_same_data_whatever_the_workers_and_start(stores, tmp_path):
    config, plan = open_stores(tiny_config(stores, tmp_path, batch_size=2, block_iters=3))
    straight = iteration_batches(config, plan, rank=0, world=1, start=0)
    first = [next(straight) for _ in range(7)]
    # Two DataLoader workers, starting mid-way through block 1 (iterations 3..5).
    resumed = iteration_batches(replace(config, num_workers=2), plan, rank=0, world=1, start=4)
    for expected in first[4:]:
        got = next(resumed)
        assert got["iteration"] == expected["iteration"]
        for part in ("source", "target"):
            assert got[part]["keys"] == expected[part]["keys"]
            for field, value in expected[part].items():
                if field != "keys":
                    assert torch.equal(got[part][field], value)
    # Every batch holds what the store holds under its keys, in the documented layouts.
    stored = {s["__key__"]: s for store in ("src", "tgt") for s in read_samples(stores / store)}
    for batch in first:
        for i, key in enumerate(batch["source"]["keys"]):
            assert np.array_equal(batch["source"]["image"][i].permute(1, 2, 0).numpy(), stored[key]["image"])
            assert np.array_equal(batch["source"]["label"][i].numpy(), stored[key]["label"])
        for i, key in enumerate(batch["target"]["keys"]):
            for field in ("frame0", "frame1"):
                assert np.array_equal(batch["target"][field][i].permute(1, 2, 0).numpy(), stored[key][field])
            for field, member in (("flow_01", "flow01"), ("flow_10", "flow10")):  # (2, H, W) in both
                assert np.array_equal(batch["target"][field][i].numpy(), stored[key][member])
    keys = [k for b in first for k in b["target"]["keys"]]
    assert len(set(keys)) > len(keys) // 2  # shuffled and resampled, not one sample over and over


def test_ranks_read_disjoint_shards(stores, tmp_path):
    config, plan = open_stores(tiny_config(stores, tmp_path))
    shards_seen = []
    for rank in (0, 1):
        stream = iteration_batches(config, plan, rank=rank, world=2, start=0)
        keys = {k for _ in range(6) for k in next(stream)["target"]["keys"]}
        shards_seen.append({k.split("_")[0] for k in keys})  # t<shard>_<sample>
    assert shards_seen[0] and shards_seen[1] and not shards_seen[0] & shards_seen[1]


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    state = capture_rng(torch.device("cpu"))
    draws = (torch.rand(3), np.random.rand(3), random.random())
    path = save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    restore_rng(torch.load(path, weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def test_a_failed_save_leaves_no_file(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises on an unpicklable object
        save_checkpoint({"model": lambda: None}, tmp_path / "iter_0000001.pt")
    assert list(tmp_path.iterdir()) == []
