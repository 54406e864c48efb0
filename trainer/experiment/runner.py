"""Console commands as resumable child processes: skipped when done, one log each, `jobs` chains at a time.

Generic over what the steps are: a step names one of the project's console scripts, its arguments and a test that
its outputs are complete. Children run as `python -m MODULE`, so they work with or without the installed scripts.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

DIST_NAME = "i2vda"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"  # in a checkout: the one list of console scripts
# Torch, OpenMP and BLAS read these; a pinned child gets the cores its slot owns.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
HEARTBEAT_S = 60.0  # seconds between the console lines that say how far the running steps are
LOG_TAIL_LINES = 20  # lines of a failed step's log shown on the console
NAME_WIDTH = 30  # console column of step names
RECORD_SUFFIX = ".json"  # LOGS/<step>.json: the command and wall time of the step's last successful run


def console_scripts() -> dict[str, str]:
    """{script: module} of the project's console scripts (`i2vda-prep = "pipeline.cli:main"` -> pipeline.cli), from
    pyproject.toml's [project.scripts] in a checkout, else from the installed distribution's entry points."""
    project = tomllib.loads(PYPROJECT.read_text()).get("project", {}) if PYPROJECT.is_file() else {}
    if project.get("name") == DIST_NAME:
        scripts = project.get("scripts", {})
    else:
        scripts = {
            ep.name: ep.value for ep in metadata.distribution(DIST_NAME).entry_points if ep.group == "console_scripts"
        }
    return {name: target.partition(":")[0].strip() for name, target in scripts.items()}


TOOL_MODULES = console_scripts()


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Step:
    """One console command, the test that its outputs are complete, and what it replaces."""

    name: str
    tool: str  # a key of TOOL_MODULES
    args: tuple[str, ...]
    done: Callable[[], bool]
    clears: tuple[Path, ...] = ()  # outputs of later steps that a rerun of this one makes stale
    progress: Callable[[], str] | None = None  # how far the running step is, in a few words, for the heartbeat
    pin_threads: bool = True  # False: the child sizes itself (e.g. Ray spreads it over every core)

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
        return "\n".join(
            [
                f"error: step {self.step.name} failed ({self.why})",
                f"command: {self.step.command}",
                f"log: {self.log} (last {len(lines)} lines)",
                *("  " + line for line in lines),
            ]
        )


class Runner:
    """Runs steps as child processes with logs in `logs/`; the first failure stops every running child."""

    def __init__(self, logs: Path, total: int, threads: int, env: Mapping[str, str] | None = None):
        self.logs, self.total, self.threads = logs, total, threads
        self.base_env = dict(env or {})  # defaults under the caller's environment
        self.lock = threading.Lock()
        self.started = 0
        self.live: dict[str, tuple[subprocess.Popen, float, Step]] = {}
        self.stopping = False
        self.skipped: list[str] = []

    def say(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)

    def env(self, step: Step) -> dict:
        env = {**self.base_env, **os.environ}
        if step.pin_threads:
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
        """One console line: each running step, its progress and its minutes so far."""
        with self.lock:
            running = list(self.live.values())
        now = time.perf_counter()
        parts = [
            " ".join(filter(None, (step.name, step.progress and step.progress(), f"{(now - start) / 60:.1f} min")))
            for _, start, step in running
        ]
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


def run_steps(
    prep: Sequence[Step],
    chains: Sequence[Sequence[Step]],
    logs: Path,
    jobs: int,
    threads: int,
    env: Mapping[str, str] | None = None,
) -> list:
    """The prep steps one by one (each may use every core), then the chains `jobs` at a time; -> the skipped steps.
    `env` holds defaults for the children's environment (the caller's own variables win)."""
    logs.mkdir(parents=True, exist_ok=True)
    runner = Runner(logs, len(prep) + sum(len(chain) for chain in chains), threads, env)
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
