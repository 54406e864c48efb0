"""`make demo`'s driver: the commands it plans (parsed by the real CLIs), skip logic, failure report, tables, figure."""

import json
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from pipeline.cli import cli as prep_cli
from pipeline.errors import InputError
from pipeline.shards import ValWriter, encode_val_item, write_manifest
from pipeline.sources import GRID_PAD, TITLE_HEIGHT, colorize, get_protocol
from trainer.evaluation.eval_cli import cli as eval_cli
from trainer.experiment import VARIANTS, DemoPreset, main, plan_prep, plan_runs, runner
from trainer.experiment.outputs import Paths, check_preset, eval_done, store_done, training_done, world_done
from trainer.experiment.plan import SCRATCH, init_path
from trainer.experiment.pretrain import cli as pretrain_cli
from trainer.experiment.report import (
    format_cell,
    paired_table,
    per_class_table,
    steps_table,
    summary_table,
    write_figure,
)
from trainer.experiment.runner import Step, StepFailed, run_steps
from trainer.models import build_segmenter
from trainer.training.cli import cli as train_cli

PRESET = DemoPreset(world_seed=3, max_iter=600)


def parse(step):
    """The click params the step's tool would run with (parsing only: unknown flags and bad values fail here)."""
    if step.tool == "i2vda-prep":
        command = prep_cli.get_command(None, step.args[0])
        return command.make_context(step.args[0], list(step.args[1:])).params
    command = {"i2vda-train": train_cli, "i2vda-eval": eval_cli, "i2vda-pretrain": pretrain_cli}[step.tool]
    return command.make_context(step.tool, list(step.args)).params


def test_prep_plan_parses_and_agrees_on_paths_and_sizes(tmp_path):
    paths = Paths(tmp_path)
    steps = {s.name: parse(s) for s in plan_prep(PRESET, paths, oracle=True)}
    assert list(steps) == ["world", "pretrain", "prep_flows", "prep_source", "prep_val", "prep_oracle"]
    world = steps["world"]
    assert (world["seed"], world["val_snippets"], world["synthia_frames"]) == (3, PRESET.val_snippets, 0)
    assert (world["train_snippets"], world["analog_pictures"]) == (40, 600)  # 40 x 29 pairs ~ 600 x 2 draws
    assert world["overwrite"] and str(world["out"]) == str(tmp_path / "world")
    pretrain = steps["pretrain"]
    assert pretrain["data"] == tmp_path / "world" / "imagenet_analog" and pretrain["arch"] == "deeplab_tiny"
    assert (pretrain["iters"], pretrain["lr"], pretrain["seed"]) == (600, 0.05, 3)
    assert pretrain["out"] == init_path(PRESET, paths) == tmp_path / "world" / "deeplab_tiny_imagenet_analog.pth"
    scratch = {s.name: parse(s) for s in plan_prep(replace(SCRATCH, world_seed=3), paths, oracle=False)}
    assert list(scratch) == ["world", "prep_flows", "prep_source", "prep_val"]  # no init to pretrain
    assert (scratch["world"]["train_snippets"], scratch["world"]["analog_pictures"]) == (10, 0)
    for name in ("prep_flows", "prep_val", "prep_oracle"):
        assert steps[name]["root"] == str(tmp_path / "world" / "cityscapes")
        assert steps[name]["size"] == "256x128" and steps[name]["out"] == str(tmp_path / "stores")
    assert steps["prep_source"]["size"] == "224x128" and steps["prep_source"]["root"] == str(tmp_path / "world/viper")
    assert steps["prep_flows"]["flow"] == steps["prep_val"]["flow"] == "dis"
    assert (steps["prep_oracle"]["src"], steps["prep_oracle"]["protocol"]) == ("cityscapes", "viper15")


def test_run_plan_parses_with_the_preset_and_variant_flags(tmp_path):
    paths = Paths(tmp_path)
    chains = plan_runs(PRESET, paths, ["source_only", "adv_only", "i2vda", "no_tc", "online_linear"], [0, 1])
    # Heaviest first, seeds in order, ties in the given order.
    order = [(c[0].name, c[1].name) for c in chains]
    assert [o[0] for o in order] == [
        f"train_{v}_seed{s}" for v in ("i2vda", "online_linear", "adv_only", "no_tc", "source_only") for s in (0, 1)
    ]
    for train_step, eval_step in chains:
        train, evaluate = parse(train_step), parse(eval_step)
        assert train["max_iter"] == 600 and train["arch"] == "deeplab_tiny" and train["batch_size"] == 2
        assert train["iter_copy"] == train["iter_launch"] == 96  # 600 * 8000 / 50000, the paper's 16%
        assert train["checkpoint_interval"] == 150 and train["resume"] == "latest"
        assert train["lr"] == PRESET.lr and train["lr_d"] == PRESET.lr_d
        # Every method fine-tunes from the same init, read through the DeepLab ImageNet loader.
        assert (train["init"], train["init_format"]) == (str(init_path(PRESET, paths)), "deeplab")
        assert train["shards"] == str(tmp_path / "stores") and train["target"] == "cityscapes_seq"
        assert str(evaluate["ckpt"]) == train["out"] and str(evaluate["val"]) == str(tmp_path / "stores/cityscapes_val")
        variant, seed = train_step.name[len("train_") :].rsplit("_seed", 1)
        assert train["seed"] == int(seed) and train["out"] == str(tmp_path / "runs" / f"{variant}_seed{seed}")
        assert train["method"] == {"source_only": "source_only", "adv_only": "adv_only"}.get(variant, "i2vda")
        assert train["no_tc"] == (variant == "no_tc")
        assert train["online_flow"] == ("linear" if variant == "online_linear" else "estimator")
    oracle = parse(plan_runs(PRESET, paths, ["oracle"], [0])[0][0])
    assert (oracle["source"], oracle["method"]) == ("cityscapes", "source_only")
    assert oracle["init"] == str(init_path(PRESET, paths))
    scratch = parse(plan_runs(SCRATCH, paths, ["adv_only"], [0])[0][0])
    assert scratch["init"] is None and scratch["lr"] == 0.01 and scratch["bn_stats"] == "target"
    assert set(VARIANTS) >= {"no_temporal_aug", "no_occlusion", "no_entropy"}


def test_a_rescoring_row_shares_its_training_run_and_bn_stats_follow_the_preset(tmp_path):
    paths = Paths(tmp_path)
    chains = plan_runs(PRESET, paths, ["source_only", "source_only_adabn", "adv_only", "i2vda_bn_all", "oracle"], [0])
    names = [[step.name for step in chain] for chain in chains]
    assert ["train_source_only_seed0", "eval_source_only_seed0", "eval_source_only_adabn_seed0"] in names
    assert sum(step.name.startswith("train_source_only") for chain in chains for step in chain) == 1
    steps = {step.name: parse(step) for chain in chains for step in chain}
    assert steps["eval_source_only_adabn_seed0"]["adapt_bn"] > 0 and steps["eval_source_only_seed0"]["adapt_bn"] == 0
    assert steps["eval_source_only_adabn_seed0"]["ckpt"] == steps["eval_source_only_seed0"]["ckpt"]
    # Methods that see target frames take the preset's --bn-stats; a row's own flag wins; source-only has none.
    assert steps["train_adv_only_seed0"]["bn_stats"] == PRESET.bn_stats == "target"
    assert steps["train_i2vda_bn_all_seed0"]["bn_stats"] == "all"
    assert steps["train_source_only_seed0"]["bn_stats"] == steps["train_oracle_seed0"]["bn_stats"] == "all"
    late = parse(plan_runs(PRESET, paths, ["i2vda_late"], [0])[0][0])  # M' at half the schedule: the row's flags win
    assert late["iter_copy"] == late["iter_launch"] == PRESET.max_iter // 2 == 300


def test_paired_table_by_hand():
    a = [{"miou": 30.0}, {"miou": 25.0}, {"miou": 28.0}]
    b = [{"miou": 27.0}, {"miou": 26.0}, {"miou": 25.0}]  # differences +3, -1, +3: mean 1.667, std sqrt(16/3)=2.309
    assert paired_table([(("A", a), ("B", b))])[2] == "| A − B | +3.0, -1.0, +3.0 | 1.7 ± 2.3 | 2/3 |"


def test_skip_logic_on_fake_outputs(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "iter_0000300.pt").touch()
    assert not training_done(run, 600)  # halfway: train again (it resumes)
    (run / "checkpoints" / "iter_0000600.pt").touch()
    assert training_done(run, 600)
    (run / "checkpoints" / "iter_0000900.pt").touch()
    with pytest.raises(InputError, match="--iters 600"):
        training_done(run, 600)
    out = tmp_path / "eval"
    assert not eval_done(out, 600)
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"iteration": 300}))
    assert not eval_done(out, 600)
    (out / "metrics.json").write_text(json.dumps({"iteration": 600}))
    assert eval_done(out, 600)
    store = tmp_path / "store"
    store.mkdir()
    assert not store_done(store, (256, 128))
    manifest = {"complete": False, "config": {"size_wh": [256, 128]}}
    write_manifest(store, manifest)  # a real manifest (with its format line), as i2vda-prep writes it
    assert not store_done(store, (256, 128))
    write_manifest(store, {**manifest, "complete": True})
    assert store_done(store, (256, 128)) and not store_done(store, (224, 128))
    world = tmp_path / "world"
    world.mkdir()
    assert not world_done(world, 3, {"val_snippets": 8})
    (world / "world.json").write_text(json.dumps({"seed": 3, "config": {"val_snippets": 8, "synthia_frames": 0}}))
    assert world_done(world, 3, {"val_snippets": 8}) and not world_done(world, 4, {"val_snippets": 8})
    assert not world_done(world, 3, {"val_snippets": 4})


def test_runner_skips_done_steps_and_reports_a_failure(tmp_path, capsys, monkeypatch):
    # Cheap children: the runner is generic over the tool; the real tools' flags are checked by parsing above.
    monkeypatch.setitem(runner.TOOL_MODULES, "json-tool", "json.tool")
    monkeypatch.setitem(runner.TOOL_MODULES, "timeit", "timeit")
    never_run = Step("done_already", "json-tool", ("--no-such-flag",), lambda: True)
    assert run_steps([never_run], [], tmp_path / "logs", jobs=1, threads=1) == ["done_already"]
    failing = Step("bad_json", "json-tool", (str(tmp_path / "absent.json"),), lambda: False)
    slow = Step("slow", "timeit", ("-n", "1", "-r", "1", "__import__('time').sleep(60)"), lambda: False)
    start = time.perf_counter()
    with pytest.raises(StepFailed) as caught:
        run_steps([], [[slow], [failing]], tmp_path / "logs", jobs=2, threads=1)
    assert time.perf_counter() - start < 30  # the failure stopped the sleeping sibling
    report = caught.value.report().splitlines()
    assert report[0] == "error: step bad_json failed (exit status 2)"
    assert report[1] == f"command: json-tool {tmp_path / 'absent.json'}"
    assert report[2].startswith(f"log: {tmp_path / 'logs' / 'bad_json.log'}")
    assert "absent.json" in report[-1] and "No such file" in report[-1]  # the child's last line
    out = capsys.readouterr().out
    assert "[ 1/1] done_already" in out and "skipped" in out and "bad_json" in out


def test_a_demo_folder_with_another_preset_is_refused_and_fresh_clears_it(tmp_path):
    paths = Paths(tmp_path / "demo")
    check_preset(paths, {"max_iter": 600, "size": (256, 128)}, fresh=False)
    check_preset(paths, {"max_iter": 600, "size": (256, 128)}, fresh=False)  # same preset: fine
    (paths.runs / "i2vda_seed0").mkdir(parents=True)
    with pytest.raises(InputError, match="max_iter=600.*1200.*--fresh"):
        check_preset(paths, {"max_iter": 1200, "size": (256, 128)}, fresh=False)
    (tmp_path / "demo" / "mine.txt").write_text("not the demo's")
    check_preset(paths, {"max_iter": 1200, "size": (256, 128)}, fresh=True)
    assert not paths.runs.exists() and (tmp_path / "demo" / "mine.txt").exists()


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    for args in (["--methods", "source_only,magic"], ["--variants", "oracl"], ["--seeds", "0,a"]):
        with pytest.raises(SystemExit) as caught:
            main(["--out", str(tmp_path / "demo"), *args])
        assert caught.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --") and "\n" not in err
    assert not (tmp_path / "demo").exists()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "a_file")])
    assert capsys.readouterr().err.strip() == f"error: --out {tmp_path / 'a_file'}: exists and is not a folder"


def test_tables_give_mean_and_sample_std_over_seeds():
    assert format_cell([40.0, 42.0, 44.0]) == "42.0 ± 2.0"  # mean 42, sqrt((4 + 0 + 4) / 2) = 2
    assert format_cell([41.26]) == "41.3" and format_cell([None, None]) == "–"
    assert format_cell([10.0, None, 20.0]) == "15.0 ± 7.1"  # sqrt(50) = 7.07
    seeds = [
        {"miou": 40.0, "tc": 70.0, "per_class": {"road": 90.0, "bus": None}},
        {"miou": 44.0, "tc": 74.0, "per_class": {"road": 80.0, "bus": None}},
    ]
    one = [{"miou": 30.0, "tc": None, "per_class": {"road": 75.0, "bus": None}}]
    assert summary_table([("I2VDA", seeds), ("Source only", one)]) == [
        "| method | seeds | mIoU | TC |",
        "|---|---:|---:|---:|",
        "| I2VDA | 2 | 42.0 ± 2.8 | 72.0 ± 2.8 |",  # sqrt(8) = 2.83
        "| Source only | 1 | 30.0 | – |",
    ]
    assert per_class_table([("I2VDA", seeds)]) == [
        "| method | road | bus | mIoU |",
        "|---|---:|---:|---:|",
        "| I2VDA | 85.0 ± 7.1 | – | 42.0 ± 2.8 |",
    ]
    records = {"world": {"wall_s": 36.4, "skipped": True}, "train_x": {"wall_s": None, "skipped": False}}
    assert steps_table(records)[2:] == ["| world | 36 | earlier |", "| train_x | – | now |"]


def test_figure_shows_frames_labels_and_each_methods_prediction(tmp_path):
    protocol = get_protocol("viper15")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 16, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, protocol.num_classes, (2, 16, 32)).astype(np.uint8)
    (tmp_path / "val").mkdir()
    with ValWriter(tmp_path / "val" / "val.h5") as writer:
        for i, key in enumerate(("a_000000_000019", "b_000000_000019")):
            flows = np.zeros((1, 2, 16, 32), np.float32)
            writer.add(encode_val_item(key, np.stack([frames[i]] * 2), flows, {"viper15": labels[i]}, (18, 19), 1, {}))
        writer.commit()
    torch.manual_seed(0)
    model = build_segmenter("deeplab_tiny", protocol.num_classes)
    config = {
        "arch": "deeplab_tiny",
        "num_classes": protocol.num_classes,
        "protocol": "viper15",
        "target_size_hw": [16, 32],
    }
    torch.save({"model": model.state_dict(), "config": config, "iteration": 5}, tmp_path / "iter_0000005.pt")
    columns = [("A", tmp_path / "iter_0000005.pt"), ("B", tmp_path / "iter_0000005.pt")]
    picture = cv2.imread(str(write_figure(tmp_path / "f.png", tmp_path / "val", columns)))[..., ::-1]  # RGB
    grid_h = TITLE_HEIGHT + 2 * 16 + 3 * GRID_PAD
    assert picture.shape[1:] == (4 * 32 + 5 * GRID_PAD, 3) and picture.shape[0] > grid_h  # the class legend below
    for row in range(2):
        top = GRID_PAD + TITLE_HEIGHT + row * (16 + GRID_PAD)
        tile = [picture[top : top + 16, GRID_PAD + c * (32 + GRID_PAD) :][:, :32] for c in range(4)]
        assert np.array_equal(tile[0], frames[row]) and np.array_equal(tile[1], colorize(labels[row], protocol))
        assert np.array_equal(tile[2], tile[3])  # the same checkpoint twice: the same prediction
        palette = {tuple(c) for c in np.asarray(protocol.palette)}
        assert {tuple(p) for p in tile[2].reshape(-1, 3)} <= palette  # a prediction is drawn in class colours
