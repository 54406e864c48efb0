"""Bytes, encode and decode time of flow codecs at 1024x512, against DA-VSN's int16 x10 `.npy`.

    .venv/bin/python bench/bench_codec.py [--repeats 7] [--demo-world DIR] [--out bench/out/bench_codec.json]

Flows: a demo-like street flow (forward ego-motion over a road plane and facades, plus independently moving cars:
smooth with motion boundaries), the same with 0.05 px estimation noise, the motorcycle pair's ground truth
(u = -disparity, unknown set to 0) and DIS (medium) flow on that pair, all at 1024x512; `--demo-world DIR` adds the
ground-truth flows of a world written by `i2vda-prep demo-world`. Candidates other than ours (`zstd-dx16x64`, the shard
codec of `pipeline/flow/codec.py`, and `png16x64`, the one shard layout v1 used) are written here only to be measured.
The flows here are (H, W, 2), the layout DA-VSN's `.npy` and KITTI's PNG store; ours take and give (2, H, W), the
layout of every flow in i2vda, so their entries move the axes (a view, no copy).
"""

from __future__ import annotations

import io
import json
import statistics
import time
import zlib
from pathlib import Path

import click
import cv2
import numpy as np
import zstandard

from pipeline.flow import read_flo
from pipeline.flow.codec import FLOW_CODEC, decode_flow, encode_flow, encode_legacy_png16
from pipeline.flow.dis import DISEstimator

SIZE_WH = (1024, 512)
NOISE_PX = 0.05  # standard deviation of the per-pixel noise added to the street flow (an estimator's jitter)
MAX_DEMO_FLOWS = 10
Q64 = 64  # steps per pixel of the 1/64 px candidates


def street_flow(size_wh: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(H, W, 2) flow of a camera moving 1 m forward: road plane below the horizon, facades above, four cars."""
    w, h = size_wh
    focal, cam_height_m, street_half_width_m, step_m = 0.55 * w, 1.5, 8.0, 1.0
    cx, horizon = w / 2.0, 0.45 * h
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    road_depth = focal * cam_height_m / np.maximum(ys - horizon, 1e-3)
    facade_depth = focal * street_half_width_m / np.maximum(np.abs(xs - cx), 1e-3)
    depth = np.where(ys > horizon, road_depth, facade_depth).clip(3.0, 200.0)
    expansion = step_m / (depth - step_m)  # a point at depth Z moves to (p - c) * Z / (Z - t) + c
    flow = np.stack(((xs - cx) * expansion, (ys - horizon) * expansion), axis=-1)
    rng = np.random.default_rng(seed)
    for _ in range(4):  # cars: rectangles at their own depth with their own motion
        car_depth = rng.uniform(6.0, 30.0)
        car_w, car_h = int(focal * 1.8 / car_depth), int(focal * 1.5 / car_depth)
        x0 = int(rng.uniform(0, w - car_w))
        y1 = int(horizon + focal * cam_height_m / car_depth)
        lateral_px = rng.uniform(-3.0, 3.0) * focal / car_depth / 10  # up to 3 m/s at 10 fps
        car_expansion = step_m * rng.uniform(0.0, 2.0) / car_depth
        box = (slice(max(y1 - car_h, 0), min(y1, h)), slice(x0, x0 + car_w))
        flow[box + (0,)] = (xs[box] - cx) * car_expansion + lateral_px
        flow[box + (1,)] = (ys[box] - horizon) * car_expansion
    return flow.astype(np.float32)


def motorcycle_flows(size_wh: tuple[int, int]) -> dict[str, np.ndarray]:
    """The motorcycle pair's ground truth and DIS flow, resized to size_wh."""
    import skimage.data

    left, right, disparity = skimage.data.stereo_motorcycle()
    u = np.where(np.isfinite(disparity), -disparity, 0.0).astype(np.float32)
    u = cv2.resize(u, size_wh, interpolation=cv2.INTER_NEAREST) * (size_wh[0] / left.shape[1])
    left, right = (cv2.resize(im, size_wh, interpolation=cv2.INTER_AREA) for im in (left, right))
    return {
        "motorcycle_truth": np.stack((u, np.zeros_like(u)), axis=-1),
        "motorcycle_dis": DISEstimator("medium")(left, right),
    }


def _npy_encode(flow: np.ndarray) -> bytes:
    """DA-VSN's format: np.save of int16(flow * 10), 0.1 px steps."""
    buffer = io.BytesIO()
    np.save(buffer, np.int16(flow * 10))
    return buffer.getvalue()


def _npy_decode(data: bytes, shape: tuple) -> np.ndarray:
    return np.load(io.BytesIO(data)).astype(np.float32) / 10


def _q64(flow: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(flow * Q64), -(2**15), 2**15 - 1).astype(np.int16)


def _kitti_encode(flow: np.ndarray) -> bytes:
    """KITTI flow PNG: 16-bit (u, v, valid) with u, v = 64 f + 2^15 (stored BGR by OpenCV: valid, v, u)."""
    codes = (_q64(flow).astype(np.int32) + 2**15).astype(np.uint16)
    valid = np.ones(flow.shape[:2], np.uint16)
    return cv2.imencode(".png", np.dstack((valid, codes[..., 1], codes[..., 0])))[1].tobytes()


def _kitti_decode(data: bytes, shape: tuple) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return (bgr[..., [2, 1]].astype(np.float32) - 2**15) / Q64


def _npz_encode(flow: np.ndarray) -> bytes:
    """int16 x64 (H, W, 2) through np.savez_compressed (zlib, default level)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, flow=_q64(flow))
    return buffer.getvalue()


def _npz_decode(data: bytes, shape: tuple) -> np.ndarray:
    with np.load(io.BytesIO(data)) as archive:
        return archive["flow"].astype(np.float32) / Q64


def _delta_encode(flow: np.ndarray) -> bytes:
    """int16 x64 planes (u, v), each row replaced by its differences along x, then zlib level 1."""
    planes = _q64(flow).transpose(2, 0, 1)
    return zlib.compress(np.diff(planes, axis=2, prepend=0).astype("<i2").tobytes(), 1)


def _delta_decode(data: bytes, shape: tuple) -> np.ndarray:
    deltas = np.frombuffer(zlib.decompress(data), "<i2").reshape(2, shape[0], shape[1])
    return np.cumsum(deltas, axis=2, dtype=np.int16).transpose(1, 2, 0).astype(np.float32) / Q64


def _png_variant(params: list[int]):
    """Our (2H, W) uint16 layout written with other PNG settings, to justify the ones the codec uses."""

    def encode(flow: np.ndarray) -> bytes:
        codes = np.clip(np.rint(flow * Q64) + 2**15, 0, 2**16 - 1).astype(np.uint16)
        return cv2.imencode(".png", np.concatenate((codes[..., 0], codes[..., 1]), axis=0), params)[1].tobytes()

    return encode


def _z32_encode(flow: np.ndarray) -> bytes:
    """int32 x64 (H, W, 2), zlib level 6."""
    return zlib.compress(np.rint(flow * Q64).astype("<i4").tobytes(), 6)


def _z32_decode(data: bytes, shape: tuple) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), "<i4").reshape(shape).astype(np.float32) / Q64


def _zstd_plain_encode(flow: np.ndarray) -> bytes:
    """int16 x64 (H, W, 2) as is, zstd level 3: what the left prediction, zigzag and byte split of ours add."""
    return zstandard.ZstdCompressor(level=3).compress(np.rint(flow * Q64).astype("<i2").tobytes())


def _zstd_plain_decode(data: bytes, shape: tuple) -> np.ndarray:
    return np.frombuffer(zstandard.ZstdDecompressor().decompress(data), "<i2").reshape(shape).astype(np.float32) / Q64


def _ours(encode, **options):
    """Our codec's encode on an (H, W, 2) flow, and its decode back to (H, W, 2)."""
    return (
        lambda flow: encode(np.moveaxis(flow, -1, 0), **options),
        lambda data, shape: np.moveaxis(decode_flow(data), 0, -1),
    )


NPY = "npy_int16x10 (DA-VSN)"
CODECS = {  # name: (encode(flow), decode(data, shape of the flow)); the shape stands in for a header
    NPY: (_npy_encode, _npy_decode),
    f"{FLOW_CODEC} (ours)": _ours(encode_flow),
    f"{FLOW_CODEC} zstd level 1": _ours(encode_flow, level=1),
    f"{FLOW_CODEC} zstd level 9": _ours(encode_flow, level=9),
    "int16x64 zstd3, no prediction": (_zstd_plain_encode, _zstd_plain_decode),
    "png16x64 (shard layout v1)": _ours(encode_legacy_png16),
    "png16x64 opencv default": (_png_variant([]), lambda data, shape: np.moveaxis(decode_flow(data), 0, -1)),
    "png16x64 level 6": (
        _png_variant([cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FAST_FILTERS, cv2.IMWRITE_PNG_COMPRESSION, 6]),
        lambda data, shape: np.moveaxis(decode_flow(data), 0, -1),
    ),
    "kitti_png16 3ch": (_kitti_encode, _kitti_decode),
    "int16x64 savez_compressed": (_npz_encode, _npz_decode),
    "int16x64 row-delta zlib1": (_delta_encode, _delta_decode),
    "int32x64 zlib6": (_z32_encode, _z32_decode),
}


def median_ms(fn, args: tuple, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU time of fn(*args) in milliseconds (CPU time is robust to a busy machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn(*args)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return 1000.0 * statistics.median(wall), 1000.0 * statistics.median(cpu)


def demo_flows(root: Path) -> list[np.ndarray]:
    """The first MAX_DEMO_FLOWS ground-truth flows of a demo world (at its own size)."""
    paths = sorted((root / "cityscapes" / "flow_gt" / "val").glob("*/*.flo"))[:MAX_DEMO_FLOWS]
    if not paths:
        raise click.BadParameter(f"no .flo files under {root}/cityscapes/flow_gt/val", param_hint="--demo-world")
    return [np.moveaxis(read_flo(p), 0, -1) for p in paths]


@click.command()
@click.option("--repeats", default=7, show_default=True, help="timed calls per codec and flow")
@click.option("--demo-world", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/out/bench_codec.json"))
def main(repeats: int, demo_world: Path | None, out: Path) -> None:
    """Measure every codec on every flow; print a table and write JSON."""
    street = street_flow(SIZE_WH)
    noisy = street + np.random.default_rng(1).normal(0.0, NOISE_PX, street.shape).astype(np.float32)
    flows = {"street": street, "street_noisy": noisy, **motorcycle_flows(SIZE_WH)}
    for i, flow in enumerate(demo_flows(demo_world) if demo_world else []):
        flows[f"demo_{i}"] = flow
    rows = []
    for flow_name, flow in flows.items():
        npy_bytes = len(CODECS[NPY][0](flow))
        for codec_name, (encode, decode) in CODECS.items():
            data = encode(flow)
            error = float(np.abs(decode(data, flow.shape) - flow).max())
            encode_ms, encode_cpu_ms = median_ms(encode, (flow,), repeats)
            decode_ms, decode_cpu_ms = median_ms(decode, (data, flow.shape), repeats)
            rows.append(
                {
                    "flow": flow_name,
                    "size_wh": [flow.shape[1], flow.shape[0]],
                    "codec": codec_name,
                    "bytes": len(data),
                    "pct_of_npy": 100.0 * len(data) / npy_bytes,
                    "max_error_px": error,
                    "encode_ms": encode_ms,
                    "encode_cpu_ms": encode_cpu_ms,
                    "decode_ms": decode_ms,
                    "decode_cpu_ms": decode_cpu_ms,
                }
            )
    print(f"flow codecs, medians of {repeats} runs (wall / process CPU ms); pct = bytes / int16x10 .npy bytes")
    print(
        f"{'flow':18s}{'codec':34s}{'MiB':>7s}{'pct':>7s}{'enc wall':>10s}{'enc cpu':>9s}{'dec wall':>10s}"
        f"{'dec cpu':>9s}{'max err':>9s}"
    )
    for r in rows:
        print(
            f"{r['flow']:18s}{r['codec']:34s}{r['bytes'] / 2**20:7.3f}{r['pct_of_npy']:7.1f}{r['encode_ms']:10.1f}"
            f"{r['encode_cpu_ms']:9.1f}{r['decode_ms']:10.1f}{r['decode_cpu_ms']:9.1f}{r['max_error_px']:9.4f}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeats": repeats, "opencv": cv2.__version__, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
