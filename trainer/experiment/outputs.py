"""Where the demo writes under OUT, and when each of its steps' outputs are complete (a done step is skipped)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.shards import open_store
from trainer.evaluation.eval_cli import METRICS_NAME
from trainer.experiment.runner import read_json
from trainer.training.checkpoint import checkpoint_path, latest_checkpoint
from trainer.training.monitor import LOG_NAME


@dataclass(frozen=True)
class Paths:
    """Where the demo writes, all under OUT."""

    out: Path

    world = property(lambda self: self.out / "world")
    stores = property(lambda self: self.out / "stores")
    runs = property(lambda self: self.out / "runs")
    evals = property(lambda self: self.out / "eval")
    logs = property(lambda self: self.out / "logs")
    preset = property(lambda self: self.out / "preset.json")
    owned = property(
        lambda self: (
            self.world,
            self.stores,
            self.runs,
            self.evals,
            self.logs,
            self.preset,
            self.out / "results.json",
            self.out / "results.md",
            self.out / "figure.png",
        )
    )

    def run(self, variant: str, seed: int) -> Path:
        return self.runs / f"{variant}_seed{seed}"

    def eval(self, variant: str, seed: int) -> Path:
        return self.evals / f"{variant}_seed{seed}"


def check_preset(paths: Paths, preset: dict, fresh: bool) -> None:
    """Start over with --fresh; refuse an OUT made with another preset (its finished runs would be mixed in)."""
    if paths.out.exists() and not paths.out.is_dir():
        raise InputError(f"--out {paths.out}: exists and is not a folder")
    if fresh:
        for path in paths.owned:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    wanted = json.loads(json.dumps(preset))  # tuples as JSON lists, as read back
    held = read_json(paths.preset)
    if held is not None and held != wanted:
        diff = next(k for k in sorted({*wanted, *held}) if held.get(k) != wanted.get(k))
        raise InputError(
            f"--out {paths.out}: holds a demo with {diff}={held.get(diff)!r}, this one has "
            f"{wanted.get(diff)!r}; pass --fresh to redo it or choose another --out"
        )
    paths.out.mkdir(parents=True, exist_ok=True)
    paths.preset.write_text(json.dumps(wanted, indent=1) + "\n")


def world_done(world: Path, seed: int, counts: dict) -> bool:
    """world.json (written last) exists and records this seed and these world options (e.g. val_snippets)."""
    summary = read_json(world / "world.json") or {}
    config = summary.get("config", {})
    return summary.get("seed") == seed and all(config.get(k) == v for k, v in counts.items())


def store_done(store: Path, size_wh: tuple[int, int]) -> bool:
    """The store's manifest says complete, at this (W, H)."""
    try:
        info = open_store(store)
    except InputError:  # no store yet, or a foreign or unreadable manifest: the prep step (re)builds it
        return False
    return info.complete and info.size_wh == tuple(size_wh)


def training_done(run: Path, max_iter: int) -> bool:
    """The run holds its final checkpoint; one beyond max_iter is refused (the table would mix schedules)."""
    latest = latest_checkpoint(run)
    if latest is not None and latest.name > checkpoint_path(run, max_iter).name:  # fixed-width iteration numbers
        raise InputError(f"--iters {max_iter}: {run} was already trained further ({latest.name}); pass --fresh")
    return checkpoint_path(run, max_iter).is_file()


def training_progress(run: Path, max_iter: int) -> str:
    """'240/600 it' from the run's log.jsonl ('' before its first line)."""
    try:
        last = (run / LOG_NAME).read_text().splitlines()[-1]
        return f"{json.loads(last)['iteration'] + 1}/{max_iter} it"
    except (OSError, IndexError, ValueError, KeyError):
        return ""


def eval_done(eval_dir: Path, max_iter: int) -> bool:
    """metrics.json exists and scores the final checkpoint."""
    return (read_json(eval_dir / METRICS_NAME) or {}).get("iteration") == max_iter
