"""Config files that check themselves and `i2vda-train --check`: a wrong type is one line naming the file, the key and
the type; YAML's spellings of numbers are numbers; every setting can be overridden (and an optional one cleared) on
the command line; `--check` reports every problem of a wrong run in one go and trains and writes nothing."""

from __future__ import annotations

import pytest
import yaml
from test_train_loop import SIZE_HW, SOURCE, TARGET, make_stores

from pipeline.errors import EXIT_BAD_INPUT
from trainer.training.cli import main
from trainer.training.config import TrainConfig, read_config_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("stores"), shards=2, per_shard=2)


def _run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def _config(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_a_wrong_type_is_one_line_naming_the_file_the_key_and_the_type(tmp_path, capsys):
    path = _config(tmp_path, "max_iter: twenty\n")
    code, _, err = _run(["--config", str(path), "--out", str(tmp_path / "run")], capsys)
    assert code == EXIT_BAD_INPUT
    assert err.splitlines() == [f"error: --config {path}: max_iter: expected an integer, got 'twenty'"]
    path = _config(tmp_path, "no_tc: maybe\nbetas_d: [0.9]\n")
    with pytest.raises(Exception, match="no_tc: expected true or false, got 'maybe'"):
        read_config_file(path)


def test_yaml_spellings_of_numbers_are_numbers(tmp_path):
    path = _config(tmp_path, "lr: 1e-2\nmax_iter: 5e4\nlr_d: 2.5E-4\nbetas_d: [0.9, '0.99']\n")
    assert yaml.safe_load(path.read_text())["lr"] == "1e-2"  # what PyYAML makes of it: text
    config = TrainConfig.from_dict({**read_config_file(path), "out": "x"})
    assert (config.lr, config.max_iter, config.lr_d, config.betas_d) == (0.01, 50000, 0.00025, (0.9, 0.99))
    assert isinstance(config.max_iter, int)
    with pytest.raises(Exception, match="max_iter: expected an integer, got '2.5e1x'"):
        read_config_file(_config(tmp_path, "max_iter: 2.5e1x\n"))
    with pytest.raises(Exception, match="batch_size: expected an integer, got 1.5"):
        read_config_file(_config(tmp_path, "batch_size: 1.5\n"))


def _resolved(out: str) -> dict:
    """The settings `--check` prints (YAML, after its comment lines)."""
    return yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#")))


def test_every_setting_can_be_overridden_and_an_optional_one_cleared(stores, tmp_path, capsys):
    path = _config(
        tmp_path,
        "init: nowhere.pth\nflow_ckpt: nowhere.tar\nno_tc: true\nt: 0.5\nchannels_last: true\nlr: 0.5\n"
        f"target_size: {SIZE_HW[1]}x{SIZE_HW[0]}\n",
    )
    base = ["--shards", str(stores), "--source", SOURCE, "--target", TARGET, "--device", "cpu", "--check"]
    code, out, err = _run(["--config", str(path), "--out", str(tmp_path / "a"), *base], capsys)
    assert code == EXIT_BAD_INPUT and "nowhere.pth" in err  # the file's init is checked ...
    settings = _resolved(out)
    assert (settings["no_tc"], settings["t"], settings["channels_last"], settings["lr"]) == (True, 0.5, True, 0.5)
    flags = ["--init", "none", "--flow-ckpt", "none", "--with-tc", "--t", "random", "--no-channels-last"]
    code, out, err = _run(
        ["--config", str(path), "--out", str(tmp_path / "b"), *base, *flags, "--lr", "0.1", "--target-size", "none"],
        capsys,
    )
    assert code == 0, err  # ... and cleared: nothing left to refuse
    settings = _resolved(out)
    assert settings["init"] is None and settings["flow_ckpt"] is None and settings["no_tc"] is False
    assert settings["t"] is None and settings["channels_last"] is False and settings["lr"] == 0.1
    assert settings["target_size_hw"] == list(SIZE_HW)  # cleared, then filled from the store
    assert "no problem found" in out and not (tmp_path / "b").exists()  # nothing written


def test_check_reports_every_problem_at_once_and_writes_nothing(stores, tmp_path, capsys):
    shard = sorted((stores / TARGET).glob("*.tar"))[1]
    path = _config(
        tmp_path,
        "max_iter: twenty\nlearning_rate: 1\niter_launch: -1\nsource_size: 640x480\n"
        f"flow_estimator: flownet2\ninit: {tmp_path / 'imagenet.pth'}\n",
    )
    out_dir = tmp_path / "run"
    saved = shard.read_bytes()
    shard.write_bytes(saved[:-512])  # a truncated shard
    args = ["--config", str(path), "--out", str(out_dir), "--shards", str(stores), "--source", SOURCE]
    try:
        code, out, err = _run([*args, "--target", TARGET, "--device", "cpu", "--check"], capsys)
    finally:
        shard.write_bytes(saved)
    lines = err.splitlines()
    assert code == EXIT_BAD_INPUT and all(line.startswith("error: ") for line in lines), err
    expected = [
        "learning_rate",  # unknown key
        "max_iter: expected an integer, got 'twenty'",  # wrong type
        "--iter-launch: expected an integer >= 0, got -1",  # out of range
        "size_wh=[64, 32], expected (640, 480)",  # the source store's size against the config
        "estimator='dis', expected 'flownet2'",  # the target store's estimator
        f"{shard}: {len(saved) - 512} bytes, the manifest says {len(saved)}",  # the damaged shard
        "--flow flownet2 needs --flow-ckpt",  # the online flow's weights
        "imagenet.pth",  # the init file
    ]
    for part in expected:
        assert sum(part in line for line in lines) == 1, (part, err)
    assert len(lines) == len(expected) and "Traceback" not in err
    assert f"# --check: {len(expected)} problem(s); nothing was trained or written" in out
    assert not out_dir.exists()
