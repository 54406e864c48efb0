"""Reading the shards back (pairs/s per reader worker, decoding included) against estimating the flows of a pair,
and the bytes a pair costs in each shard layout.

    .venv/bin/python bench/bench_read.py [--pairs 16] [--size 1024x512] [--repeats 5] [--out bench/out/bench_read.json]

Input: a demo world rendered at `--size` (two snippets of consecutive frames), prepped by the plain loop with one
plan (`--samples-per-shard`, default 128, as `i2vda-prep flows`) into three target stores: shard layout 3 (runs of
consecutive frames, each frame once; what `i2vda-prep flows` writes), layout 2 (one sample per pair, the layout
before it; each inner frame twice), both with stored frame PNGs, and layout 3 with `--frames compressed`. One
process, OpenCV and torch held to one thread (one DataLoader worker's share): `read_samples` (our reader: runs
expanded into pairs, then every member of every pair decoded, as the trainer decodes them) on each store, and
WebDataset's own reader with `decode_sample` (runs expanded by `expand_runs`, a `compose` stage); the readers
alternate within each repeat. Bytes per pair are the shard files' bytes over the pairs, also in raw frames
(H * W * 3 bytes). Estimation is what prep pays per pair: DIS MEDIUM for F0->1 and F1->0 in one call. Medians over
`--repeats`; the goal is reading >= 4x faster. Also: bytes and speed of the frame PNG settings we considered
(`PNG_OPTIONS`), on one frame of the store and on a real photo (the motorcycle pair's left image resized to the
store size), and the decode time of the shard layout 1 flow codec (png16x64) on the same flow.
"""

from __future__ import annotations

import json
import os
import shutil
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
from bench_prep import config_for, demo_world_root

from pipeline.build import Builder, pin_threads
from pipeline.flow.codec import decode_flow, encode_flow, encode_legacy_png16
from pipeline.flow.dis import DISEstimator
from pipeline.plan import DEFAULT_SAMPLES_PER_SHARD, plan_sha256, plan_shards, store_manifest
from pipeline.shards import (
    FRAME_PNG_PARAMS,
    PAIR_LAYOUT,
    RUN_LAYOUT,
    decode_sample,
    expand_runs,
    open_store,
    png_bytes,
    png_pixels,
    raw_samples,
    read_samples,
    store_shards,
    write_manifest,
)
from pipeline.sources import parse_size_wh
from pipeline.sources.cityscapes import list_pairs


def time_readers(readers: dict, repeats: int) -> dict[str, tuple[float, int, float]]:
    """{name: (median wall seconds to decode every sample, sample count, median process CPU seconds)}; the readers
    alternate within each repeat. On one thread the CPU time is the work itself, steadier than the wall time when
    other jobs share the cores."""
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    cpu: dict[str, list[float]] = {name: [] for name in readers}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, read in readers.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            counts[name] = sum(1 for _ in read())
            seconds[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(seconds[name]), counts[name], statistics.median(cpu[name])) for name in readers}


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


# The stores written and read: (layout, frames).
STORES = {
    "layout 3 (runs), stored frames": (RUN_LAYOUT, "stored"),
    "layout 2 (pairs), stored frames": (PAIR_LAYOUT, "stored"),
    "layout 3 (runs), compressed frames": (RUN_LAYOUT, "compressed"),
}
DEFAULT_STORE, PAIR_STORE = "layout 3 (runs), stored frames", "layout 2 (pairs), stored frames"
# Cityscapes-Seq train (leftImg8bit_sequence): 2975 snippets of 30 consecutive frames, so 86,275 pairs.
CITYSCAPES_SNIPPETS, CITYSCAPES_SNIPPET_FRAMES = 2975, 30
TAR_BLOCK = 512  # a tar member takes a 512-byte header and its data padded to 512-byte blocks


def cityscapes_frames_stored(layout: int, samples_per_shard: int) -> tuple[int, int]:
    """(pairs, frames stored) of `i2vda-prep flows --pairs all` on Cityscapes-Seq train: layout 2 stores two frames
    per pair; layout 3 one per pair plus one per run, a run ending at each snippet's end and at each shard boundary
    that falls inside a snippet (its frame is then stored in both shards)."""
    per_snippet = CITYSCAPES_SNIPPET_FRAMES - 1
    pairs = CITYSCAPES_SNIPPETS * per_snippet
    if layout == PAIR_LAYOUT:
        return pairs, 2 * pairs
    cuts = sum(1 for start in range(samples_per_shard, pairs, samples_per_shard) if start % per_snippet)
    return pairs, pairs + CITYSCAPES_SNIPPETS + cuts


def frame_share(store: Path) -> tuple[int, int]:
    """(frames, their bytes in the shard files, tar headers and padding included) of a target store."""
    frames = total = 0
    for shard in store_shards(store):
        for sample in raw_samples(shard):
            for name, data in sample.items():
                if name.startswith("frame"):
                    frames += 1
                    total += TAR_BLOCK + -(-len(data) // TAR_BLOCK) * TAR_BLOCK
    return frames, total


def cityscapes_estimate(store: Path, layout: int, pairs: int, store_bytes: int, samples_per_shard: int) -> dict:
    """Bytes of the Cityscapes-Seq store at this size from this measured store: its bytes per stored frame times the
    frames Cityscapes-Seq stores, plus its other bytes per pair (flows, meta, tar overhead) times the pairs."""
    frames, frames_bytes = frame_share(store)
    city_pairs, city_frames = cityscapes_frames_stored(layout, samples_per_shard)
    total = city_frames * frames_bytes / frames + city_pairs * (store_bytes - frames_bytes) / pairs
    return {"pairs": city_pairs, "frames_stored": city_frames, "bytes": total, "GiB": total / 2**30}


def write_stores(root: Path, work: Path, records: list, size_wh, samples_per_shard: int) -> tuple[dict, Builder]:
    """{name: store folder} of STORES, one plan, written by the plain loop (no Ray); -> also the last Builder."""
    stores, builder = {}, None
    for name, (layout, frames) in STORES.items():
        config = replace(
            config_for(root, work / name.replace(" ", "_").replace(",", "")),
            size_wh=size_wh,
            frames=frames,
            layout=layout,
            samples_per_shard=samples_per_shard,
        )
        config.store_dir.mkdir(parents=True)
        builder = Builder(config)
        tasks = plan_shards(records, config.src, samples_per_shard)
        done = {task.name: builder.shard(task) for task in tasks}
        manifest = store_manifest(config, plan_sha256(tasks), len(records), done, complete=True)
        write_manifest(config.store_dir, manifest)
        stores[name] = config.store_dir
    return stores, builder


@click.command()
@click.option("--pairs", default=16, show_default=True)
@click.option("--size", default="1024x512", show_default=True, help="frames rendered and stored at WxH")
@click.option("--samples-per-shard", default=DEFAULT_SAMPLES_PER_SHARD, show_default=True)
@click.option("--repeats", default=5, show_default=True)
@click.option("--out", default="bench/out/bench_read.json", show_default=True)
def main(pairs: int, size: str, samples_per_shard: int, repeats: int, out: str) -> None:
    """Run the benchmark and write its JSON."""
    pin_threads(1)
    load_before = os.getloadavg()[0]
    size_wh = parse_size_wh(size)
    work = Path(tempfile.mkdtemp(prefix="bench_read_"))
    root = demo_world_root(work / "world", pairs, native_wh=size_wh)
    records = list_pairs(root, "train")[:pairs]
    stores, builder = write_stores(root, work, records, size_wh, samples_per_shard)

    readers = {name: (lambda store=store: read_samples(store)) for name, store in stores.items()}
    for name in (DEFAULT_STORE, PAIR_STORE):
        shards = store_shards(stores[name])
        readers[f"webdataset, {name}"] = lambda shards=shards: (
            wds.WebDataset(shards, shardshuffle=False).compose(expand_runs).map(decode_sample)
        )
    timed = time_readers(readers, repeats)
    assert {count for _, count, _ in timed.values()} == {len(records)}
    count = len(records)
    pairs_per_s = {name: count / seconds for name, (seconds, _, _) in timed.items()}
    pairs_per_cpu_s = {name: count / cpu_s for name, (_, _, cpu_s) in timed.items()}

    sample = next(iter(read_samples(stores[DEFAULT_STORE])))
    frame_png, flow_bytes = png_bytes(sample["frame0"]), encode_flow(sample["flow01"])
    legacy_flow = encode_legacy_png16(sample["flow01"])
    decode_ms = {
        "frame_png": 1000 * _median_call(lambda: png_pixels(frame_png, "frame"), repeats),
        "flow": 1000 * _median_call(lambda: decode_flow(flow_bytes), repeats),
        "flow png16x64 (shard layout 1)": 1000 * _median_call(lambda: decode_flow(legacy_flow), repeats),
    }
    photo = cv2.resize(skimage.data.stereo_motorcycle()[0], tuple(size_wh), interpolation=cv2.INTER_AREA)
    png_options = {
        "demo frame": frame_png_options(sample["frame0"], repeats),
        "photo (motorcycle, resized)": frame_png_options(photo, repeats),
    }
    frames0, frames1 = sample["frame0"][None], sample["frame1"][None]
    estimate_s = _median_call(lambda: builder.flows_both_ways(frames0, frames1), repeats)
    fine = DISEstimator("fine")  # for context: the slower, finer DIS preset
    fine_s = _median_call(
        lambda: fine.flows(np.concatenate([frames0, frames1]), np.concatenate([frames1, frames0])), repeats
    )
    raw_frame_bytes = size_wh[0] * size_wh[1] * 3
    layouts = {name: STORES[name][0] for name in stores}
    store_bytes = {name: sum(Path(p).stat().st_size for p in store_shards(store)) for name, store in stores.items()}
    result = {
        "size_wh": list(size_wh),
        "pairs": count,
        "samples_per_shard": samples_per_shard,
        "shards": len(store_shards(stores[DEFAULT_STORE])),
        "runs": open_store(stores[DEFAULT_STORE]).num_samples,
        "repeats": repeats,
        "threads": 1,
        "read_pairs_per_s": pairs_per_s,
        "read_pairs_per_cpu_s": pairs_per_cpu_s,
        "layout_3_vs_2 (pairs/s, pairs per CPU s)": [
            pairs_per_s[DEFAULT_STORE] / pairs_per_s[PAIR_STORE],
            pairs_per_cpu_s[DEFAULT_STORE] / pairs_per_cpu_s[PAIR_STORE],
        ],
        "read_ms_per_pair": {name: 1000 / rate for name, rate in pairs_per_s.items()},
        "estimate_s_per_pair (dis medium, both directions)": estimate_s,
        "estimate_pairs_per_s": 1 / estimate_s,
        "estimate_s_per_pair (dis fine, both directions)": fine_s,
        "read_vs_estimate (dis medium)": {name: rate * estimate_s for name, rate in pairs_per_s.items()},
        "read_vs_estimate (dis fine)": {name: rate * fine_s for name, rate in pairs_per_s.items()},
        "decode_ms_per_member": decode_ms,
        "store_bytes": store_bytes,
        "shard_bytes_per_pair": {name: b / count for name, b in store_bytes.items()},
        "raw_frames_per_pair": {name: b / count / raw_frame_bytes for name, b in store_bytes.items()},
        "cityscapes_seq_all_pairs (estimate)": {
            name: cityscapes_estimate(stores[name], layouts[name], count, store_bytes[name], samples_per_shard)
            for name in stores
        },
        "frame_png_options": png_options,
        "load_avg_1min_before_after": [load_before, os.getloadavg()[0]],
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
