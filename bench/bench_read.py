"""Reading the shards back (samples/s per reader worker, decoding included) against estimating the flows of a pair.

    .venv/bin/python bench/bench_read.py [--pairs 16] [--repeats 5] [--out bench/out/bench_read.json]

Input: a demo world rendered at 1024x512, prepped by the plain loop into two shard stores, one per `--frames` mode
(stored: the default; compressed). One process, OpenCV and torch held to one thread (one DataLoader worker's share):
`read_samples` (our reader) and WebDataset's own reader with `decode_sample` each decode every member (frames, both
flows, meta); the readers alternate within each repeat. Estimation is what prep pays per pair: DIS MEDIUM for F0->1
and F1->0 in one call. Medians over `--repeats`; the goal is reading >= 4x faster. Also: bytes and speed of the frame
PNG settings we considered (`PNG_OPTIONS`), on one frame of the store and on a real photo (the motorcycle pair's left
image resized to 1024x512), and the decode time of the shard layout v1 flow codec (png16x64) on the same flow.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
import cv2
import numpy as np
import skimage.data
import webdataset as wds
from bench_prep import SAMPLES_PER_SHARD, config_for, demo_world_root

from pipeline.build import Builder, pin_threads
from pipeline.flow.codec import decode_flow, encode_flow, encode_legacy_png16
from pipeline.flow.dis import DISEstimator
from pipeline.plan import plan_shards
from pipeline.shards import (
    FRAME_MODES,
    FRAME_PNG_PARAMS,
    decode_sample,
    png_bytes,
    png_pixels,
    read_samples,
    store_shards,
)
from pipeline.sources.cityscapes import list_pairs


def time_readers(readers: dict, repeats: int) -> dict[str, tuple[float, int]]:
    """{name: (median seconds to decode every sample, sample count)}; the readers alternate within each repeat."""
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, read in readers.items():
            start = time.perf_counter()
            counts[name] = sum(1 for _ in read())
            seconds[name].append(time.perf_counter() - start)
    return {name: (statistics.median(seconds[name]), counts[name]) for name in readers}


def _median_call(call, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


# Frame PNG settings compared (OpenCV flags): the shards' choice against zlib's default strategy and no compression.
PNG_OPTIONS = {
    "level 0, no row filter (shards, default)": FRAME_PNG_PARAMS["stored"],
    "level 0, OpenCV's default row filter": [cv2.IMWRITE_PNG_COMPRESSION, 0],
    "level 1, run-length (--frames compressed)": FRAME_PNG_PARAMS["compressed"],
    "level 1, default strategy": [cv2.IMWRITE_PNG_COMPRESSION, 1],
    "level 1, no row filter": [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE],
}


def frame_png_options(rgb: np.ndarray, repeats: int) -> dict:
    """{setting: {bytes, encode_ms, decode_ms}} for one (H, W, 3) frame."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    out = {}
    for name, params in PNG_OPTIONS.items():
        data = cv2.imencode(".png", bgr, params)[1]
        out[name] = {
            "bytes": int(data.size),
            "encode_ms": 1000 * _median_call(lambda p=params: cv2.imencode(".png", bgr, p), repeats),
            "decode_ms": 1000 * _median_call(lambda d=data: cv2.imdecode(d, cv2.IMREAD_UNCHANGED), repeats),
        }
    return out


@click.command()
@click.option("--pairs", default=16, show_default=True)
@click.option("--repeats", default=5, show_default=True)
@click.option("--out", default="bench/out/bench_read.json", show_default=True)
def main(pairs: int, repeats: int, out: str) -> None:
    """Run the benchmark and write its JSON."""
    pin_threads(1)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_read_"))
    root = demo_world_root(work / "world", pairs)
    records = list_pairs(root, "train")[:pairs]
    stores, builder = {}, None
    for frames in FRAME_MODES:  # the same pairs written with stored (default) and compressed frame PNGs
        config = replace(config_for(root, work / f"stores_{frames}"), frames=frames)
        config.store_dir.mkdir(parents=True)
        builder = Builder(config)
        for task in plan_shards(records, config.src, SAMPLES_PER_SHARD):
            builder.shard(task)
        stores[frames] = config.store_dir
    shards = store_shards(stores["stored"])

    timed = time_readers(
        {
            "ours": lambda: read_samples(stores["stored"]),
            "wds": lambda: wds.WebDataset(shards, shardshuffle=False).map(decode_sample),
            "ours, compressed frames": lambda: read_samples(stores["compressed"]),
        },
        repeats,
    )
    (ours_s, count), (wds_s, wds_count) = timed["ours"], timed["wds"]
    compressed_s = timed["ours, compressed frames"][0]
    assert count == wds_count == timed["ours, compressed frames"][1] == len(records)

    sample = next(iter(read_samples(stores["stored"])))
    frame_png, flow_bytes = png_bytes(sample["frame0"]), encode_flow(sample["flow01"])
    legacy_flow = encode_legacy_png16(sample["flow01"])
    decode_ms = {
        "frame_png": 1000 * _median_call(lambda: png_pixels(frame_png, "frame"), repeats),
        "flow": 1000 * _median_call(lambda: decode_flow(flow_bytes), repeats),
        "flow png16x64 (shard layout v1)": 1000 * _median_call(lambda: decode_flow(legacy_flow), repeats),
    }
    photo = cv2.resize(skimage.data.stereo_motorcycle()[0], tuple(config.size_wh), interpolation=cv2.INTER_AREA)
    png_options = {
        "demo frame": frame_png_options(sample["frame0"], repeats),
        "photo (motorcycle, resized)": frame_png_options(photo, repeats),
    }
    frames0, frames1 = sample["frame0"][None], sample["frame1"][None]
    estimate_s = _median_call(lambda: builder.flows_both_ways(frames0, frames1), repeats)
    fine = DISEstimator("fine")  # for context: the slower, finer DIS preset
    fine_s = _median_call(lambda: fine(np.concatenate([frames0, frames1]), np.concatenate([frames1, frames0])), repeats)
    result = {
        "size_wh": list(config.size_wh),
        "pairs": count,
        "repeats": repeats,
        "threads": 1,
        "read_samples_per_s": count / ours_s,
        "webdataset_samples_per_s": count / wds_s,
        "read_samples_per_s (compressed frames)": count / compressed_s,
        "estimate_s_per_pair (dis medium, both directions)": estimate_s,
        "estimate_pairs_per_s": 1 / estimate_s,
        "estimate_s_per_pair (dis fine, both directions)": fine_s,
        "decode_ms_per_member": decode_ms,
        "read_ms_per_sample": 1000 * ours_s / count,
        "read_ms_per_sample (compressed frames)": 1000 * compressed_s / count,
        "read_vs_estimate": (count / ours_s) * estimate_s,
        "webdataset_read_vs_estimate": (count / wds_s) * estimate_s,
        "read_vs_estimate (compressed frames)": (count / compressed_s) * estimate_s,
        "read_vs_estimate_dis_fine": (count / ours_s) * fine_s,
        "shard_bytes_per_pair": {
            frames: sum(Path(p).stat().st_size for p in store_shards(store)) / count for frames, store in stores.items()
        },
        "frame_png_options": png_options,
        "load_avg_1min_before_after": [load_before, os.getloadavg()[0]],
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
