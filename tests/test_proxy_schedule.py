"""Algorithm 1's copy rule under both readings (checked against schedules worked out by hand, in the config and in the
loop itself), and the refusal of a ResNet segmenter without an init."""

from __future__ import annotations

import pytest
from test_train_loop import make_stores, tiny_config

import trainer.training.loop as loop
from pipeline.errors import EXIT_BAD_INPUT
from trainer.training.cli import main
from trainer.training.config import TrainConfig, read_config_file
from trainer.training.loop import train


def _copies(max_iter: int, **settings) -> list[int]:
    config = TrainConfig(out="x", arch="deeplab_tiny", max_iter=max_iter, **settings)
    return [it for it in range(max_iter) if config.copies_proxy(it)]


@pytest.mark.parametrize(
    ("copy", "launch", "rule", "expected"),
    [
        # The paper's main setting (8k / 8k): both readings copy at 8k, 16k, ... from the launch on; "modulo" also
        # copies at 0, which nothing reads (L_tc starts at 8k).
        (8000, 8000, "launch", [8000, 16000, 24000, 32000, 40000, 48000]),
        (8000, 8000, "modulo", [0, 8000, 16000, 24000, 32000, 40000, 48000]),
        # Table 4, ITER_COPY 15k (launch 8k): launch reading 8k, 23k, 38k; modulo 0, 15k, 30k, 45k.
        (15000, 8000, "launch", [8000, 23000, 38000]),
        (15000, 8000, "modulo", [0, 15000, 30000, 45000]),
        # Table 4, ITER_LAUNCH 1k (copy 8k): launch reading 1k, 9k, ..., 49k; modulo 0, 8k, ..., 48k.
        (8000, 1000, "launch", [1000, 9000, 17000, 25000, 33000, 41000, 49000]),
        (8000, 1000, "modulo", [0, 8000, 16000, 24000, 32000, 40000, 48000]),
        # Table 4, ITER_LAUNCH 15k: 15k, 23k, ...; modulo 0, 8k, 16k, ...
        (8000, 15000, "launch", [15000, 23000, 31000, 39000, 47000]),
        # Launch at 0: the readings coincide.
        (3, 0, "launch", [0, 3, 6, 9]),
        (3, 0, "modulo", [0, 3, 6, 9]),
    ],
)
def test_the_copy_schedule_under_both_readings(copy, launch, rule, expected):
    max_iter = 50_000 if copy >= 1000 else 10
    assert _copies(max_iter, iter_copy=copy, iter_launch=launch, copy_rule=rule) == expected


def test_the_main_setting_labels_with_the_same_proxy_under_both_readings():
    # From the launch on, the M' in use (the last copy at or before it) is the same under both readings.
    main = {"iter_copy": 8000, "iter_launch": 8000}
    launch, modulo = (_copies(50_000, copy_rule=rule, **main) for rule in ("launch", "modulo"))
    for it in range(8000, 50_000, 500):
        assert max(c for c in launch if c <= it) == max(c for c in modulo if c <= it)


def test_no_copy_without_tc_or_with_a_fixed_teacher():
    assert _copies(10, iter_copy=2, iter_launch=2, no_tc=True) == []
    assert _copies(10, iter_copy=2, iter_launch=2, method="adv_only") == []


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("rule", "expected"), [("launch", [2, 5]), ("modulo", [0, 3, 6])])
def test_the_loop_copies_at_the_scheduled_iterations(tmp_path, monkeypatch, rule, expected):
    stores = make_stores(tmp_path / "stores", shards=1, per_shard=4)
    done = []
    iteration = {"it": None}
    real_copy, real_step = loop.copy_proxy, loop.segmenter_step

    def step(nets, batch, config, it_info):
        iteration["it"] = it_info.it
        return real_step(nets, batch, config, it_info)

    def copy(nets, proxy_bn="running"):
        done.append(iteration["it"])
        real_copy(nets, proxy_bn)

    def next_iteration(nets, config, it):  # the copy is decided before the step of iteration `it`
        iteration["it"] = it
        return real_lrs(nets, config, it)

    real_lrs = loop.set_learning_rates
    monkeypatch.setattr(loop, "copy_proxy", copy)
    monkeypatch.setattr(loop, "segmenter_step", step)
    monkeypatch.setattr(loop, "set_learning_rates", next_iteration)
    train(tiny_config(stores, tmp_path / "run", max_iter=7, iter_copy=3, iter_launch=2, copy_rule=rule))
    assert done == expected


@pytest.mark.parametrize("arch", ["deeplab_r101", "deeplab_r50"])
def test_a_resnet_without_init_is_refused_in_one_line(tmp_path, capsys, arch):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "run"), "--shards", str(tmp_path), "--arch", arch])
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --arch {arch} needs --init")
    assert "DeepLab_resnet_pretrained_imagenet.pth" in lines[0] and "--init none" in lines[0]
    assert not (tmp_path / "run").exists()


def test_init_none_asks_for_random_weights_and_overrides_a_config_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("arch: deeplab_r101\ninit: pretrained/DeepLab_resnet_pretrained_imagenet.pth\n")
    assert read_config_file(config)["init"].endswith(".pth")
    # --init none clears the file's init; the run then gets past the init check and stops at the missing store.
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--out", str(tmp_path / "run"), "--shards", str(tmp_path), "--init", "none"])
    err = capsys.readouterr().err
    assert "no store at" in err and "--init" not in err
    assert TrainConfig(out="x", init="none").init_file is None
    assert TrainConfig(out="x", init="w.pth").init_file == "w.pth"
