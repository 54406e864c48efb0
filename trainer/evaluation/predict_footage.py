"""`i2vda-predict`'s loop: every frame of a user's footage through the network, and the files it writes.

Per frame, by default only the train ids (`pred/<name>_pred.png`: what `i2vda-eval --pred-dir` scores) and, for a
video or a frame sequence, one video frame (input | overlay, titled, the legend below); colour PNGs and overlay PNGs
are written when asked (`Outputs`), since they cost more time and disk than everything else (docs/EVALUATION.md).
The network's seconds are timed apart from the rest: the forward passes with the logits' upsampling and argmax.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.sources import Protocol, class_legend, colorize, figure_grid, with_legend, write_png
from trainer.evaluation.evaluate import tc_confusion, tc_score
from trainer.evaluation.footage import Footage
from trainer.evaluation.predict import predict_at_sizes, resize_frames
from trainer.evaluation.visualize import VideoSink, overlay
from trainer.training.monitor import on_terminal

VIDEO_TILE_MAX_WIDTH = 960  # each half of a video frame is shrunk to this width at most (a 1080p input stays light)
VIDEO_TILE_MIN_WIDTH = 320  # and enlarged to this width at least, so titles and the legend stay readable
INPUT_TITLE = "input"
# --video-codec auto: the first this OpenCV build writes (visualize.py). mp4v writes a frame of a 768x576 input in
# about 40 ms; VP9 (browsers play it) takes about 20 times longer (bench/bench_predict.py), so it is asked for by name.
AUTO_CODECS = ("h264", "mp4v")
ASPECT_TOLERANCE = 0.02  # relative difference of width/height ratios below which nobody sees a stretch
SIZE_MULTIPLE = 8  # a suggested --size keeps the network's height and rounds the width to DeepLab's output stride
# What each per-frame file is called under OUT/pred/ (`<name><suffix>`).
SUFFIXES = {"ids": "_pred.png", "color": "_pred_color.png", "overlay": "_overlay.png"}


@dataclass(frozen=True)
class Outputs:
    """The files `i2vda-predict` writes per frame, and whether a video or frame sequence also gives a video."""

    ids: bool = True  # train ids, grey: i2vda-eval --pred-dir scores them
    color: bool = False  # the ids in the protocol's colours
    overlay: bool = False  # the colours over the frame, with the legend of the classes it shows
    video: bool = True  # input | overlay, at the frames' rate
    codecs: tuple[str, ...] = AUTO_CODECS  # the first of these the OpenCV build writes

    @property
    def pngs(self) -> tuple[str, ...]:
        """The kinds of per-frame PNG written, keys of SUFFIXES."""
        return tuple(kind for kind in SUFFIXES if getattr(self, kind))


def aspect_warning(frames_hw: tuple[int, int], net_hw: tuple[int, int]) -> str | None:
    """A `warning:` line when the frames' aspect differs from the network's input, with a --size that keeps it."""
    (h, w), (net_h, net_w) = frames_hw, net_hw
    if abs(math.log((w / h) / (net_w / net_h))) <= ASPECT_TOLERANCE:
        return None
    keep_w = max(SIZE_MULTIPLE, round(net_h * w / h / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return (
        f"warning: the frames are {w}x{h} (aspect {w / h:.2f}) but the network runs at {net_w}x{net_h} "
        f"({net_w / net_h:.2f}): each frame is stretched to that size and its prediction stretched back; "
        f"--size {keep_w}x{net_h} keeps the frames' aspect"
    )


class TcMeter:
    """TC of a prediction sequence, as `i2vda-eval` measures it: pair counts of (P_t, W(P_t+1, F(t->t+1))) summed."""

    def __init__(self, estimator, protocol: Protocol, tc_protocol: str):
        self.estimator, self.protocol, self.tc_protocol = estimator, protocol, tc_protocol
        k = protocol.num_classes
        self.cm = np.zeros((k, k), dtype=np.int64)
        self.pairs = 0
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (frame, prediction) ending the previous batch

    def add(self, frames_bhw3: np.ndarray, preds_bhw: np.ndarray) -> None:
        """The next frames of the sequence at the network's input size and their predictions at that size."""
        if self._last is not None:
            frames_bhw3 = np.concatenate([self._last[0][None], frames_bhw3])
            preds_bhw = np.concatenate([self._last[1][None], preds_bhw])
        if len(frames_bhw3) > 1:
            flows = self.estimator.flows(frames_bhw3[:-1], frames_bhw3[1:])  # (B-1, 2, H, W): F(t->t+1) on t's grid
            self.cm += tc_confusion(preds_bhw, flows, self.protocol.num_classes, self.tc_protocol)
            self.pairs += len(frames_bhw3) - 1
        self._last = (frames_bhw3[-1], preds_bhw[-1])

    def score(self) -> float | None:
        """TC in percent over every pair seen (None where no scored class occurs at all)."""
        value = tc_score(self.cm, self.protocol.eval_ids, self.tc_protocol)
        return None if np.isnan(value) else value


class VideoFrames:
    """Frames of the output video: the input | its overlay under two titles, the protocol's legend below."""

    def __init__(self, size_hw: tuple[int, int], protocol: Protocol, title: str):
        h, w = size_hw
        scale = min(max(w, VIDEO_TILE_MIN_WIDTH), VIDEO_TILE_MAX_WIDTH) / w
        self.tile_hw = (max(2, round(h * scale)), max(2, round(w * scale)))
        self.titles = [INPUT_TITLE, title]
        grid_width = figure_grid([[np.zeros((*self.tile_hw, 3), np.uint8)] * 2], tile_hw=self.tile_hw).shape[1]
        self.legend = class_legend(protocol, grid_width)  # drawn once: every class the network can predict

    def __call__(self, frame: np.ndarray, over: np.ndarray) -> np.ndarray:
        grid = figure_grid([[frame, over]], titles=self.titles, tile_hw=self.tile_hw)
        return np.concatenate([grid, self.legend], axis=0)


def _picture(kind: str, label: np.ndarray, over: np.ndarray | None, protocol: Protocol) -> np.ndarray:
    """The per-frame PNG of one kind of SUFFIXES."""
    if kind == "ids":
        return label
    if kind == "color":
        return colorize(label, protocol)
    return with_legend(over, protocol, label)


def predict_footage(
    model,
    footage: Footage,
    protocol: Protocol,
    out: Path,
    net_size_hw,
    device,
    batch_size: int,
    amp_dtype=None,
    tc: TcMeter | None = None,
    outputs: Outputs = Outputs(),
    title: str = "prediction",
) -> dict:
    """Predict every frame of `footage` and write `outputs` under `out`; returns the counts, seconds and bytes."""
    out_hw = footage.size_hw
    sizes = [out_hw] if tc is None or tuple(net_size_hw) == tuple(out_hw) else [out_hw, net_size_hw]
    video = footage.is_sequence and outputs.video
    sink = VideoSink(out / footage.path.stem, footage.output_fps, outputs.codecs) if video else None
    video_frame = VideoFrames(out_hw, protocol, title) if video else None
    written = dict.fromkeys(outputs.pngs, 0)  # bytes per kind of PNG
    frames_done, network_s = 0, 0.0
    started = time.perf_counter()
    try:
        # A bar on a terminal only: off one (a batch job's log) its carriage-return redraws would fill the file.
        with tqdm(total=footage.count, unit="frame", desc="predict", disable=not on_terminal()) as bar:
            for names, frames in footage.batches(batch_size):
                net_frames = resize_frames(frames, net_size_hw)
                tick = time.perf_counter()
                preds = predict_at_sizes(model, net_frames, sizes, device, batch_size, autocast_dtype=amp_dtype)
                network_s += time.perf_counter() - tick
                for name, frame, label in zip(names, frames, preds[0]):
                    over = overlay(frame, label, protocol) if outputs.overlay or sink is not None else None
                    for kind in outputs.pngs:
                        path = out / "pred" / f"{name}{SUFFIXES[kind]}"
                        write_png(path, _picture(kind, label, over, protocol))
                        written[kind] += path.stat().st_size
                    if sink is not None:
                        sink.write(video_frame(frame, over))
                if tc is not None:
                    tc.add(net_frames, preds[-1])
                frames_done += len(names)
                bar.update(len(names))
    finally:
        if sink is not None:
            sink.close()
    total_s = time.perf_counter() - started
    video_path = sink.path if sink is not None else None
    if video_path is not None:
        written["video"] = video_path.stat().st_size
    return {
        "frames": frames_done,
        "video": str(video_path) if video_path else None,
        "video_codec": sink.codec if sink else None,
        "seconds": total_s,
        "network_seconds": network_s,
        "seconds_per_frame": total_s / max(frames_done, 1),
        "network_seconds_per_frame": network_s / max(frames_done, 1),
        "bytes_written": written,
    }
