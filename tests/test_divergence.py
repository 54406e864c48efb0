"""A diverging run stops with one line naming the iteration and the last good checkpoint; no checkpoint or log line
holds NaN or inf; eval and --init refuse non-finite weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_train_loop import SOURCE, TARGET, make_stores, tiny_config

import trainer.training.loop as loop
from pipeline.errors import EXIT_BAD_INPUT, InputError
from trainer.models.weights import nonfinite_tensor
from trainer.training.checkpoint import checkpoints_in, load_segmenter, save_checkpoint
from trainer.training.cli import main as train_main
from trainer.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    return make_stores(tmp_path_factory.mktemp("stores"), shards=1, per_shard=4)


def _strict_json(line: str) -> dict:
    def refuse(name):
        raise ValueError(f"bare {name} in log.jsonl")

    return json.loads(line, parse_constant=refuse)


def test_a_huge_learning_rate_stops_with_one_line_and_only_finite_checkpoints(stores, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main(
            [
                "--out",
                str(run),
                "--shards",
                str(stores),
                "--source",
                SOURCE,
                "--target",
                TARGET,
                "--arch",
                "deeplab_tiny",
                "--device",
                "cpu",
                "--num-workers",
                "0",
                "--max-iter",
                "12",
                "--lr",
                "1e6",
                "--checkpoint-interval",
                "1",
                "--log-interval",
                "1",
                "--shuffle-buffer",
                "4",
                "--disc-width",
                "8",
            ]
        )
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: iteration ") and "diverged" in lines[0], lines
    saved = checkpoints_in(run / "checkpoints")
    assert len(saved) < 12
    last = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was written"
    assert lines[0].endswith(last)
    for path in saved:
        state = torch.load(path, weights_only=True)
        assert nonfinite_tensor({k: state[k] for k in ("model", "disc", "opt_seg", "opt_disc")}) is None, path
    log = run / "log.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        _strict_json(line)


def test_a_non_finite_loss_names_its_iteration(stores, tmp_path, monkeypatch):
    real_step = loop.segmenter_step

    def nan_at_2(nets, batch, config, step):
        out = real_step(nets, batch, config, step)
        if step.it != 2:
            return out
        return dataclasses.replace(out, losses={**out.losses, "loss_seg": torch.tensor(float("nan"))})

    monkeypatch.setattr(loop, "segmenter_step", nan_at_2)
    run = tmp_path / "run"
    with pytest.raises(InputError) as err:
        train(tiny_config(stores, run, method="adv_only", max_iter=4, checkpoint_interval=2, disc_width=8))
    # The third iteration (index 2) diverged: counted from 1, as the progress lines ("iteration 3/4") and checkpoints.
    expected = (
        f"iteration 3: loss_seg is nan: the run diverged (try a lower --lr); the last good checkpoint is "
        f"{run / 'checkpoints' / 'iter_0000002.pt'}"
    )
    assert str(err.value) == expected
    assert [_strict_json(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()] == [0, 1]


def test_non_finite_weights_are_never_written_and_never_evaluated(stores, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(stores, run, method="source_only", max_iter=1))
    path = checkpoints_in(run / "checkpoints")[-1]
    state = torch.load(path, weights_only=True)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = torch.full_like(state["model"][first], float("inf"))
    with pytest.raises(ValueError, match="NaN or inf"):
        save_checkpoint(state, tmp_path / "iter_0000001.pt")
    assert not (tmp_path / "iter_0000001.pt").exists()
    torch.save(state, tmp_path / "diverged.pt")  # as an older i2vda would have written it
    with pytest.raises(InputError, match=f"diverged.pt: the segmenter weights are not finite \\({first} holds"):
        load_segmenter(tmp_path / "diverged.pt")


def test_losses_are_checked_where_the_loop_reads_them_back(stores, tmp_path, monkeypatch):
    """No host sync on the other iterations: with --log-interval 3 and a checkpoint every 4, a loss that is NaN from
    iteration index 1 on is caught at index 2 (the first log line, "iteration 3/8"), not before."""
    real_step, seen = loop.segmenter_step, []

    def nan_from_1(nets, batch, config, step):
        out = real_step(nets, batch, config, step)
        seen.append(step.it)
        if step.it < 1:
            return out
        return dataclasses.replace(out, losses={**out.losses, "loss_seg": torch.tensor(float("nan"))})

    monkeypatch.setattr(loop, "segmenter_step", nan_from_1)
    with pytest.raises(InputError, match="^iteration 3: loss_seg is nan"):
        train(
            tiny_config(
                stores, tmp_path / "run", method="source_only", max_iter=8, checkpoint_interval=4, log_interval=3
            )
        )
    assert seen == [0, 1, 2]
    assert [
        loop.checks_divergence(tiny_config(stores, tmp_path, max_iter=8, checkpoint_interval=4, log_interval=3), i)
        for i in range(8)
    ] == [False, False, True, True, False, True, False, True]
