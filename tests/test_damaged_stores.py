"""Damaged, cut or replaced shards stop training with one `error:` line naming the shard, never a traceback and never
a silent exit 0; `i2vda-prep inspect --verify` fails on a mismatch; `--resume` checks the stores by content."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_loop import SOURCE, TARGET, make_stores, tiny_config

from pipeline.errors import EXIT_BAD_INPUT, InputError
from pipeline.shards import MANIFEST_NAME, open_store, raw_samples, shard_name
from trainer.training.cli import main as train_main
from trainer.training.loop import train

REPO = Path(__file__).resolve().parents[1]
PER_SHARD = 4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def stores(tmp_path) -> Path:
    return make_stores(tmp_path / "stores", shards=3, per_shard=PER_SHARD)


def _shard(stores: Path, index: int) -> Path:
    return stores / TARGET / shard_name(TARGET, index)


def _train_args(stores: Path, run: Path, workers: int = 0, *more: str) -> list[str]:
    return [
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
        "--method",
        "source_only",
        "--device",
        "cpu",
        "--max-iter",
        "12",
        "--num-workers",
        str(workers),
        "--shuffle-buffer",
        "8",
        "--block-iters",
        "2",
        "--log-interval",
        "1",
        *more,
    ]


def _one_error_line(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_main(args)
    assert exit_info.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_a_truncated_shard_is_refused_before_training(stores, tmp_path, capsys):
    shard = _shard(stores, 1)
    os.truncate(shard, 40000)
    line = _one_error_line(capsys, _train_args(stores, tmp_path / "run"))
    assert str(shard) in line and "40000 bytes" in line
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused at start: nothing trained


@pytest.mark.parametrize("workers", [0, 2])
def test_a_garbage_shard_of_the_right_size_is_one_line_with_and_without_workers(stores, tmp_path, workers):
    # A real process: with DataLoader workers the error crosses a process boundary and must stay one line.
    shard = _shard(stores, 1)
    shard.write_bytes(os.urandom(shard.stat().st_size))
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.training.cli", *_train_args(stores, tmp_path / "run", workers)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {shard}: unreadable or truncated shard"), proc.stderr
    assert "Traceback" not in proc.stderr and "worker" not in proc.stderr


def test_a_shard_cut_at_a_member_boundary_is_refused_while_read(stores, tmp_path, capsys):
    # A valid tar with 1 of 4 samples; the manifest's size updated too, so only the sample count can tell.
    shard = _shard(stores, 0)
    first = next(raw_samples(shard))
    cut = stores / "cut.tar"
    from pipeline.shards import write_shard

    write_shard(cut, [{k: v for k, v in first.items() if k != "__url__"}])
    shutil.move(cut, shard)
    manifest_path = stores / TARGET / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0] |= {"bytes": shard.stat().st_size, "sha256": None}
    manifest_path.write_text(json.dumps(manifest))
    line = _one_error_line(capsys, _train_args(stores, tmp_path / "run"))
    assert str(shard) in line and f"holds 1 samples, the manifest says {PER_SHARD}" in line


def test_shard_0_copied_over_the_others_is_refused_by_its_sha256(stores, tmp_path, capsys):
    for index in (1, 2):
        shutil.copyfile(_shard(stores, 0), _shard(stores, index))  # same size, same sample count
    line = _one_error_line(capsys, _train_args(stores, tmp_path / "run"))
    assert "sha256 differs" in line and (str(_shard(stores, 1)) in line or str(_shard(stores, 2)) in line)


def test_inspect_verify_exits_non_zero_on_a_mismatch(stores, capsys):
    from pipeline.cli import main as prep_main

    assert prep_main(["inspect", str(stores / TARGET), "--verify", "--sheet", str(stores / "sheet.png")]) is None
    assert "all files match" in capsys.readouterr().out
    shutil.copyfile(_shard(stores, 0), _shard(stores, 2))
    with pytest.raises(SystemExit) as exit_info:
        prep_main(["inspect", str(stores / TARGET), "--verify"])
    assert exit_info.value.code == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert "MISMATCH: tgt-000002.tar" in captured.out
    assert captured.err.strip().splitlines() == [captured.err.strip()] and "tgt-000002.tar" in captured.err


def test_read_samples_of_a_store_folder_checks_every_shard(stores):
    from pipeline.shards import read_samples

    shutil.copyfile(_shard(stores, 0), _shard(stores, 1))
    with pytest.raises(InputError, match="tgt-000001.tar: its sha256 differs"):
        list(read_samples(stores / TARGET))
    assert len(list(raw_samples(_shard(stores, 1)))) == PER_SHARD  # without the manifest's entry: no check


def test_resume_accepts_the_same_stores_elsewhere_and_refuses_other_data(stores, tmp_path):
    run = tmp_path / "run"
    settings = dict(method="source_only", checkpoint_interval=1)
    train(tiny_config(stores, run, max_iter=1, **settings))
    moved = tmp_path / "scratch" / "stores"
    shutil.copytree(stores, moved)  # node-local scratch: same content, another path
    train(tiny_config(moved, run, max_iter=2, resume="latest", **settings))
    assert (run / "checkpoints" / "iter_0000002.pt").is_file()
    # Another preset of the flow estimator (as `--dis-preset` would record it): refused, one line.
    manifest_path = moved / TARGET / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["estimator_options"] = {"preset": "fine"}
    manifest_path.write_text(json.dumps(manifest))
    assert open_store(moved / TARGET).estimator_options == {"preset": "fine"}
    with pytest.raises(InputError, match="--target.*estimator_options") as err:
        train(tiny_config(moved, run, max_iter=3, resume="latest", **settings))
    assert "\n" not in str(err.value)


def test_resume_other_stores_resumes_on_other_data_with_a_warning_naming_it(stores, tmp_path, capsys):
    run = tmp_path / "run"
    settings = dict(method="source_only", checkpoint_interval=1)
    train(tiny_config(stores, run, max_iter=1, **settings))
    manifest_path = stores / TARGET / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["estimator_options"] = {"preset": "fine"}
    manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    train(tiny_config(stores, run, max_iter=2, resume="latest", resume_other_stores=True, **settings))
    assert (run / "checkpoints" / "iter_0000002.pt").is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"--target store {TARGET!r}" in warnings[0]
    assert "in estimator_options;" in warnings[0]  # the one setting that differs, named
    # The flag is not sticky: the next plain resume compares with the checkpoint just written, on the new stores.
    train(tiny_config(stores, run, max_iter=3, resume="latest", **settings))
    assert (run / "checkpoints" / "iter_0000003.pt").is_file()
