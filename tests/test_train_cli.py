"""`i2vda-train`: bad stores and settings get one `error:` line and exit 2; --help and --config cover every setting."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_loop import SIZE_HW, SOURCE, TARGET, make_stores

from pipeline.errors import EXIT_BAD_INPUT, InputError
from trainer.training.cli import cli, main
from trainer.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
TINY = ("--arch", "deeplab_tiny")  # the ResNets need --init (tests/test_proxy_schedule.py)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    return make_stores(tmp_path_factory.mktemp("stores"), shards=1, per_shard=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _fails(capsys, args: list[str]) -> str:
    """Run the entry point in-process; it must exit 2 with exactly one `error:` line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_a_missing_store_exits_2_with_one_line(tmp_path):
    # A real process: the exit status and stderr a user sees.
    args = [
        "--out",
        str(tmp_path / "run"),
        "--shards",
        str(tmp_path / "nowhere"),
        "--source",
        "viper",
        "--init",
        "none",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.training.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: --source viper: no store at") and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--protocol", "synthia11"], "protocol"),
        (["--target-size", "128x64"], "size_wh"),
        (["--source-size", "64x64"], "size_wh"),
        (["--flow-estimator", "flownet2"], "estimator"),
    ],
)
def test_a_store_that_does_not_match_exits_2(stores, tmp_path, capsys, flags, field):
    line = _fails(
        capsys,
        [
            "--out",
            str(tmp_path / "run"),
            "--shards",
            str(stores),
            "--source",
            SOURCE,
            "--target",
            TARGET,
            *TINY,
            *flags,
        ],
    )
    assert field in line


def test_bad_flags_and_config_files_exit_2(stores, tmp_path, capsys):
    base = ["--out", str(tmp_path / "run"), "--shards", str(stores), "--source", SOURCE, "--target", TARGET, *TINY]
    assert "--target-size" in _fails(capsys, [*base, "--target-size", "64"])
    assert "--t" in _fails(capsys, [*base, "--t", "1.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nlearning_rate: 0.2\n")
    assert "learning_rate" in _fails(capsys, [*base, "--config", str(bad)])


def test_help_documents_every_setting():
    help_text = " ".join(cli.get_help(cli.make_context("i2vda-train", ["--out", "x"])).split())  # unwrapped
    sizes = {"target_size_hw": "--target-size", "source_size_hw": "--source-size"}
    for field in dataclasses.fields(TrainConfig):
        flag = sizes.get(field.name, "--" + field.name.replace("_", "-"))
        assert flag in help_text, flag
    assert "[default: 0.00025]" in help_text and "[default: 50000]" in help_text  # paper defaults shown


def test_config_file_then_flags_make_the_saved_config(stores, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("lr: 0.002\nmax_iter: 5\nmethod: source_only\narch: deeplab_tiny\nnum_workers: 0\n")
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:  # click ends a successful command with exit 0
        main(
            [
                "--config",
                str(settings),
                "--out",
                str(run),
                "--shards",
                str(stores),
                "--source",
                SOURCE,
                "--target",
                TARGET,
                "--max-iter",
                "2",
                "--device",
                "cpu",
            ]
        )
    assert exit_info.value.code == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["lr"], saved["max_iter"], saved["method"]) == (0.002, 2, "source_only")  # file, flag, file
    assert saved["protocol"] == "viper15" and saved["target_size_hw"] == list(SIZE_HW)  # from the manifests
    assert saved["iter_copy"] == 8000 and saved["delta"] == 0.3  # untouched defaults
    assert (run / "checkpoints" / "iter_0000002.pt").is_file()


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr-d", "-1"], "--lr-d"),
        (["--momentum", "-1"], "--momentum"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--betas-d", "2", "2"], "--betas-d"),
        (["--eta", "-1"], "--eta"),
        (["--eta", "nan"], "--eta"),
        (["--poly-power", "-1"], "--poly-power"),
        (["--lambda-adv", "-1"], "--lambda-adv"),
        (["--classifier-lr-mult", "-1"], "--classifier-lr-mult"),
        (["--pl-portion", "nan"], "--pl-portion"),
        (["--target-size", "0x0"], "--target-size 0x0"),
        (["--delta", "inf"], "--delta"),
    ],
)
def test_every_numeric_flag_is_validated_before_anything_runs(tmp_path, capsys, flags, flag):
    line = _fails(capsys, ["--out", str(tmp_path / "run"), "--shards", str(tmp_path / "nowhere"), *flags])
    assert line.startswith(f"error: {flag}"), line
    assert not (tmp_path / "run").exists()


def test_config_sizes_are_named_by_their_flags():
    with pytest.raises(InputError, match="^--target-size: "):
        TrainConfig(out="x", target_size_hw=(0, 0))


def test_off_a_terminal_progress_is_plain_timestamped_lines_and_the_log_says_when_and_where(stores, tmp_path):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}  # the bar would be allowed
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.training.cli",
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
            "--num-workers",
            "0",
            "--max-iter",
            "4",
            "--log-interval",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout + proc.stderr and proc.stderr == ""
    progress = proc.stdout.splitlines()[:-1]
    assert len(progress) == 2 and all(" source_only run: iteration " in line for line in progress)
    assert progress[1].split(" ", 1)[1].startswith("source_only run: iteration 4/4, loss_seg ")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in log] == [1, 3]
    assert all("time" in e and e["elapsed_s"] >= 0 for e in log)
    assert (log[0]["device"], log[0]["world_size"]) == ("cpu", 1) and "device" not in log[1]
