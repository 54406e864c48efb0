"""The synthetic inputs of `bench/bench_gpu.py` and its streaming run: stores written by the pipeline, read by training.

Frames are smooth random pictures (bicubic upsampling of a coarse random grid: picture-like, so PNG and DIS behave
as on photographs) and frame 1 is frame 0 moved by a smooth random flow; source labels are smooth random class
maps. The stores are written with the pipeline's own layers (DIS for the flows, `encode_*_sample`, `write_store`),
without Ray, and read by a real `i2vda-train` process, whose
`RUN/log.jsonl` gives the iterations per second and the fraction of each iteration spent waiting for data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.flow import load_estimator
from pipeline.flow.codec import FLOW_CODEC
from pipeline.shards import (
    PAIR_LAYOUT,
    SOURCE_KIND,
    TARGET_KIND,
    encode_source_sample,
    encode_target_sample,
    write_store,
)
from pipeline.sources import get_protocol
from trainer.training.monitor import LOG_NAME

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = "viper15"
TARGET_STORE, SOURCE_STORE = "cityscapes_seq", "viper"  # i2vda-train's default store names
COARSE_CELLS_HW = (8, 16)  # the random grid behind a picture: a few blobs across the frame
MAX_FLOW_PX = 8.0  # the smooth flow stays within +-MAX_FLOW_PX / 2 pixels per axis
WARMUP_SHARE = 0.2  # the first fifth of a run's log windows (worker start-up, allocator and cuDNN warm-up) is dropped


def smooth_field(rng: np.random.Generator, size_hw: tuple[int, int], channels: int, scale: float) -> np.ndarray:
    """A random low-frequency field (H, W, channels) float32 in [0, scale] (cubic overshoot aside)."""
    coarse = rng.random((*COARSE_CELLS_HW, channels)).astype(np.float32) * scale
    field = cv2.resize(coarse, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_CUBIC)
    return field.reshape(*size_hw, channels)


def synthetic_pair(rng: np.random.Generator, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> frame0, frame1 (H, W, 3) uint8 RGB and F_0->1 (2, H, W) float32 pixels: frame 1 is frame 0 moved by it."""
    frame0 = smooth_field(rng, size_hw, 3, 255.0).clip(0, 255).astype(np.uint8)
    flow_01 = (smooth_field(rng, size_hw, 2, MAX_FLOW_PX) - MAX_FLOW_PX / 2).transpose(2, 0, 1)  # (2, H, W)
    ys, xs = np.mgrid[: size_hw[0], : size_hw[1]].astype(np.float32)
    # frame1(p) = frame0(p - F(p)): backward warp with F_1->0 ~ -F_0->1, which holds for a smooth flow
    frame1 = cv2.remap(frame0, xs - flow_01[0], ys - flow_01[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return frame0, frame1, np.ascontiguousarray(flow_01)


def synthetic_source(rng: np.random.Generator, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """-> image (H, W, 3) uint8 RGB and label (H, W) uint8 train ids of the protocol, 255 (ignore) nowhere."""
    classes = get_protocol(PROTOCOL).num_classes
    image = smooth_field(rng, size_hw, 3, 255.0).clip(0, 255).astype(np.uint8)
    label = smooth_field(rng, size_hw, 1, classes)[..., 0].clip(0, classes - 1).astype(np.uint8)
    return image, label


def write_stores(
    root: Path, target_hw: tuple[int, int], source_hw: tuple[int, int], pairs: int, per_shard: int, seed: int = 0
) -> dict:
    """root/cityscapes_seq (pairs with DIS flows both ways) and root/viper (viper15), `pairs` samples each."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    estimator = load_estimator("dis")  # loaded once, as a prep worker does
    flow_s = 0.0
    keys = [f"synthetic_{k:06d}" for k in range(pairs)]

    def target_samples():
        nonlocal flow_s
        for first in range(0, pairs, per_shard):
            made = [synthetic_pair(rng, target_hw) for _ in keys[first : first + per_shard]]
            frames0, frames1 = np.stack([m[0] for m in made]), np.stack([m[1] for m in made])
            flow_start = time.perf_counter()
            flows = estimator.flows(np.concatenate([frames0, frames1]), np.concatenate([frames1, frames0]))
            flow_s += time.perf_counter() - flow_start
            for i, (frame0, frame1, _) in enumerate(made):
                key = keys[first + i]
                yield encode_target_sample(key, frame0, frame1, flows[i], flows[len(made) + i], {"key": key})

    target = write_store(
        root / TARGET_STORE,
        TARGET_KIND,
        target_samples(),
        per_shard,
        size_wh=[target_hw[1], target_hw[0]],
        estimator=estimator.name,
        estimator_options=estimator.options,
        codec=FLOW_CODEC,
        layout=PAIR_LAYOUT,  # independent synthetic pairs: no frame to share, one sample per pair
    )
    source_samples = (
        encode_source_sample(key, *synthetic_source(rng, source_hw), {"key": key, "protocol": PROTOCOL}) for key in keys
    )
    source = write_store(
        root / SOURCE_STORE,
        SOURCE_KIND,
        source_samples,
        per_shard,
        size_wh=[source_hw[1], source_hw[0]],
        protocol=PROTOCOL,
    )
    return {
        "pairs": pairs,
        "samples_per_shard": per_shard,
        "seconds": time.perf_counter() - start,
        "dis_flow_seconds": flow_s,
        "bytes": {TARGET_STORE: target["bytes"], SOURCE_STORE: source["bytes"]},
    }


def log_rates(log_path: Path, log_interval: int) -> dict:
    """it/s and data-wait fraction over the log windows of a run after its first WARMUP_SHARE (at least one)."""
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    dropped = max(1, round(len(entries) * WARMUP_SHARE))
    kept = entries[dropped:]
    if not kept:
        raise RuntimeError(f"{log_path}: {len(entries)} log window(s), none left after the warm-up")
    seconds = [log_interval / e["it_per_s"] for e in kept]  # each window is log_interval iterations long
    return {
        "it_per_s": len(kept) * log_interval / sum(seconds),
        "data_wait_frac": sum(e["data_wait_frac"] * s for e, s in zip(kept, seconds)) / sum(seconds),
        "windows_used": len(kept),
        "windows_dropped": dropped,
        "log_interval": log_interval,
    }


def train_run(
    stores: Path,
    run: Path,
    workers: int,
    iters: int,
    batch: int,
    arch: str,
    disc_width: int,
    device: str,
    amp: str,
    threads: int,
    timeout_s: float,
) -> dict:
    """`i2vda-train` (as `python -m trainer.training.cli`) for `iters` iterations with `workers` DataLoader workers and
    `threads` torch threads (0: torch's default); -> rates.

    L_tc runs from the first iteration (`--iter-launch 0`), with F_1->t = (1 - t) F_1->0 (`--online-flow linear`):
    the fastest iteration the loop has, so the data wait measured is the largest share it can take."""
    log_interval = max(1, iters // 10)
    command = [
        sys.executable,
        "-m",
        "trainer.training.cli",
        "--out",
        str(run),
        "--shards",
        str(stores),
        "--source",
        SOURCE_STORE,
        "--target",
        TARGET_STORE,
        "--arch",
        arch,
        "--disc-width",
        str(disc_width),
        "--device",
        device,
        "--amp",
        amp,
        "--max-iter",
        str(iters),
        "--batch-size",
        str(batch),
        "--num-workers",
        str(workers),
        "--log-interval",
        str(log_interval),
        "--checkpoint-interval",
        str(iters),
        "--image-interval",
        str(iters),
        "--iter-launch",
        "0",
        "--online-flow",
        "linear",
    ]
    # The repository on the path (bench/gpu.sh runs it uninstalled) after what the caller set (carried wheels).
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)
    env = {**os.environ, "PYTHONPATH": path, "TQDM_DISABLE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in the training process
    result = {
        "workers": workers,
        "iterations": iters,
        "batch": batch,
        "arch": arch,
        "device": device,
        "amp": amp,
        "threads": threads or None,
    }
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return result | {"error": f"i2vda-train did not finish within {timeout_s:.0f} s"}
    result["process_seconds"] = time.perf_counter() - start
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
        return result | {"error": lines[-1]}
    try:
        return result | log_rates(run / LOG_NAME, log_interval)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # a log too short or unreadable: say so, go on
        return result | {"error": f"{type(exc).__name__}: {exc}"}
