"""Where does L_tc start to pay? I2VDA with a fixed teacher M' of controlled quality, against adversarial-only.

Each teacher is a segmenter from the demo's own runs (seed 0): the oracle at several iterations, source-only with and
without AdaBN, adversarial-only, and the self-trained proxy M' of the paper's I2VDA at a copy (`proxy@N`: the M' that
checkpoint N holds). Its quality is the precision of the Eq. 8 pseudo-labels it makes on the annotated val frames as
M' makes them in training (eval mode, E < delta; O left out: see diagnose_demo.py), with coverage and per-class
recall. For each teacher and seed, `i2vda-train` runs the demo's I2VDA preset with `--proxy-ckpt TEACHER`; the gain
is its mIoU minus adversarial-only's on the same seed (same init, same data order). A least-squares line through
(precision, gain) over every run gives the precision at which the gain crosses zero.

    python bench/break_even.py --demo runs/demo --seeds 0,1,2 --out bench/out/break_even \\
        [--teachers oracle@150,oracle@600,source_only,source_only_adabn,adv_only@600,proxy@150,proxy@600]

The demo folder must hold the runs the teachers come from (make demo's, plus `--variants oracle` for seed 0) and
adversarial-only for every seed. Writes OUT/break_even.json, OUT/break_even.md and OUT/break_even.png; training runs
go to OUT/runs and OUT/eval and are skipped when done, as make demo's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from functools import partial
from pathlib import Path

import click
import cv2
import numpy as np
import torch
from diagnose_demo import label_counts, label_summary

from pipeline.errors import InputError
from pipeline.shards import ValStore
from trainer.evaluation.evaluate import adapt_batchnorm, target_frames
from trainer.experiment.outputs import Paths, eval_done, training_done, training_progress
from trainer.experiment.plan import ADABN_FRAMES, EVAL_TOOL, TARGET_STORE, TRAIN_TOOL, VAL_STORE, DemoPreset, train_args
from trainer.experiment.runner import Step, StepFailed, read_json, run_steps
from trainer.models import build_segmenter
from trainer.training.checkpoint import checkpoint_path, load_segmenter, load_segmenter_weights

TEACHERS = ("oracle@150", "oracle@600", "source_only", "source_only_adabn", "adv_only@600", "proxy@150", "proxy@600")
TEACHER_SEED = 0  # every teacher comes from the seed-0 run of its method
PLOT_WH = (760, 500)
MARGIN = {"left": 80, "right": 30, "top": 40, "bottom": 70}


def _preset(paths: Paths) -> DemoPreset:
    held = read_json(paths.preset)
    if held is None:
        raise InputError(f"--demo {paths.out}: no preset.json; run make demo (python -m trainer.experiment) first")
    tuples = {f.name for f in fields(DemoPreset) if "tuple" in str(f.type)}
    return DemoPreset(**{k: tuple(v) if k in tuples else v for k, v in held.items()})


def _checkpoint(paths: Paths, method: str, iteration: int | None, preset: DemoPreset) -> Path:
    path = checkpoint_path(paths.run(method, TEACHER_SEED), iteration or preset.max_iter)
    if not path.is_file():
        raise InputError(f"teacher {method}: {path} is missing (train that run first)")
    return path


def write_teacher(name: str, paths: Paths, preset: DemoPreset, out: Path) -> Path:
    """The teacher's weights as a segmenter file for --proxy-ckpt ({"model": state dict}); written once."""
    target = out / "teachers" / f"{name.replace('@', '_')}.pt"
    if target.is_file():
        return target
    method, _, at = name.partition("@")
    iteration = int(at) if at else None
    if method == "proxy":  # the M' an I2VDA checkpoint holds: the copy it labelled with
        model, _, _ = load_segmenter(_checkpoint(paths, "i2vda", iteration, preset), weights="proxy")
    elif method == "source_only_adabn":
        model, _, _ = load_segmenter(_checkpoint(paths, "source_only", None, preset))
        adapt_batchnorm(model, target_frames(paths.stores / TARGET_STORE, ADABN_FRAMES), "cpu", 2)
    else:
        model, _, _ = load_segmenter(_checkpoint(paths, method, iteration, preset))
    state = model.state_dict()
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, target)
    return target


def teacher_quality(teacher: Path, paths: Paths, preset: DemoPreset, protocol: str, num_classes: int) -> dict:
    """Precision, coverage and per-class recall of the teacher's pseudo-labels, made as M' makes them."""
    net = load_segmenter_weights(build_segmenter(preset.arch, num_classes), teacher)  # as --proxy-ckpt loads it
    net.eval().requires_grad_(False)
    modes = {"proxy_bn": "running", "delta": 0.3}  # the paper's eval-mode M' and delta (the preset's)
    return label_summary(*label_counts(net, ValStore(paths.stores / VAL_STORE), protocol, modes), protocol)


def _miou(eval_dir: Path) -> float:
    metrics = read_json(eval_dir / "metrics.json")
    if metrics is None:
        raise InputError(f"{eval_dir}/metrics.json is missing: evaluate that run first")
    return float(metrics["miou"])


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y on x."""
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def draw_plot(points: list[dict], line: tuple[float, float], launch: float | None, path: Path) -> None:
    """Gain (mIoU, I2VDA with the teacher - adversarial-only) against the teacher's pseudo-label precision: each
    teacher's mean with its seeds' range, the fitted line, zero, and the self-trained proxy's precision at launch."""
    w, h = PLOT_WH
    img = np.full((h, w, 3), 255, np.uint8)
    xs = [p["precision"] for p in points] + ([launch] if launch is not None else [])
    ys = [g for p in points for g in p["gains"]] + [0.0]
    x_lo, x_hi = 5 * np.floor(min(xs) / 5), 5 * np.ceil(max(xs) / 5)
    y_lo, y_hi = 5 * np.floor(min(ys) / 5), 5 * np.ceil(max(ys) / 5)
    left, right, top, bottom = MARGIN["left"], w - MARGIN["right"], MARGIN["top"], h - MARGIN["bottom"]

    def px(x: float, y: float) -> tuple[int, int]:
        return (
            int(left + (x - x_lo) / (x_hi - x_lo) * (right - left)),
            int(bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)),
        )

    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (0, 0, 0)
    for x in np.arange(x_lo, x_hi + 0.1, 5):
        cv2.line(img, px(x, y_lo), px(x, y_hi), grey, 1)
        cv2.putText(img, f"{x:.0f}", (px(x, y_lo)[0] - 10, bottom + 20), font, 0.45, black, 1, cv2.LINE_AA)
    for y in np.arange(y_lo, y_hi + 0.1, 5):
        cv2.line(img, px(x_lo, y), px(x_hi, y), grey, 1)
        cv2.putText(img, f"{y:+.0f}", (left - 45, px(x_lo, y)[1] + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.line(img, px(x_lo, 0.0), px(x_hi, 0.0), black, 2)
    intercept, slope = line
    cv2.line(img, px(x_lo, intercept + slope * x_lo), px(x_hi, intercept + slope * x_hi), (200, 120, 0), 2, cv2.LINE_AA)
    if launch is not None:
        cv2.line(img, px(launch, y_lo), px(launch, y_hi), (0, 0, 220), 1, cv2.LINE_AA)
        cv2.putText(
            img,
            "self-trained M' at launch",
            (px(launch, y_hi)[0] + 5, top + 15),
            font,
            0.45,
            (0, 0, 220),
            1,
            cv2.LINE_AA,
        )
    placed: list[tuple[int, int, int]] = []  # (x0, x1, baseline y) of the labels drawn: a close one goes below
    for p in sorted(points, key=lambda p: p["precision"]):
        x, gains = p["precision"], p["gains"]
        cv2.line(img, px(x, min(gains)), px(x, max(gains)), black, 1, cv2.LINE_AA)
        cv2.circle(img, px(x, float(np.mean(gains))), 5, (40, 40, 40), -1, cv2.LINE_AA)
        (tw, th), _ = cv2.getTextSize(p["teacher"], font, 0.4, 1)
        lx, ly = px(x, float(np.mean(gains)))[0] + 7, px(x, float(np.mean(gains)))[1] - 6
        while any(x0 < lx + tw and lx < x1 and abs(ly - y) <= th + 4 for x0, x1, y in placed):
            ly += th + 6
        placed.append((lx, lx + tw, ly))
        cv2.putText(img, p["teacher"], (lx, ly), font, 0.4, black, 1, cv2.LINE_AA)
    cv2.putText(img, "teacher's pseudo-label precision (%)", (left + 150, h - 20), font, 0.55, black, 1, cv2.LINE_AA)
    cv2.putText(
        img,
        "mIoU gain over adversarial-only (I2VDA with a fixed teacher M')",
        (left - 40, 25),
        font,
        0.55,
        black,
        1,
        cv2.LINE_AA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


@click.command()
@click.option("--demo", "demo", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True, help="training seeds of the student runs")
@click.option("--teachers", default=",".join(TEACHERS), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench/out/break_even"), show_default=True)
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True)
def main(demo: Path, seeds: str, teachers: str, out: Path, jobs: int) -> None:
    """Measure the gain of L_tc against the teacher's pseudo-label precision, and where it crosses zero."""
    torch.set_num_threads(1)
    paths, seed_list, names = Paths(demo), [int(s) for s in seeds.split(",")], teachers.split(",")
    preset = _preset(paths)
    _, config, _ = load_segmenter(_checkpoint(paths, "adv_only", None, preset))
    protocol, num_classes = config.protocol, config.num_classes
    files = {name: write_teacher(name, paths, preset, out) for name in names}
    quality = {name: teacher_quality(files[name], paths, preset, protocol, num_classes) for name in names}
    chains = []
    for name in names:
        for seed in seed_list:
            run, scored = (
                out / "runs" / f"{name.replace('@', '_')}_seed{seed}",
                out / "eval" / f"{name.replace('@', '_')}_seed{seed}",
            )
            args = train_args(preset, paths, "i2vda", seed, out=run, extra=("--proxy-ckpt", str(files[name])))
            chains.append(
                [
                    Step(
                        f"train_{run.name}",
                        TRAIN_TOOL,
                        args,
                        partial(training_done, run, preset.max_iter),
                        progress=partial(training_progress, run, preset.max_iter),
                    ),
                    Step(
                        f"eval_{run.name}",
                        EVAL_TOOL,
                        ("--ckpt", str(run), "--val", str(paths.stores / VAL_STORE), "--out", str(scored)),
                        partial(eval_done, scored, preset.max_iter),
                    ),
                ]
            )
    try:
        run_steps([], chains, out / "logs", jobs, 1)
    except StepFailed as failure:
        click.echo(failure.report(), err=True)
        sys.exit(1)
    points = []
    for name in names:
        gains = [
            _miou(out / "eval" / f"{name.replace('@', '_')}_seed{s}") - _miou(paths.eval("adv_only", s))
            for s in seed_list
        ]
        q = quality[name]
        points.append(
            {
                "teacher": name,
                "precision": 100 * q["precision"],
                "coverage": 100 * q["coverage"],
                "gains": gains,
                "recall": {c: 100 * v["pl_recall"] for c, v in q["per_class"].items()},
            }
        )
    x = np.array([p["precision"] for p in points for _ in p["gains"]])
    y = np.array([g for p in points for g in p["gains"]])
    intercept, slope = fit_line(x, y)
    launch_name = f"proxy@{_launch_checkpoint(preset)}"
    launch = next((p["precision"] for p in points if p["teacher"] == launch_name), None)
    report = {
        "seeds": seed_list,
        "points": points,
        "fit": {"intercept": intercept, "slope": slope},
        "break_even_precision": -intercept / slope if slope else None,
        "self_trained_launch_precision": launch,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "break_even.json").write_text(json.dumps(report, indent=1))
    draw_plot(points, (intercept, slope), launch, out / "break_even.png")
    (out / "break_even.md").write_text("\n".join(markdown(report)) + "\n")
    click.echo("\n".join(markdown(report)))


def _launch_checkpoint(preset: DemoPreset) -> int:
    """The first checkpoint after ITER_LAUNCH: the M' it holds is the copy made at the launch."""
    interval = preset.checkpoint_interval
    return interval * (preset.iter_copy // interval + 1)


def markdown(report: dict) -> list[str]:
    """The teachers' table and the fitted break-even precision."""
    lines = [
        "| teacher M' (fixed) | PL precision % | PL coverage % | gain over adversarial-only, per seed | mean ± std |",
        "|---|---:|---:|---|---:|",
    ]
    for p in sorted(report["points"], key=lambda p: p["precision"]):
        gains = p["gains"]
        std = float(np.std(gains, ddof=1)) if len(gains) > 1 else float("nan")
        per_seed = ", ".join(f"{g:+.1f}" for g in gains)
        mean = f"{np.mean(gains):+.1f} ± {std:.1f}"
        lines.append(f"| {p['teacher']} | {p['precision']:.1f} | {p['coverage']:.1f} | {per_seed} | {mean} |")
    fit, even = report["fit"], report["break_even_precision"]
    lines.append("")
    lines.append(
        f"Least-squares line over all runs: gain = {fit['intercept']:.1f} + {fit['slope']:.2f} x precision; "
        f"it crosses zero at {even:.1f}% precision."
        if even is not None
        else "No slope: no crossing."
    )
    if report["self_trained_launch_precision"] is not None:
        lines.append(f"The self-trained proxy's precision at launch: {report['self_trained_launch_precision']:.1f}%.")
    return lines


if __name__ == "__main__":
    main()
