"""Fuzzing the stores (issue 19): MUTATIONS seeded mutations of a tiny store pair (tests/store_mutations.py:
manifests, tar headers, shard bytes, members; every other one on a target store of runs, layout 3), each trained on
by `i2vda-train` (a quarter with 2 DataLoader workers) and every fourth also shown by `i2vda-prep inspect`. Each run
is a child process forked from this one (no import cost, so ~250 runs fit in well under a minute), two at a time,
whose address space may grow by at most HEADROOM over this process's (RLIMIT_AS) and which is killed after
TIMEOUT_S. Each must end in exit 0 with training done (or the sheet written), or exit 2 with one `error:` line;
never a traceback, a kill, a timeout, a peak resident memory more than MAX_GROWTH_MIB above its start, or a write
outside its run folder.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hostile_stores import clean_stores, forked_many, train_args, warm_up
from store_mutations import mutate

from pipeline.cli import main as prep_main
from pipeline.errors import EXIT_BAD_INPUT
from trainer.training.cli import main as train_main

SEED = 19
MUTATIONS = 200
HEADROOM = 1 << 30  # a normal run's address space grows by 0.19 GiB (0.33 GiB with two DataLoader workers)
TIMEOUT_S = 60
MAX_GROWTH_MIB = 400  # a normal 2-iteration run grows by ~110 MiB, with workers its own process by ~100

pytestmark = pytest.mark.usefixtures("one_thread")


def _files(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (outside `skip`) with its size and modification time."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents
    }


def _verdict(outcome, done: Path | None) -> str | None:
    """None if the run ended as it must; else what went wrong."""
    lines = outcome.error_lines()
    if outcome.timed_out:
        return "timed out"
    if outcome.peak_rss_mib > MAX_GROWTH_MIB:
        return f"peak memory grew by {outcome.peak_rss_mib:.0f} MiB"
    if outcome.returncode == 0:
        if done is not None and not done.is_file():
            return f"exit 0 without {done.name}"
        return None if all(line.startswith("warning: ") for line in lines) else "exit 0 with stderr"
    if outcome.returncode == EXIT_BAD_INPUT and len(lines) == 1 and lines[0].startswith("error: "):
        return None
    return f"exit {outcome.returncode} with {len(lines)} stderr lines"


def test_mutated_stores_train_or_give_one_line(tmp_path):
    warm_up()
    # Target shards of both layouts: one sample per pair (2), and runs of consecutive frames (3, what prep writes).
    pristine = [clean_stores(tmp_path / f"pristine{layout}" / "stores", (32, 64), 2, layout) for layout in (2, 3)]
    rng = random.Random(SEED)
    cases, jobs = [], []
    for index in range(MUTATIONS):
        root = tmp_path / f"m{index:03d}"
        stores = shutil.copytree(pristine[index % 2], root / "stores")
        what = mutate(stores, rng)
        run = root / "run"
        workers = 2 if index % 4 == 1 else 0
        jobs.append((train_main, train_args(stores, run, workers)))
        cases.append((what, root, run, run / "checkpoints" / "iter_0000002.pt", f"train, {workers} workers"))
        if index % 4 == 0:
            store = stores / ("tgt" if "tgt" in what else "src")
            jobs.append((prep_main, ["inspect", str(store), "--sheet", str(run / "sheet.png")]))
            cases.append((what, root, run, run / "sheet.png", "inspect"))
    before = {str(root): _files(root, root / "run") for root in {case[1] for case in cases}}
    outcomes = forked_many(jobs, parallel=2, headroom_bytes=HEADROOM, timeout_s=TIMEOUT_S)

    failures, refused = [], 0
    for (what, root, run, done, tool), outcome in zip(cases, outcomes):
        problem = _verdict(outcome, done)
        if problem is None and _files(root, run) != before[str(root)]:
            problem = "a file outside the run folder changed"
        if problem is not None:
            failures.append(f"{what} [{tool}]: {problem}\n{outcome.stderr[-1500:]}")
        refused += outcome.returncode == EXIT_BAD_INPUT
    assert not failures, f"{len(failures)} of {len(cases)} runs failed:\n" + "\n".join(failures[:10])
    # The mutations reach the readers: most are refused, and some leave a store that still trains.
    assert len(cases) // 2 < refused < len(cases)
