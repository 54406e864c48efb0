"""Peak memory of i2vda-train, i2vda-prep inspect and i2vda-eval on hostile 128x64 stores (issue 19's bombs).

Each case builds a clean 128x64 store pair (tests/hostile_stores.py), plants one crafted member or shard whose
manifest entry matches it (bytes, sha256), and runs each tool once in a subprocess confined to a memory cgroup of
`--cap-gib` (as root with cgroup v1 or v2, so a bomb is an OOM kill inside the cgroup, as on a cluster node) or, where
no cgroup can be made, under RLIMIT_AS of that size. It records the exit status, the last stderr line, the number of
stderr lines and the peak resident memory (wait4's ru_maxrss: the process and the DataLoader workers it reaped).
`--repo DIR` runs the tools of another checkout of the code (e.g. `git archive` of the tree before a change), with the
same crafted stores.

    .venv/bin/python bench/bench_hostile.py --out bench/out/bench_hostile.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the crafting helpers live with the tests that use them

import click  # noqa: E402
import hostile_stores as hs  # noqa: E402

GIB = 2**30
MEMORY_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")


def _bombs() -> dict:
    """{case: (store, member field or None, what to plant)}; the planting functions build lazily (seconds each)."""
    return {
        "clean": None,
        "flow header 16384x16384 (zstd frame of 1 GiB)": ("tgt", "flow01.zflow", lambda: hs.flow_bytes(16384, 16384)),
        "flow header 32768x32768 (zstd frame of 4 GiB)": ("tgt", "flow01.zflow", lambda: hs.flow_bytes(32768, 32768)),
        "flow header 4294967295x4294967295": ("tgt", "flow01.zflow", lambda: hs.flow_bytes(2**32 - 1, 2**32 - 1, 1)),
        "PNG IHDR 20000x20000": ("tgt", "frame0.png", lambda: hs.png_bytes(20000, 20000)),
        "PNG IHDR 30000x30000": ("tgt", "frame0.png", lambda: hs.png_bytes(30000, 30000)),
        "gzipped shard, 1 GiB member": ("tgt", None, lambda: hs.gzip_tar_chunks("t0_0.meta.json", GIB)),
        "gzipped shard, 3 GiB member": ("tgt", None, lambda: hs.gzip_tar_chunks("t0_0.meta.json", 3 * GIB)),
        "GNU sparse member of 4 GiB in a 420 KB shard": (
            "tgt",
            None,
            lambda: hs.sparse_tar("t0_0.frame0.png", 4 * GIB),
        ),
    }


VAL_BOMBS = {  # the same flow members inside val.h5, for i2vda-eval
    "clean": None,
    "flow header 16384x16384 (zstd frame of 1 GiB)": lambda: hs.flow_bytes(16384, 16384),
    "flow header 32768x32768 (zstd frame of 4 GiB)": lambda: hs.flow_bytes(32768, 32768),
    "flow header 4294967295x4294967295": lambda: hs.flow_bytes(2**32 - 1, 2**32 - 1, 1),
}


def memory_cgroup(cap_bytes: int) -> Path | None:
    """A fresh memory cgroup limited to cap_bytes below this process's own, or None (not root, no cgroup fs)."""
    own = {
        line.split(":")[1]: line.split(":")[2].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
    }
    candidates = []
    if "memory" in own:  # cgroup v1
        candidates.append((MEMORY_CGROUP_V1 / own["memory"].lstrip("/"), "memory.limit_in_bytes"))
    if "" in own:  # cgroup v2
        candidates.append((CGROUP_V2 / own[""].lstrip("/"), "memory.max"))
    for parent, limit_file in candidates:
        group = parent / f"bench_hostile_{os.getpid()}"
        try:
            group.mkdir()
            (group / limit_file).write_text(str(cap_bytes))
            return group
        except OSError:
            if group.is_dir():
                group.rmdir()
    return None


def run_tool(argv: list[str], repo: Path, cap_bytes: int, group: Path | None) -> dict:
    env = {"PYTHONPATH": str(repo)}
    if group is not None:
        prefix = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh"]
        outcome = hs.run_limited(prefix + argv, None, timeout_s=600, env=env, cwd=repo)
    else:
        outcome = hs.run_limited(argv, cap_bytes, timeout_s=600, env=env, cwd=repo)
    lines = outcome.error_lines()
    return {
        "returncode": outcome.returncode,
        "peak_rss_mib": round(outcome.peak_rss_mib, 1),
        "stderr_lines": len(lines),
        "last_stderr_line": lines[-1][:240] if lines else "",
        "timed_out": outcome.timed_out,
    }


@click.command()
@click.option("--repo", type=click.Path(path_type=Path), default=REPO, help="Checkout whose tools are measured.")
@click.option("--cap-gib", type=float, default=6.0, show_default=True, help="Memory cgroup (or RLIMIT_AS) per run.")
@click.option("--cases", multiple=True, help="A case name (repeat for several; default: all).")
@click.option(
    "--tools", multiple=True, default=("train", "train-w2", "inspect", "eval"), show_default=True, help="Tools run."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON file of the results.")
def main(repo: Path, cap_gib: float, cases: tuple[str, ...], tools: tuple[str, ...], out: Path | None) -> None:
    """Peak memory of i2vda-train, i2vda-prep inspect and i2vda-eval on hostile 128x64 stores."""
    cap = int(cap_gib * GIB)
    group = memory_cgroup(cap)
    results = {"repo": str(repo), "cap_gib": cap_gib, "limit": "cgroup" if group else "RLIMIT_AS"}
    results["cases"] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench_hostile_") as tmp:
            checkpoint = hs.segmenter_checkpoint(Path(tmp) / "ckpt" / "iter_0000001.pt")
            for case, bomb in _bombs().items():
                if cases and case not in cases:
                    continue
                stores = hs.clean_stores(Path(tmp) / f"case{len(results['cases'])}" / "stores")
                if bomb is not None:
                    store, field, make = bomb
                    if field is None:
                        hs.replace_shard(stores, store, make())
                    else:
                        hs.with_member(stores, store, field, make())
                row = {}
                for tool in tools:
                    start = time.perf_counter()
                    if tool.startswith("train"):
                        workers = 2 if tool == "train-w2" else 0
                        argv = hs.tool("trainer.training.cli", *hs.train_args(stores, stores.parent / tool, workers))
                    elif tool == "inspect":
                        sheet = str(stores.parent / "sheet.png")
                        argv = hs.tool("pipeline.cli", "inspect", str(stores / "tgt"), "--sheet", sheet)
                    else:
                        if case not in VAL_BOMBS:
                            continue
                        make = VAL_BOMBS[case]
                        val = hs.val_store(stores.parent / "val", flow=None if make is None else make())
                        argv = hs.tool(
                            "trainer.evaluation.eval_cli",
                            *("--ckpt", str(checkpoint), "--val", str(val), "--out", str(stores.parent / "eval")),
                            *("--device", "cpu", "--save-pred", "0"),
                        )
                    row[tool] = run_tool(argv, repo, cap, group) | {"wall_s": round(time.perf_counter() - start, 1)}
                    print(f"{case:48s} {tool:9s} {json.dumps(row[tool])}", flush=True)
                results["cases"][case] = row
    finally:
        if group is not None:
            group.rmdir()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
