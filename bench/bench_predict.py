"""`i2vda-predict` on a real-looking clip: the time around the network, the bytes written, the video's frames.

    .venv/bin/python bench/bench_predict.py [--ckpt CKPT] [--before 562c8e3] [--repeats 3]
                                            [--out bench/out/bench_predict.json]

The clip: no video can be downloaded here, so it is made from real photographs shipped with scikit-image (the
Middlebury motorcycle, the rocket, the astronaut, the coffee cup): 4 shots of 15 frames, each a virtual camera
panning across or zooming into one photo (crops resized to 768x576 with bicubic interpolation), 60 frames at 10 fps,
written by OpenCV as MPEG-4 Part 2 (`mp4v`, OpenCV's default bitrate), the codec of many dashcams and phones before
H.264. Its bytes per frame are printed next to those of the 768x576 street clip of issue 20 (8 MB for 795 frames).

The checkpoint: `--ckpt`, else a `deeplab_tiny` (the demo's network) with seed-0 random weights at the demo's
256x128, written as a training checkpoint. Each configuration runs as its own `python -m
trainer.evaluation.predict_cli` process (the command a user types), `--repeats` times, the configurations
interleaved within each repeat: `before` is the code of commit `--before` (extracted with `git archive`), the others
the working tree. Per run: seconds per frame around the network (predict.json's seconds_per_frame minus
network_seconds_per_frame: decoding, resizing, the files and the video), the bytes under --out over the clip's
bytes, the video's frame count (OpenCV's CAP_PROP_FRAME_COUNT and every frame decoded), whether every train-id
PNG has the clip's resolution, and whether the train ids are the same bytes in every configuration, before and after
(the same predictions). Medians over the repeats.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import cv2
import numpy as np
import skimage.data
import torch

from trainer.models import build_segmenter
from trainer.training.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLIP_WH = (768, 576)
CLIP_FPS = 10.0
SHOT_FRAMES = 15
ISSUE_CLIP_BYTES_PER_FRAME = 8e6 / 795  # issue 20's street clip: 8 MB, 795 frames at 768x576
DEMO_NET_HW = (128, 256)
# name -> (code: "before" or "after", extra flags)
CONFIGS = {
    "before, default": ("before", []),
    "after, default": ("after", []),
    "after, --color": ("after", ["--color"]),
    "after, --overlay": ("after", ["--overlay"]),
    "after, --video-codec vp9": ("after", ["--video-codec", "vp9"]),
    "after, --no-video": ("after", ["--no-video"]),
    "after, --no-video --no-ids": ("after", ["--no-video", "--no-ids"]),
}


def photos() -> list[np.ndarray]:
    """Four real photographs (RGB uint8) shipped with scikit-image."""
    return [skimage.data.stereo_motorcycle()[0], skimage.data.rocket(), skimage.data.astronaut(), skimage.data.coffee()]


def shot(photo: np.ndarray, frames: int, pan: bool) -> list[np.ndarray]:
    """A virtual camera over one photo: a 4:3 window panning left to right (`pan`) or zooming in to 65%."""
    h, w = photo.shape[:2]
    out_w, out_h = CLIP_WH
    views = []
    for i in range(frames):
        s = i / (frames - 1)
        zoom = 0.8 if pan else 1.0 - 0.35 * s
        crop_w = min(w, round(h * zoom * out_w / out_h))
        crop_h = round(crop_w * out_h / out_w)
        x = round((w - crop_w) * (s if pan else 0.5))
        y = round((h - crop_h) * 0.5)
        views.append(cv2.resize(photo[y : y + crop_h, x : x + crop_w], CLIP_WH, interpolation=cv2.INTER_CUBIC))
    return views


def make_clip(path: Path) -> Path:
    """The 60-frame 768x576 10 fps mp4v clip of the module docstring."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, CLIP_WH)
    for k, photo in enumerate(photos()):
        for frame in shot(photo, SHOT_FRAMES, pan=k % 2 == 0):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def make_checkpoint(path: Path) -> Path:
    """A deeplab_tiny with seed-0 random weights, as a training checkpoint of the demo's size."""
    torch.manual_seed(0)
    model = build_segmenter("deeplab_tiny", 15)
    config = {"arch": "deeplab_tiny", "num_classes": 15, "protocol": "viper15", "target_size_hw": list(DEMO_NET_HW)}
    return save_checkpoint({"model": model.state_dict(), "config": config, "iteration": 0}, path)


def extract(rev: str, into: Path) -> Path:
    """The pipeline/ and trainer/ packages of commit `rev` under `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pipeline", "trainer"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def video_frames(path: str | None) -> tuple[int | None, int | None]:
    """(OpenCV's CAP_PROP_FRAME_COUNT, frames actually decoded) of a video; (None, None) without one."""
    if path is None:
        return None, None
    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    capture.release()
    return count, decoded


def run_once(code_root: Path, ckpt: Path, clip: Path, out: Path, flags: list[str]) -> dict:
    """One `i2vda-predict` process; -> what predict.json and the files under `out` say."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "trainer.evaluation.predict_cli", "--ckpt", str(ckpt), "--input", str(clip)]
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    done = subprocess.run([*command, "--out", str(out), *flags], cwd=code_root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    summary = json.loads((out / "predict.json").read_text())
    ids = sorted((out / "pred").glob("*_pred.png")) if (out / "pred").is_dir() else []
    shapes = {cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in ids}
    ids_sha256 = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in ids)).hexdigest() if ids else None
    count, decoded = video_frames(summary.get("video"))
    frames = summary["frames"]
    return {
        "seconds_per_frame": summary["seconds_per_frame"],
        "network_seconds_per_frame": summary["network_seconds_per_frame"],
        "around_network_seconds_per_frame": summary["seconds_per_frame"] - summary["network_seconds_per_frame"],
        "bytes_out": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        "frames": frames,
        "video_codec": summary.get("video_codec"),
        "video_frame_count": count,
        "video_frames_decoded": decoded,
        "ids_pngs": len(ids),
        "ids_at_input_size": shapes == {(CLIP_WH[1], CLIP_WH[0])},
        "ids_sha256": ids_sha256,
        "warnings": [line for line in done.stderr.splitlines() if line.startswith("warning:")],
    }


def summarise(runs: list[dict], clip_bytes: int) -> dict:
    """Medians of the timings and sizes, and the checks of the last run (they do not vary)."""
    last = runs[-1]
    median = {k: statistics.median(r[k] for r in runs) for k in ("seconds_per_frame", "network_seconds_per_frame")}
    around = statistics.median(r["around_network_seconds_per_frame"] for r in runs)
    bytes_out = statistics.median(r["bytes_out"] for r in runs)
    return {
        **median,
        "around_network_seconds_per_frame": around,
        "bytes_out": bytes_out,
        "bytes_ratio": bytes_out / clip_bytes,
        "runs": len(runs),
        **{k: last[k] for k in ("frames", "video_codec", "video_frame_count", "video_frames_decoded", "ids_pngs")},
        "ids_at_input_size": last["ids_at_input_size"],
        "ids_sha256": last["ids_sha256"],
        "warnings": last["warnings"],
    }


@click.command()
@click.option("--ckpt", type=click.Path(exists=True, path_type=Path), help="A checkpoint [default: see above].")
@click.option("--before", default="562c8e3", show_default=True, help="Commit whose i2vda-predict is 'before'.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "bench" / "out" / "bench_predict.json")
def main(ckpt: Path | None, before: str, repeats: int, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        clip = make_clip(tmp / "street.mp4")
        clip_bytes = clip.stat().st_size
        print(
            f"clip: {clip_bytes} B, {clip_bytes / 60 / 1e3:.1f} KB per frame "
            f"(issue 20's street clip: {ISSUE_CLIP_BYTES_PER_FRAME / 1e3:.1f} KB per frame)"
        )
        ckpt = ckpt or make_checkpoint(tmp / "tiny.pt")
        roots = {"before": extract(before, tmp / "before"), "after": ROOT}
        runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        for repeat in range(repeats):
            for name, (code, flags) in CONFIGS.items():
                runs[name].append(run_once(roots[code], ckpt, clip, tmp / "out", flags))
                print(f"repeat {repeat + 1}/{repeats} {name}: {runs[name][-1]['seconds_per_frame']:.3f} s/frame")
    result = {name: summarise(r, clip_bytes) for name, r in runs.items()}
    report = {"clip_bytes": clip_bytes, "clip_frames": 60, "ckpt": str(ckpt), "before": before, "configs": result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{'configuration':28} s/frame  network  around  bytes out  x clip  video frames (count/decoded)  ids")
    for name, r in result.items():
        ids = f"{r['ids_pngs']} at input size" if r["ids_at_input_size"] else f"{r['ids_pngs']} NOT at input size"
        ids = ids if r["ids_pngs"] else "none"
        print(
            f"{name:28} {r['seconds_per_frame']:7.3f} {r['network_seconds_per_frame']:8.3f} "
            f"{r['around_network_seconds_per_frame']:7.3f} {r['bytes_out']:10.0f} {r['bytes_ratio']:7.1f}  "
            f"{r['video_codec'] or '-':5} {r['video_frame_count']}/{r['video_frames_decoded']}  {ids}"
        )
    same = len({r["ids_sha256"] for r in result.values() if r["ids_sha256"]}) == 1
    print(f"train ids: {'the same bytes in every configuration' if same else 'DIFFER between configurations'}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
