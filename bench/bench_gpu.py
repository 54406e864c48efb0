"""One prepared GPU benchmark of the I2VDA trainer: FlowNet2, M, M', D, the whole iteration, and streaming from stores.

    bench/gpu.sh [OPTIONS]             # a lent GPU machine: carried wheels, this script, the JSON copied to $OUT
    python bench/bench_gpu.py [--tiny] [--device auto|cuda|cpu] [--parts flownet2,deeplab,iteration,stream]
                              [--warmup 3] [--repeats 8] [--stream-workers 0,8] [--out bench/out/bench_gpu.json]

Everything is made here: smooth random frames with a smooth random flow (Cityscapes 1024x512), smooth random
images and labels (VIPER 896x512), random weights (time and memory do not depend on them); no store, checkpoint or
download is needed. Parts (`--parts`; the cases in bench/gpu_parts.py, the stream in bench/gpu_stream.py):
- flownet2: the loop's online F(I1, It) (`FlowNet2Estimator.estimate_torch`) at 1024x512, batch 1 and 2, fp32 and
  bf16 autocast, with and without channels_last weights.
- deeplab: DeepLab-v2 R101 M forward + backward + SGD on one source image; M's three passes (I_s, I_0, I_t) with
  the SGD update; M' forward on I_1; both together ("M alone", the yardstick of the 1.3x goal); D's update (Eq. 12);
  batch 1 and 2, fp32 and bf16.
- iteration: `segmenter_step` + `discriminator_step`, the code the loop runs, L_tc on, with the online FlowNet2
  F(I1, It) and with `--online-flow linear`; batch 1 and 2, fp32 and bf16.
- stream: stores of 32 pairs and 32 source images written in a temporary folder by the pipeline's own layers (DIS
  flows), then `i2vda-train --device cuda --amp bf16 --batch-size 2` for 50 iterations on them with 0 and 8
  DataLoader workers; it/s and the data-wait fraction come from its log.jsonl.
Each figure is the median over --repeats calls after --warmup calls, wall time between two
`torch.cuda.synchronize()`; on CUDA the JSON adds the GPU time between CUDA events and the case's peak allocated
memory. bf16 and channels_last run on CUDA only, as in the trainer. The derived figures (bench/gpu_report.py):
iterations per second, the hours of the paper's 50,000 iterations, the online flow's share of the iteration, the
iteration over "M alone". The JSON is rewritten after every part ("complete": false until the end), so a run cut
short keeps what it measured; a case that fails (e.g. out of memory) records its error and the others still run.
`--tiny`: small sizes, `deeplab_tiny`, one warm-up and two timed calls, one torch thread, on the CPU: a dry run of
every code path, which tests/test_bench_gpu.py runs in `make test`; not a measurement.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

try:
    import click
    import tensorboard  # noqa: F401  (i2vda-train's Monitor writes its events with it)
    import torch
    import webdataset  # noqa: F401  (i2vda-train streams the stores with it)
    from gpu_parts import PrebuiltFlowNet2, bench_deeplab, bench_flownet2, bench_iteration, make_batch, precisions
    from gpu_report import derived, print_table
    from gpu_stream import PROTOCOL, train_run, write_stores

    from pipeline.errors import InputError, one_line_errors
    from pipeline.flow.flownet2 import FlowNet2
    from trainer.training.config import TrainConfig
    from trainer.training.networks import build_nets, set_learning_rates
except ModuleNotFoundError as exc:  # one line naming every missing package (docs/PERFORMANCE.md, GPU)
    needed = {
        "torch": "torch",
        "numpy": "numpy",
        "cv2": "opencv-python-headless",
        "click": "click",
        "h5py": "h5py",
        "tqdm": "tqdm",
        "tensorboard": "tensorboard",
        "webdataset": "webdataset",
        "braceexpand": "braceexpand",
        "yaml": "pyyaml",
        "zstandard": "zstandard",
        "pipeline": "this repository (PYTHONPATH=<repository root>)",
    }
    missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
    print(
        f"error: bench_gpu.py cannot import {', '.join(missing or [exc.name])}; install them, or put their wheels "
        f"in .whl/ and run bench/gpu.sh (docs/PERFORMANCE.md, GPU)",
        file=sys.stderr,
    )
    sys.exit(2)  # pipeline.errors.EXIT_BAD_INPUT, which may be what is missing

PARTS = ("flownet2", "deeplab", "iteration", "stream")


@dataclass(frozen=True)
class Preset:
    """Sizes and counts of one run: FULL (the paper's sizes, for a GPU) or TINY (a dry run on the CPU)."""

    target_hw: tuple[int, int]  # Cityscapes frames (H, W)
    source_hw: tuple[int, int]  # VIPER images (H, W)
    arch: str
    disc_width: int
    batches: tuple[int, ...]  # batch sizes of every part but the stream (the paper's 2 = 1 on each of 2 GPUs)
    warmup: int
    repeats: int
    pairs: int  # samples in each of the stream's two stores
    samples_per_shard: int
    stream_iters: int
    stream_workers: tuple[int, ...]
    stream_batch: int
    stream_timeout_s: float
    threads: int = 0  # torch's intra-op threads here and in i2vda-train; 0 = torch's default (one per core)


# The paper's sizes, batch 1 (one per GPU, as the paper's two V100s) and 2 (the paper's batch on one GPU); 32 pairs in
# shards of 8 give 8 workers several shards to draw from.
FULL = Preset((512, 1024), (512, 896), "deeplab_r101", 64, (1, 2), 3, 8, 32, 8, 50, (0, 8), 2, 180.0)
# Seconds per part on 2 CPU cores. One thread: on a CPU shared with other jobs, two threads wait for each other at
# every op (training steps up to 70x slower, measured on the 2-core development VM).
TINY = Preset((64, 128), (64, 112), "deeplab_tiny", 16, (1,), 1, 2, 4, 2, 4, (0, 2), 1, 120.0, threads=1)


def bench_stream(root: Path, preset: Preset, device: torch.device, save) -> dict:
    """Write the two stores, then one i2vda-train run per worker count; `save` is called after each step."""
    stream = {
        "stores": write_stores(
            root / "stores", preset.target_hw, preset.source_hw, preset.pairs, preset.samples_per_shard
        ),
        "runs": [],
    }
    save(stream)
    amp = precisions(device.type == "cuda")[-1]  # --amp bf16 on CUDA
    for workers in preset.stream_workers:
        stream["runs"].append(
            train_run(
                root / "stores",
                root / f"run_{workers}",
                workers=workers,
                iters=preset.stream_iters,
                batch=preset.stream_batch,
                arch=preset.arch,
                disc_width=preset.disc_width,
                device=device.type,
                amp=amp,
                threads=preset.threads,
                timeout_s=preset.stream_timeout_s,
            )
        )
        save(stream)
    return stream


def pick_device(name: str, tiny: bool) -> torch.device:
    """--device: auto = CUDA when visible; the paper's sizes on the CPU only when asked for by --device cpu."""
    visible = torch.cuda.is_available()
    if name == "cuda" and not visible:
        raise InputError("--device cuda: no CUDA device is visible")
    if name == "auto" and not visible and not tiny:
        raise InputError(
            "no CUDA device is visible: pass --tiny for a CPU dry run (or --device cpu for the paper's "
            "sizes on the CPU, which takes hours)"
        )
    return torch.device("cuda" if visible and name != "cpu" else "cpu")


def header(preset: Preset, device: torch.device, tiny: bool, parts: tuple[str, ...]) -> dict:
    """What ran where: the machine, the versions, the settings."""
    cuda = device.type == "cuda"
    return {
        "script": "bench/bench_gpu.py",
        "tiny": tiny,
        "parts": list(parts),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min_before": os.getloadavg()[0],
        "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "preset": dataclasses.asdict(preset),
        "complete": False,
    }


def run(preset: Preset, device: torch.device, tiny: bool, parts: tuple[str, ...], out: Path) -> dict:
    """Every part asked for, the JSON rewritten after each; -> the report."""
    if preset.threads:
        torch.set_num_threads(preset.threads)
    report = header(preset, device, tiny, parts)

    def save(part: str | None = None, value=None) -> None:
        if part is not None:
            report[part] = value
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")

    save()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as trainer.training.loop.start_runtime: fixed sizes, autotuned kernels
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        if set(parts) & {"flownet2", "deeplab", "iteration"}:
            batches = {b: make_batch(preset.target_hw, preset.source_hw, b, device, seed=b) for b in preset.batches}
            torch.manual_seed(0)
            estimator = PrebuiltFlowNet2(FlowNet2().to(device).eval(), device)
            base = TrainConfig(
                out=str(Path(tmp) / "unused"),
                protocol=PROTOCOL,
                arch=preset.arch,
                disc_width=preset.disc_width,
                device=device.type,
                iter_launch=0,
            )
            nets = build_nets(base, device, distributed=False)
            set_learning_rates(nets, base, 0)
            counts = (preset.warmup, preset.repeats)
            if "flownet2" in parts:
                save("flownet2", bench_flownet2(estimator, batches, device, *counts))
            if "deeplab" in parts:
                save("deeplab", bench_deeplab(nets, base, batches, device, *counts))
            if "iteration" in parts:
                save("iteration", bench_iteration(nets, base, estimator, batches, device, *counts))
            del nets, estimator, batches
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the streaming runs are other processes on the same GPU
        if "stream" in parts:
            report["stream"] = bench_stream(Path(tmp), preset, device, lambda stream: save("stream", stream))
    report |= {
        "derived": derived(report, preset.batches, device.type == "cuda"),
        "complete": True,
        "load_avg_1min_after": os.getloadavg()[0],
        "finished_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    save()
    return report


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} {text}: expected comma-separated integers, e.g. 0,8") from None
    if not values or min(values) < 0:
        raise InputError(f"{flag} {text}: expected non-negative integers")
    return values


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option(
    "--tiny",
    is_flag=True,
    help="Small sizes, deeplab_tiny, 2 repeats: a dry run of every code path on the "
    "CPU (tests/test_bench_gpu.py), not a measurement.",
)
@click.option(
    "--device",
    "device_name",
    type=click.Choice(["auto", "cuda", "cpu"]),
    default="auto",
    show_default=True,
    help="auto = CUDA when visible.",
)
@click.option("--parts", default=",".join(PARTS), show_default=True, help="Comma-separated parts to run.")
@click.option("--warmup", type=int, default=None, help="Untimed calls per case [default: 3; --tiny 1].")
@click.option("--repeats", type=int, default=None, help="Timed calls per case, median kept [default: 8; --tiny 2].")
@click.option(
    "--stream-workers",
    default=None,
    help="DataLoader workers of the streaming runs, one run each [default: 0,8; --tiny 0,2].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("bench/out/bench_gpu.json"),
    show_default=True,
    help="The JSON report (rewritten after every part).",
)
def cli(
    tiny: bool,
    device_name: str,
    parts: str,
    warmup: int | None,
    repeats: int | None,
    stream_workers: str | None,
    out: Path,
) -> None:
    """Measure the I2VDA trainer on a GPU in one call (module docstring); write one JSON, print one table."""
    preset = TINY if tiny else FULL
    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        raise InputError(f"--parts {parts}: expected some of {', '.join(PARTS)}")
    if (warmup is not None and warmup < 0) or (repeats is not None and repeats < 1):
        raise InputError("--warmup must be >= 0 and --repeats >= 1")
    if warmup is not None:
        preset = dataclasses.replace(preset, warmup=warmup)
    if repeats is not None:
        preset = dataclasses.replace(preset, repeats=repeats)
    if stream_workers is not None:
        preset = dataclasses.replace(preset, stream_workers=_int_list(stream_workers, "--stream-workers"))
    report = run(preset, pick_device(device_name, tiny), tiny, chosen, out)
    print_table(report)
    click.echo(f"wrote {out}")


main = one_line_errors(cli)

if __name__ == "__main__":
    main()
