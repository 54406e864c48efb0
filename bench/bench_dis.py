"""DIS speed per preset at 1024x512 and its end-point error on the motorcycle stereo pair (and a demo world's truth).

    .venv/bin/python bench/bench_dis.py [--repeats 7] [--demo-world DIR] [--out bench/out/bench_dis.json]

The motorcycle pair (scikit-image, Middlebury 2014) has left -> right flow u = -disparity, v = 0; pixels without a
disparity are left out. Times are medians over `--repeats` calls of the estimator (grayscale conversion included),
with OpenCV limited to one thread (what one Ray CPU worker gets) and with its default thread count.
`--demo-world DIR` also scores the ground-truth flow of a world written by `i2vda-prep demo-world --out DIR`.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import click
import cv2
import numpy as np
import skimage.data

from pipeline.flow import read_flo
from pipeline.flow.dis import DIS_PRESETS, DISEstimator

SIZE_WH = (1024, 512)  # the Cityscapes training size of the paper
BAD_PX = 3.0  # an end-point error above this counts as a wrong pixel (KITTI's outlier threshold)
MAX_DEMO_PAIRS = 20  # enough pairs for a stable mean, few enough to stay under a minute
# Single-setting changes to OpenCV's MEDIUM preset (setter name without "set" -> value), to see which one pays.
MEDIUM_VARIANTS = {
    "finest scale 0": {"FinestScale": 0},
    "descent iters 50": {"GradientDescentIterations": 50},
    "refine iters 10": {"VariationalRefinementIterations": 10},
    "refine iters 0": {"VariationalRefinementIterations": 0},
    "patch 12, stride 6": {"PatchSize": 12, "PatchStride": 6},
    "no mean normalisation": {"UseMeanNormalization": False},
}


def motorcycle(size_wh: tuple[int, int] | None):
    """Left, right uint8 RGB, ground-truth flow (2, H, W) and its validity mask, resized to size_wh if given."""
    left, right, disparity = skimage.data.stereo_motorcycle()
    valid = np.isfinite(disparity)
    u = np.where(valid, -disparity, 0.0).astype(np.float32)
    if size_wh is not None:
        scale_x = size_wh[0] / left.shape[1]  # disparity is horizontal: it scales with the width
        left = cv2.resize(left, size_wh, interpolation=cv2.INTER_AREA)
        right = cv2.resize(right, size_wh, interpolation=cv2.INTER_AREA)
        u = cv2.resize(u, size_wh, interpolation=cv2.INTER_NEAREST) * scale_x
        valid = cv2.resize(valid.astype(np.uint8), size_wh, interpolation=cv2.INTER_NEAREST).astype(bool)
    truth = np.stack((u, np.zeros_like(u)))
    return left, right, truth, valid


def demo_pairs(root: Path):
    """(frame a, frame b, flow a->b) triples from a demo world's `cityscapes/flow_gt/val/<city>/*.flo` files."""
    city_root = root / "cityscapes"
    flo_paths = sorted((city_root / "flow_gt" / "val").glob("*/*.flo"))[:MAX_DEMO_PAIRS]
    if not flo_paths:
        raise click.BadParameter(f"no .flo files under {city_root / 'flow_gt' / 'val'}", param_hint="--demo-world")
    for flo_path in flo_paths:
        city, seq, a, b = flo_path.stem.rsplit("_", 3)
        frames = []
        for frame in (a, b):
            path = city_root / "leftImg8bit_sequence" / "val" / city / f"{city}_{seq}_{frame}_leftImg8bit.png"
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise click.BadParameter(f"cannot read {path}, the frame of {flo_path.name}", param_hint="--demo-world")
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        yield frames[0], frames[1], read_flo(flo_path)


def epe_stats(flow: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Mean end-point error (px) and the percentage of pixels above BAD_PX, over the valid pixels."""
    error = np.linalg.norm(flow - truth, axis=0)[valid]  # (2, H, W) flows
    return float(error.mean()), float(100.0 * (error > BAD_PX).mean())


def medium_variants(pair, repeats: int) -> list[dict]:
    """EPE and CPU time of MEDIUM with one setting changed, on a (left, right, truth, valid) pair, one thread."""
    left, right, truth, valid = pair
    gray0, gray1 = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in (left, right))
    rows = []
    for name, settings in {"medium (OpenCV preset)": {}, **MEDIUM_VARIANTS}.items():
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        for setter, value in settings.items():
            getattr(dis, f"set{setter}")(value)
        epe, bad = epe_stats(dis.calc(gray0, gray1, None).transpose(2, 0, 1), truth, valid)  # OpenCV: (H, W, 2)
        _, cpu_ms = median_ms(lambda dis=dis: dis.calc(gray0, gray1, None), repeats)
        rows.append({"variant": name, "epe_1024x512": epe, "bad3_1024x512_pct": bad, "cpu_ms_threads1": cpu_ms})
    return rows


def median_ms(fn, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU time of fn() in ms (CPU time sums threads; it is robust to a busy machine)."""
    fn()  # warm-up: first-call allocations
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return 1000.0 * statistics.median(wall), 1000.0 * statistics.median(cpu)


@click.command()
@click.option("--repeats", default=7, show_default=True, help="timed calls per preset and thread setting")
@click.option("--demo-world", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/out/bench_dis.json"))
def main(repeats: int, demo_world: Path | None, out: Path) -> None:
    """Time and score every DIS preset; print a table and write JSON."""
    default_threads = cv2.getNumThreads()
    big = motorcycle(SIZE_WH)
    native = motorcycle(None)
    demo = list(demo_pairs(demo_world)) if demo_world else []
    rows = []
    for preset in DIS_PRESETS:
        est = DISEstimator(preset)
        row = {"preset": preset}
        for threads in (1, default_threads):
            cv2.setNumThreads(threads)
            wall_ms, cpu_ms = median_ms(lambda est=est: est.flows(big[0], big[1]), repeats)
            row[f"wall_ms_threads{threads}"], row[f"cpu_ms_threads{threads}"] = wall_ms, cpu_ms
        cv2.setNumThreads(default_threads)
        row["epe_native"], row["bad3_native_pct"] = epe_stats(est.flows(native[0], native[1]), native[2], native[3])
        row["epe_1024x512"], row["bad3_1024x512_pct"] = epe_stats(est.flows(big[0], big[1]), big[2], big[3])
        if demo:
            scores = [epe_stats(est.flows(f0, f1), truth, np.ones(truth.shape[1:], bool)) for f0, f1, truth in demo]
            row["epe_demo"] = float(np.mean([s[0] for s in scores]))
            row["bad3_demo_pct"] = float(np.mean([s[1] for s in scores]))
        rows.append(row)
    cv2.setNumThreads(1)
    variants = medium_variants(big, repeats)
    cv2.setNumThreads(default_threads)

    columns = [k for k in rows[0] if k != "preset"]
    print(
        f"DIS on {native[0].shape[1]}x{native[0].shape[0]} motorcycle pair (native) and resized to "
        f"{SIZE_WH[0]}x{SIZE_WH[1]}; OpenCV {cv2.__version__}, default threads {default_threads}; "
        f"demo pairs: {len(demo)}"
    )
    print(f"{'preset':10s}" + "".join(f"{c:>19s}" for c in columns))
    for row in rows:
        print(f"{row['preset']:10s}" + "".join(f"{row[c]:19.2f}" for c in columns))
    zero_flow = {
        name: epe_stats(np.zeros_like(pair[2]), pair[2], pair[3])[0]
        for name, pair in (("native", native), ("1024x512", big))
    }
    print(
        f"zero-flow EPE (the mean disparity): {zero_flow['native']:.2f} px native, "
        f"{zero_flow['1024x512']:.2f} px at 1024x512"
    )
    print(f"\nMEDIUM with one setting changed, motorcycle at {SIZE_WH[0]}x{SIZE_WH[1]}, one thread")
    print(f"{'variant':24s}{'epe':>8s}{'bad3 %':>8s}{'cpu ms':>8s}")
    for v in variants:
        print(f"{v['variant']:24s}{v['epe_1024x512']:8.3f}{v['bad3_1024x512_pct']:8.2f}{v['cpu_ms_threads1']:8.1f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "opencv": cv2.__version__,
        "default_threads": default_threads,
        "repeats": repeats,
        "size_wh": SIZE_WH,
        "demo_pairs": len(demo),
        "rows": rows,
        "medium_variants": variants,
        "zero_flow_epe": zero_flow,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
