"""The remaining tracebacks and silent acceptances of issue 19, §3: each case on a store or run the test builds ends
in one `error:` line and exit 2 (or the documented behaviour), in a child process (`hostile_stores.forked`), or in a
fresh one where the case needs it (FFmpeg's own log lines)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hostile_stores import (
    REPO,
    VAL_FILE,
    forked,
    segmenter_checkpoint,
    train_args,
    update_val_manifest,
    val_store,
    with_member,
)

from pipeline.cli import main as prep_main
from pipeline.errors import EXIT_BAD_INPUT
from pipeline.shards import png_bytes
from trainer.evaluation.eval_cli import main as eval_main
from trainer.training.checkpoint import checkpoints_in, prune_checkpoints
from trainer.training.cli import main as train_main
from trainer.training.monitor import best_val_iteration

pytestmark = pytest.mark.usefixtures("one_thread")


def one_line(outcome) -> str:
    lines = outcome.error_lines()
    assert outcome.returncode == EXIT_BAD_INPUT, outcome.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr[-3000:]
    return lines[0]


# A checkpoint save on a full disk: torch raises RuntimeError from inline_container.cc, not OSError.


def _file_size_limit(limit_bytes: int):
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return setup


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_the_earlier_ones_stay(stores, tmp_path):
    run = tmp_path / "run"
    first = forked(train_main, train_args(stores, run, 0, "--checkpoint-interval", "1"))
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in checkpoints_in(run / "checkpoints")}
    assert sorted(before) == ["iter_0000001.pt", "iter_0000002.pt"]
    limit = len(before["iter_0000002.pt"]) // 2  # the next checkpoint is as large: its write fails half-way
    resume = ["--out", str(run), "--resume", "latest", "--max-iter", "3"]
    line = one_line(forked(train_main, resume, _file_size_limit(limit)))
    newest = run / "checkpoints" / "iter_0000002.pt"
    assert line == (
        f"error: {run / 'checkpoints' / 'iter_0000003.pt'}: checkpoint not written (File too large, EFBIG); "
        f"the newest checkpoint is still {newest}"
    )
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before  # intact, no partial file


def test_a_full_tmpfs_is_one_line_naming_enospc(stores, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    size_kib = 1024  # the config, log and events fit; a deeplab_tiny checkpoint (~1.6 MB) does not
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)]).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        line = one_line(forked(train_main, train_args(stores, mount / "run")))
        assert line.startswith(f"error: {mount / 'run' / 'checkpoints'}/iter_0000002.pt: checkpoint not written")
        assert "No space left on device, ENOSPC" in line and line.endswith("no earlier checkpoint exists")
        assert not list((mount / "run" / "checkpoints").iterdir())  # no partial file left behind
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# Labels outside the protocol.


def test_a_source_label_outside_the_protocol_names_its_shard_and_sample(stores, tmp_path):
    label = np.zeros((64, 128), np.uint8)
    label[10, 20] = 200
    for sample in (0, 1):
        with_member(stores, "src", "label.png", png_bytes(label), sample=sample)
    line = one_line(forked(train_main, train_args(stores, tmp_path / "run")))
    shard = stores / "src" / "src-000000.tar"
    assert line.startswith(f"error: {shard}: s0_") and ".label.png: holds label id 200, outside the protocol's " in line
    assert "train ids 0..14 (255 = ignore)" in line


def test_val_labels_outside_the_class_range_are_refused_not_scored(tmp_path):
    checkpoint = segmenter_checkpoint(tmp_path / "ckpt" / "iter_0000001.pt")
    val = val_store(tmp_path / "val")
    args = ["--ckpt", str(checkpoint), "--val", str(val), "--device", "cpu", "--save-pred", "0", "--no-tc"]
    clean = forked(eval_main, [*args, "--out", str(tmp_path / "clean")])
    assert clean.returncode == 0, clean.stderr
    with h5py.File(val / VAL_FILE, "a") as f:
        f["samples/bochum_000001_000019/labels/viper15"][5, 7] = 200
    update_val_manifest(val)
    line = one_line(forked(eval_main, [*args, "--out", str(tmp_path / "bad")]))
    assert line == (
        f"error: {val / VAL_FILE}:bochum_000001_000019: its viper15 label holds id 200, outside the train ids 0..14 "
        f"(255 = ignore); the val store is damaged or of another protocol table"
    )
    assert not (tmp_path / "bad" / "metrics.json").exists()  # no score at all rather than a changed one


def test_inspect_names_a_sample_that_lacks_a_member(stores, tmp_path):
    with_member(stores, "tgt", "frame0.png", None)
    line = one_line(forked(prep_main, ["inspect", str(stores / "tgt"), "--sheet", str(tmp_path / "sheet.png")]))
    assert line == (
        f"error: {stores / 'tgt' / 'tgt-000000.tar'}: sample 't0_0' lacks frame0; the shard is damaged, rebuild the "
        f"store with i2vda-prep"
    )


def test_resume_with_weights_that_are_not_its_configs_arch_is_one_line(stores, tmp_path):
    run = tmp_path / "run"
    assert forked(train_main, train_args(stores, run)).returncode == 0
    path = run / "checkpoints" / "iter_0000002.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["arch"] = "deeplab_r50"  # the probe: a config that names another network than its weights
    torch.save(state, path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"arch": "deeplab_r50"}))
    line = one_line(forked(train_main, ["--out", str(run), "--resume", "latest", "--max-iter", "3"]))
    assert line.startswith(f"error: --resume {path}: not a segmenter checkpoint for the deeplab_r50 its config names: ")
    assert "missing" in line and "Traceback" not in line


# Flags validated before anything is created.


@pytest.mark.parametrize(
    ("flags", "config", "message"),
    [
        (["--seed", "-1"], None, "--seed: expected an integer in 0..18446744073709551615 (2**64 - 1), got -1"),
        (["--seed", "99999999999999999999"], None, "--seed: expected an integer in 0..18446744073709551615"),
        (["--lr", "1e39"], None, "--lr: expected a number >= 0 and at most 3.403e+38 (float32), got 1e+39"),
        (["--lr", "1e38", "--classifier-lr-mult", "10"], None, "the classifier's learning rate exceeds float32"),
        ([], {"seed": -1}, "--seed: expected an integer in 0..18446744073709551615 (2**64 - 1), got -1"),
        ([], {"lr": 1e39}, "--lr: expected a number >= 0 and at most 3.403e+38 (float32), got 1e+39"),
        ([], {"keep_checkpoints": -2}, "--keep-checkpoints: expected an integer >= 0, got -2"),
    ],
)
def test_bad_numbers_are_refused_before_the_run_folder_exists(stores, tmp_path, capsys, flags, config, message):
    if config is not None:
        (tmp_path / "settings.json").write_text(json.dumps(config))
        flags = ["--config", str(tmp_path / "settings.json")]
    with pytest.raises(SystemExit) as exit_info:
        train_main(train_args(stores, tmp_path / "run", 0, *flags))
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "run").exists()


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_code_running_pickle_is_refused_in_plain_words_and_never_run(stores, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(str(marker))}, evil)
    with pytest.raises(SystemExit) as exit_info:
        train_main(train_args(stores, tmp_path / "run", 0, "--init", str(evil), "--init-format", "segmenter"))
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"error: {evil}: refused: the file pickles Python objects beyond tensors (posix.system); it was not loaded "
        f"and nothing in it was run (checkpoints are read with torch.load(weights_only=True))"
    ]
    assert not marker.exists()


# --keep-checkpoints


def test_pruning_keeps_the_newest_and_the_best_by_val(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for done in range(1, 7):
        (folder / f"iter_{done:07d}.pt").write_bytes(b"")
    scores = {1: 40.0, 3: 55.5, 5: 50.0}  # log.jsonl's 0-based iteration -> val mIoU; the best is after 4 iterations
    lines = [json.dumps({"iteration": it, "val_miou": miou}) for it, miou in scores.items()]
    (tmp_path / "log.jsonl").write_text("\n".join([json.dumps({"iteration": 0, "loss_seg": 1.0}), *lines]) + "\n")
    assert best_val_iteration(tmp_path) == 4
    removed = prune_checkpoints(tmp_path, keep=1, protect=best_val_iteration(tmp_path))
    assert sorted(p.name for p in removed) == [f"iter_{i:07d}.pt" for i in (1, 2, 3, 5)]
    assert sorted(p.name for p in folder.iterdir()) == ["iter_0000004.pt", "iter_0000006.pt"]
    assert prune_checkpoints(tmp_path, keep=0) == []  # 0 keeps every one


def test_keep_checkpoints_bounds_a_run_folder(stores, tmp_path):
    run = tmp_path / "run"
    outcome = forked(
        train_main,
        train_args(stores, run, 0, "--max-iter", "5", "--checkpoint-interval", "1", "--keep-checkpoints", "2"),
    )
    assert outcome.returncode == 0, outcome.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_0000004.pt", "iter_0000005.pt"]


# Noise around the one line.


def test_eval_draws_no_progress_bar_off_a_terminal(tmp_path):
    checkpoint = segmenter_checkpoint(tmp_path / "ckpt" / "iter_0000001.pt")
    val = val_store(tmp_path / "val")
    args = ["--ckpt", str(checkpoint), "--val", str(val), "--out", str(tmp_path / "eval"), "--device", "cpu"]
    outcome = forked(eval_main, [*args, "--save-pred", "0"], lambda: os.environ.pop("TQDM_DISABLE", None))
    assert outcome.returncode == 0 and outcome.stderr == "", outcome.stderr  # stderr is a file here, not a terminal
    assert outcome.stdout.startswith("mIoU ")


def test_a_broken_video_gets_our_line_without_ffmpegs(tmp_path):
    # A fresh process: FFmpeg reads its log level once, when OpenCV first opens a video.
    checkpoint = segmenter_checkpoint(tmp_path / "ckpt.pt")
    video = tmp_path / "dashcam.mp4"
    video.write_bytes(np.random.default_rng(0).bytes(5000))
    command = ["-m", "trainer.evaluation.predict_cli", "--ckpt", str(checkpoint), "--input", str(video)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    proc = subprocess.run(
        [sys.executable, *command, "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        f"error: --input {video}: not a readable video (OpenCV/FFmpeg cannot decode a frame of it)"
    ]


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_a_dataloader_worker_killed_for_memory_is_one_line(stores, tmp_path):
    # The kernel's OOM killer stands in as a real SIGKILL to one DataLoader worker of a training process, sent by a
    # thread of that process once the workers run.
    import threading

    run = tmp_path / "run"

    def kill_a_worker_soon() -> None:
        def watch() -> None:
            while not ((run / "log.jsonl").is_file() and len(_children(os.getpid())) >= 2):
                time.sleep(0.02)
            os.kill(_children(os.getpid())[0], signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()

    outcome = forked(train_main, train_args(stores, run, 2, "--max-iter", "100000"), kill_a_worker_soon)
    line = one_line(outcome)
    # PyTorch notices in one of four ways: its SIGCHLD handler ("DataLoader worker (pid N) is killed by signal:
    # Killed."), a queue that times out ("... exited unexpectedly"), the queue's connection reset or at its end.
    causes = ("DataLoader worker (pid", "its queue: Connection reset by peer", "its queue: EOFError")
    assert line.startswith(tuple(f"error: a data-loading worker process died ({cause}" for cause in causes)), line
    assert line.endswith("or rerun with --num-workers 0 to see the error in the training process")
