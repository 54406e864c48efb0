"""The data wait of `i2vda-train` streaming its stores over HTTP, against the same run reading the local folder.

    .venv/bin/python bench/bench_remote.py [--iters 60] [--workers 2] [--repeats 1] [--out bench/out/bench_remote.json]

Stores: `bench/gpu_stream.py`'s synthetic stores at the demo's sizes (target 256x128 pairs with DIS flows, source
224x128), written once into a temporary folder and served by `python -m http.server` in its own process on
127.0.0.1 (a real server: no Range support, one connection per file). Each repeat runs `i2vda-train` twice, local
folder first, then `--shards http://127.0.0.1:PORT/`, with the settings of `gpu_stream.train_run` (deeplab_tiny,
L_tc from the first iteration with the linear F_1->t: the fastest iteration, so the largest data-wait share) and
`--workers` DataLoader workers; the data-wait share and iterations per second come from each run's log.jsonl, the
first fifth of its windows dropped as warm-up. The runs alternate, so a change in the machine's load hits both.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click
from gpu_stream import train_run, write_stores

TARGET_HW, SOURCE_HW = (128, 256), (128, 224)  # the demo's sizes
PAIRS, PER_SHARD = 64, 16
SERVER_START_S = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """`python -m http.server` serving `folder` on 127.0.0.1; -> (process, base URL) once it answers."""
    port = _free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            urllib.request.urlopen(url + "viper/manifest.json", timeout=5).close()
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)


@click.command()
@click.option("--iters", default=60, show_default=True)
@click.option("--workers", default=2, show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch threads of the training process")
@click.option("--repeats", default=1, show_default=True)
@click.option("--out", default="bench/out/bench_remote.json", show_default=True)
def main(iters: int, workers: int, threads: int, repeats: int, out: str) -> None:
    """Run the benchmark and write its JSON."""
    work = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    stores = work / "stores"
    written = write_stores(stores, TARGET_HW, SOURCE_HW, PAIRS, PER_SHARD)
    server, url = start_server(stores)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"local": [], "http": []}
    try:
        for repeat in range(repeats):
            for name, shards in (("local", str(stores)), ("http", url)):
                settings = dict(iters=iters, batch=1, arch="deeplab_tiny", disc_width=16, device="cpu", amp="off")
                result = train_run(
                    shards, work / f"{name}{repeat}", workers, threads=threads, timeout_s=1800, **settings
                )
                if "error" in result:
                    raise SystemExit(f"{name}: {result['error']}")
                runs[name].append(result)
                print(f"{name} {repeat}: {result['it_per_s']:.2f} it/s, data wait {result['data_wait_frac']:.2%}")
    finally:
        server.terminate()
        server.wait()
    summary = {
        name: {
            "data_wait_frac_median": statistics.median(r["data_wait_frac"] for r in results),
            "it_per_s_median": statistics.median(r["it_per_s"] for r in results),
        }
        for name, results in runs.items()
    }
    result = {
        "target_hw": TARGET_HW,
        "source_hw": SOURCE_HW,
        "stores": written,
        "iterations": iters,
        "workers": workers,
        "threads": threads,
        "repeats": repeats,
        "runs": runs,
        "summary": summary,
        "load_avg_1min_before_after": [load_before, os.getloadavg()[0]],
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
