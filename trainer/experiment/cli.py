"""`make demo`: the built-in world -> i2vda-prep -> i2vda-train (baselines, I2VDA) -> i2vda-eval -> table and figure.

The three console commands run as a user would run them, one log per step in OUT/logs/. A step whose outputs are
complete is skipped, so a rerun after a crash goes on where it stopped (`--fresh` starts over).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import click

from pipeline.errors import InputError, one_line_errors
from trainer.experiment.outputs import Paths, check_preset
from trainer.experiment.plan import (
    PREFIX,
    RAY_DEFAULTS,
    REGIMES,
    VAL_STORE,
    VARIANTS,
    plan_prep,
    plan_runs,
    preset_of,
)
from trainer.experiment.report import collect_results, paired_rows, results_markdown, write_figure
from trainer.experiment.runner import StepFailed, run_steps, step_records
from trainer.training.checkpoint import checkpoint_path


def _names(text: str, flag: str, allowed) -> list[str]:
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise InputError(f"{flag} {','.join(bad)}: expected names from {', '.join(allowed)}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s]
    except ValueError:
        raise InputError(f"--seeds {text}: expected comma-separated integers, e.g. 0,1,2") from None


def _exit_on_sigterm(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so the running steps' children are stopped too."""
    raise SystemExit(128 + signum)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the demo world (and of training).")
@click.option("--seeds", default=None, help="Training seeds, e.g. 0,1,2: mean ± std [default: --seed].")
@click.option("--methods", default=",".join(PREFIX), show_default=True, help=f"Main rows: {', '.join(PREFIX)}.")
@click.option("--variants", default="", help=f"Extra rows: {', '.join(v for v in VARIANTS if v not in PREFIX)}.")
@click.option(
    "--regime",
    type=click.Choice(REGIMES),
    default=REGIMES[0],
    show_default=True,
    help="finetune: every method fine-tunes from the init pretrained on the world's ImageNet analog, 40 train "
    "snippets (the paper's regime); scratch: the first release's random init and 10 snippets.",
)
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Iterations per run [default: the preset's].")
@click.option("--lr", type=float, default=None, help="SGD learning rate of M [default: the preset's].")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Trainings run at once.")
@click.option("--fresh", is_flag=True, help="Delete what an earlier demo wrote in --out and start over.")
def cli(out, seed, seeds, methods, variants, regime, iters, lr, jobs, fresh) -> None:
    """Render the demo world, prepare it, train source-only, adversarial-only and I2VDA, evaluate, tabulate."""
    start = time.perf_counter()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    names = list(dict.fromkeys(_names(methods, "--methods", PREFIX) + _names(variants, "--variants", VARIANTS)))
    seeds = list(dict.fromkeys(_seeds(seeds))) if seeds is not None else [seed]
    if not names or not seeds:
        raise InputError("--methods/--variants/--seeds: expected at least one method and one seed to train")
    overrides = {k: v for k, v in (("max_iter", iters), ("lr", lr)) if v is not None}
    preset = dataclasses.replace(preset_of(regime), world_seed=seed, **overrides)
    paths = Paths(out)
    check_preset(paths, dataclasses.asdict(preset), fresh)
    prep, chains = plan_prep(preset, paths, "oracle" in names), plan_runs(preset, paths, names, seeds)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # One core per run: two 30-iteration adv_only runs took 49 s side by side at 1 thread, 366 s in turn at 2 threads.
    threads = max(1, cores // jobs)
    click.echo(
        f"demo: {len(names)} method(s) x {len(seeds)} seed(s) into {out}; {jobs} run(s) at a time, "
        f"{threads} torch thread(s) each; logs in {paths.logs}/"
    )
    try:
        skipped = run_steps(prep, chains, paths.logs, jobs, threads, env=RAY_DEFAULTS)
    except StepFailed as failure:
        click.echo(failure.report(), err=True)
        sys.exit(1)
    records = step_records(paths.logs, [*prep, *(step for chain in chains for step in chain)], skipped)
    rows, results = collect_results(paths, names, seeds, records)
    figure = write_figure(
        out / "figure.png",
        paths.stores / VAL_STORE,
        [
            (VARIANTS[n].title, checkpoint_path(paths.run(n, seeds[0]), preset.max_iter))
            for n in names
            if VARIANTS[n].train_as is None
        ],
    )  # rows that re-score a run: not drawn
    total_s = time.perf_counter() - start
    table = results_markdown(rows, preset.lines(), records, total_s, paired_rows(names, rows))
    (out / "results.md").write_text(table)
    summary = {
        "preset": dataclasses.asdict(preset),
        "seeds": seeds,
        "jobs": jobs,
        "threads": threads,
        "total_s": round(total_s, 1),
        "steps": records,
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    click.echo("\n" + table + f"\nwrote {out / 'results.md'}, {out / 'results.json'}, {figure}")


main = one_line_errors(cli)
