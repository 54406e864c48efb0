"""The steps of `make demo` as child processes: when a step is done, one log each, `jobs` chains at a time."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.shards import open_store
from trainer.checkpoint import checkpoint_path, latest_checkpoint

TOOL_MODULES = {"i2vda-prep": "pipeline.cli", "i2vda-train": "trainer.cli", "i2vda-eval": "trainer.eval_cli"}
PREP_TOOL = "i2vda-prep"
# Torch, OpenMP and BLAS read these; a training or eval child gets the cores its slot owns (Ray sizes the prep).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
RAY_DEFAULTS = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # as the Makefile: local, no network
HEARTBEAT_S = 60.0  # seconds between the console lines that say how far the running steps are
LOG_TAIL_LINES = 20  # lines of a failed step's log shown on the console
NAME_WIDTH = 30  # console column of step names
RECORD_SUFFIX = ".json"  # OUT/logs/<step>.json: the command and wall time of the step's last successful run


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


def eval_done(eval_dir: Path, max_iter: int) -> bool:
    """metrics.json exists and scores the final checkpoint."""
    return (read_json(eval_dir / "metrics.json") or {}).get("iteration") == max_iter


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
    owned = property(lambda self: (self.world, self.stores, self.runs, self.evals, self.logs, self.preset,
                                   self.out / "results.json", self.out / "results.md", self.out / "figure.png"))

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
        raise InputError(f"--out {paths.out}: holds a demo with {diff}={held.get(diff)!r}, this one has "
                         f"{wanted.get(diff)!r}; pass --fresh to redo it or choose another --out")  # fmt: skip
    paths.out.mkdir(parents=True, exist_ok=True)
    paths.preset.write_text(json.dumps(wanted, indent=1) + "\n")


@dataclass(frozen=True)
class Step:
    """One console command of the demo, the test that its outputs are complete, and what it replaces."""

    name: str
    tool: str  # a key of TOOL_MODULES
    args: tuple[str, ...]
    done: Callable[[], bool]
    clears: tuple[Path, ...] = ()  # outputs of later steps that a rerun of this one makes stale
    progress: tuple[Path, int] | None = None  # (run folder, max_iter) of a training, for the heartbeat

    @property
    def argv(self) -> list[str]:
        """The command as run: this interpreter, `-m` the tool's module (works with or without the scripts)."""
        return [sys.executable, "-m", TOOL_MODULES[self.tool], *self.args]

    @property
    def command(self) -> str:
        """The command as a user types it."""
        return shlex.join((self.tool, *self.args))


class StepFailed(Exception):
    """A step exited non-zero or left incomplete outputs."""

    def __init__(self, step: Step, log: Path, why: str):
        super().__init__(f"{step.name}: {why}")
        self.step, self.log, self.why = step, log, why

    def report(self) -> str:
        """The step, its command and the last lines of its log (tqdm's carriage returns split into lines)."""
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-LOG_TAIL_LINES:]
        return "\n".join([f"error: step {self.step.name} failed ({self.why})", f"command: {self.step.command}",
                          f"log: {self.log} (last {len(lines)} lines)", *("  " + line for line in lines)])  # fmt: skip


def training_progress(run: Path, max_iter: int) -> str:
    """'240/600 it' from the run's log.jsonl ('' before its first line)."""
    try:
        last = (run / "log.jsonl").read_text().splitlines()[-1]
        return f"{json.loads(last)['iteration'] + 1}/{max_iter} it"
    except (OSError, IndexError, ValueError, KeyError):
        return ""


class Runner:
    """Runs steps as child processes with logs in `logs/`; the first failure stops every running child."""

    def __init__(self, logs: Path, total: int, threads: int):
        self.logs, self.total, self.threads = logs, total, threads
        self.lock = threading.Lock()
        self.started = 0
        self.live: dict[str, tuple[subprocess.Popen, float, Step]] = {}
        self.stopping = False
        self.skipped: list[str] = []

    def say(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)

    def env(self, step: Step) -> dict:
        env = {**RAY_DEFAULTS, **os.environ}
        if step.tool != PREP_TOOL:
            env.update({name: str(self.threads) for name in THREAD_VARS})
        return env

    def run_step(self, step: Step) -> None:
        """Skip a done step; else clear what it makes stale, run it into its log and check its outputs."""
        done = step.done()
        with self.lock:
            self.started += 1
            tag = f"[{self.started:>2}/{self.total}] {step.name:<{NAME_WIDTH}}"
            if done:
                self.skipped.append(step.name)
                print(f"{tag} skipped: outputs complete", flush=True)
                return
        for path in step.clears:
            shutil.rmtree(path, ignore_errors=True)
        log = self.logs / f"{step.name}.log"
        self.say(f"{tag} started")
        start = time.perf_counter()
        with open(log, "w") as handle:
            handle.write(f"$ {step.command}\n")
            handle.flush()
            with self.lock:
                if self.stopping:
                    return
                child = subprocess.Popen(step.argv, stdout=handle, stderr=subprocess.STDOUT, env=self.env(step))
                self.live[step.name] = (child, start, step)
            code = child.wait()
            with self.lock:
                del self.live[step.name]
        wall_s = time.perf_counter() - start
        if code != 0:
            raise StepFailed(step, log, f"exit status {code}")
        if not step.done():
            raise StepFailed(step, log, "exit status 0 but its outputs are incomplete")
        record = {"command": step.command, "wall_s": round(wall_s, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        (self.logs / f"{step.name}{RECORD_SUFFIX}").write_text(json.dumps(record) + "\n")
        self.say(f"{tag} done in {wall_s:.0f} s")

    def run_chain(self, chain: Sequence[Step]) -> None:
        for step in chain:
            if self.stopping:
                return
            self.run_step(step)

    def heartbeat(self) -> None:
        with self.lock:
            running = list(self.live.values())
        now = time.perf_counter()
        parts = [" ".join(filter(None, (step.name, step.progress and training_progress(*step.progress),
                                        f"{(now - start) / 60:.1f} min"))) for _, start, step in running]  # fmt: skip
        if parts:
            self.say("    running: " + "; ".join(parts))

    def stop(self) -> None:
        """Terminate every running child (each was started by this runner)."""
        with self.lock:
            self.stopping = True
            children = [child for child, _, _ in self.live.values()]
        for child in children:
            child.terminate()

    def run_chains(self, chains: Sequence[Sequence[Step]], jobs: int) -> None:
        """Each chain's steps in order, `jobs` chains at a time; raises the first StepFailed."""
        pool = ThreadPoolExecutor(max_workers=jobs)
        futures = [pool.submit(self.run_chain, chain) for chain in chains]
        try:
            while True:
                done, pending = wait(futures, timeout=HEARTBEAT_S, return_when=FIRST_EXCEPTION)
                failed = [f.exception() for f in done if f.exception() is not None]
                if failed:
                    raise failed[0]
                if not pending:
                    return
                self.heartbeat()
        except BaseException:
            self.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def run_steps(prep: Sequence[Step], chains: Sequence[Sequence[Step]], logs: Path, jobs: int, threads: int) -> list:
    """The prep steps one by one (Ray spreads each over every core), then the chains `jobs` at a time; -> skipped."""
    logs.mkdir(parents=True, exist_ok=True)
    runner = Runner(logs, len(prep) + sum(len(chain) for chain in chains), threads)
    runner.run_chains([prep], 1)
    runner.run_chains(chains, jobs)
    return runner.skipped


def step_records(logs: Path, steps: Sequence[Step], skipped: Sequence[str]) -> dict:
    """{step: {command, wall_s (of its last successful run; None if unknown), skipped (this time)}}."""
    records = {}
    for step in steps:
        record = read_json(logs / f"{step.name}{RECORD_SUFFIX}") or {}
        records[step.name] = {"command": step.command, "wall_s": record.get("wall_s"), "skipped": step.name in skipped}
    return records
