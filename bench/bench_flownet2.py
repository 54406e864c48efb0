"""FlowNet2 forward time and peak memory at 1024x512, per batch size, each in a fresh process.

    .venv/bin/python bench/bench_flownet2.py [--batches 1,2] [--repeats 3] [--size 1024x512] [--device cpu]
                                             [--out bench/out/flownet2.json]

Weights are random (timing and memory do not depend on their values). A forward is `FlowNet2()(x)` under
`torch.no_grad()` on a (B, 3, 2, H, W) batch; the time is the median over `--repeats` runs after one warm-up run.
Memory is the process's peak resident set size (ru_maxrss) after the runs, and the peak minus the resident size
once the model is built, i.e. what the forward pass itself needs on top of the 650 MB of weights. On CUDA, the
peak is torch.cuda.max_memory_allocated. The correlation layer alone (FlowNetC's 441 channels at 1/8 of the size)
is timed as well.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import torch

from pipeline.flow.correlation import correlation
from pipeline.flow.flownet2 import FlowNet2

CORRELATION_STRIDE = 8  # FlowNetC correlates conv3 features, at 1/8 of the input size
CORRELATION_CHANNELS = 256  # conv3's channels
MIB = 1024 * 1024


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # Linux reports KiB


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / MIB


def _timed(fn, repeats: int, device: torch.device) -> list[float]:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def measure(batch: int, size_hw: tuple[int, int], repeats: int, device: torch.device) -> dict:
    """One configuration, in this process: forward times, memory, correlation time."""
    h, w = size_hw
    torch.manual_seed(0)
    model = FlowNet2().to(device).eval()
    frames = torch.rand(batch, 3, 2, h, w, device=device) * 255
    rss_model = _rss_now_mib()
    with torch.no_grad():
        times = _timed(lambda: model(frames), repeats, device)
        features = torch.randn(
            2, batch, CORRELATION_CHANNELS, h // CORRELATION_STRIDE, w // CORRELATION_STRIDE, device=device
        )
        corr_times = _timed(lambda: correlation(features[0], features[1]), repeats, device)
    result = {
        "batch": batch,
        "size_wh": [w, h],
        "device": str(device),
        "threads": torch.get_num_threads(),
        "forward_s": times,
        "forward_median_s": statistics.median(times),
        "correlation_median_s": statistics.median(corr_times),
        "rss_after_model_mib": round(rss_model, 1),
        "rss_peak_mib": round(_rss_peak_mib(), 1),
        "load_average_1min": os.getloadavg()[0],  # other processes on the machine slow the timings down
    }
    result["forward_extra_rss_mib"] = round(result["rss_peak_mib"] - rss_model, 1)
    if device.type == "cuda":
        result["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@click.command()
@click.option("--batches", default="1,2", show_default=True, help="comma-separated batch sizes")
@click.option("--repeats", default=3, show_default=True, help="timed runs per configuration (after one warm-up)")
@click.option("--size", "size_wh", default="1024x512", show_default=True, help="input size WxH (multiples of 64)")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", default="bench/out/flownet2.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--worker-batch", type=int, default=None, hidden=True)  # internal: measure one batch size and exit
def main(batches: str, repeats: int, size_wh: str, device: str, out: str, worker_batch: int | None) -> None:
    """Benchmark FlowNet2's forward pass (time, peak memory) at one size for several batch sizes."""
    w, h = (int(n) for n in size_wh.lower().split("x"))
    if worker_batch is not None:
        print(json.dumps(measure(worker_batch, (h, w), repeats, torch.device(device))))
        return
    results = []
    for batch in (int(b) for b in batches.split(",")):
        # A fresh process per configuration, so that each peak RSS is its own.
        command = [
            sys.executable,
            __file__,
            "--worker-batch",
            str(batch),
            "--repeats",
            str(repeats),
            "--size",
            size_wh,
            "--device",
            device,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"FlowNet2 forward at {w}x{h} on {device} ({_cpu_name()}, torch {torch.__version__}, "
        f"{results[0]['threads']} threads), median of {repeats} runs after one warm-up:"
    )
    print(
        f"{'batch':>5} {'forward s':>10} {'s/pair':>8} {'corr s':>8} {'peak RSS MiB':>13} {'forward extra MiB':>18}"
        f" {'load avg':>9}"
    )
    for r in results:
        per_pair = r["forward_median_s"] / r["batch"]
        memory = f"{r['rss_peak_mib']:>13.0f} {r['forward_extra_rss_mib']:>18.0f}"
        print(
            f"{r['batch']:>5} {r['forward_median_s']:>10.2f} {per_pair:>8.2f} {r['correlation_median_s']:>8.3f} "
            f"{memory} {r['load_average_1min']:>9.1f}"
        )
    report = {"cpu": _cpu_name(), "torch": torch.__version__, "repeats": repeats, "results": results}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
