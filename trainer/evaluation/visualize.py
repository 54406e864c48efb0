"""Predictions people can look at: overlays, prediction PNGs, videos (figure grids and legends: pipeline.sources)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.sources import IGNORE_ID, Protocol, as_rgb, colorize, resize_label, resize_rgb, with_legend, write_png

DEFAULT_ALPHA = 0.5  # weight of the class colour over the frame in an overlay
MP4_FOURCC = "mp4v"  # MPEG-4 part 2: written by every OpenCV build; VLC, mpv and ffplay play it, browsers do not
MP4_BLOCK = 2  # mp4v, H.264 and VP9 frames need even sides; odd frames are padded by one black row/column
# Video codecs by preference: (fourcc, file suffix). The opencv-python wheels carry no H.264 encoder (licensing), but
# their FFmpeg writes VP9 in WebM, which every current browser plays; mp4v is the fallback every build has.
VIDEO_CODECS = {"h264": ("avc1", ".mp4"), "vp9": ("VP90", ".webm"), "mp4v": (MP4_FOURCC, ".mp4")}
BROWSER_CODECS = ("h264", "vp9")
OFFLINE_PLAYERS = "VLC, mpv or ffplay"  # what plays an mp4v file (browsers do not)


def overlay(rgb: np.ndarray, label: np.ndarray, protocol: Protocol, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8: the frame blended with the label colours (alpha on the colour); ignored pixels unchanged.

    A label of another size is resized to the frame's size (nearest).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    h, w = rgb.shape[:2]
    label = resize_label(np.asarray(label, dtype=np.uint8), (w, h))
    color = colorize(label, protocol).astype(np.float32)
    blend = (1.0 - alpha) * rgb.astype(np.float32) + alpha * color
    known = (label != IGNORE_ID) & (label < protocol.num_classes)
    out = np.where(known[..., None], blend, rgb.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """Images joined left to right, each resized to the first one's height and width."""
    h, w = images[0].shape[:2]
    return np.concatenate([resize_rgb(as_rgb(img), (w, h)) for img in images], axis=1)


def write_mp4(path: str | os.PathLike, frames, fps: float) -> int:
    """Write (H, W, 3) uint8 RGB frames as an mp4 (H.264 where this OpenCV has it, else mp4v); returns the count."""
    with VideoSink(path, fps, codecs=("h264", "mp4v")) as sink:
        for frame in frames:
            sink.write(frame)
    if sink.count == 0:
        raise ValueError("write_mp4 needs at least one frame")
    return sink.count


class VideoSink:
    """Frames in, a video file out: the first codec of `codecs` (keys of VIDEO_CODECS) this OpenCV build can write.

    `path`'s suffix is replaced by the codec's (.mp4 or .webm); after the first frame `path` and `codec` say what is
    being written. Odd frame sizes are padded by one black row/column (the codecs need even sides).
    """

    def __init__(self, path: str | os.PathLike, fps: float, codecs=("h264", "vp9", "mp4v")):
        unknown = [c for c in codecs if c not in VIDEO_CODECS]
        if unknown or not codecs:
            raise ValueError(f"codecs must be among {', '.join(VIDEO_CODECS)}, got {codecs}")
        self.requested, self.codecs, self.fps = Path(path), tuple(codecs), float(fps)
        self.path: Path | None = None
        self.codec: str | None = None
        self.count = 0
        self._writer = None
        self._size_hw: tuple[int, int] | None = None

    def _open(self, h: int, w: int) -> None:
        out_h, out_w = h + h % MP4_BLOCK, w + w % MP4_BLOCK
        self.requested.parent.mkdir(parents=True, exist_ok=True)
        for codec in self.codecs:
            fourcc, suffix = VIDEO_CODECS[codec]
            path = self.requested.with_suffix(suffix)
            with _quiet_native_stderr():  # FFmpeg prints its failed probes (no H.264 encoder) straight to fd 2
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps, (out_w, out_h))
            if writer.isOpened():
                self._writer, self.path, self.codec, self._size_hw = writer, path, codec, (h, w)
                return
            writer.release()
            path.unlink(missing_ok=True)
        tried = ", ".join(self.codecs)
        raise InputError(f"{self.requested}: this OpenCV build cannot write a video there with {tried}")

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; every frame must have the first one's size."""
        frame = as_rgb(frame)
        h, w = frame.shape[:2]
        if self._writer is None:
            self._open(h, w)
        if (h, w) != self._size_hw:
            raise ValueError(f"all frames must be {self._size_hw[1]}x{self._size_hw[0]}, got {w}x{h}")
        padded = np.zeros((h + h % MP4_BLOCK, w + w % MP4_BLOCK, 3), dtype=np.uint8)
        padded[:h, :w] = frame
        self._writer.write(cv2.cvtColor(padded, cv2.COLOR_RGB2BGR))
        self.count += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send what C libraries write to file descriptor 2 to /dev/null meanwhile (Python's own stderr is untouched)."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def save_prediction_pngs(
    out_dir: str | os.PathLike,
    key: str,
    rgb: np.ndarray,
    pred: np.ndarray,
    label: np.ndarray | None,
    protocol: Protocol,
) -> list[Path]:
    """Write `<key>_pred.png` (train ids), `_pred_color.png`, `_overlay.png` (and `_gt_color.png`) at the label size;
    the overlay carries the legend of the classes the prediction and the ground truth show."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = pred.shape
    shown = [] if label is None else [label]
    pictures = {
        "_pred.png": pred,  # grey train ids, readable back by `i2vda-eval --pred-dir`
        "_pred_color.png": colorize(pred, protocol),
        "_overlay.png": with_legend(overlay(resize_rgb(rgb, (w, h)), pred, protocol), protocol, pred, *shown),
    }
    if label is not None:
        pictures["_gt_color.png"] = colorize(label, protocol)
    paths = []
    for suffix, image in pictures.items():
        paths.append(out_dir / f"{key}{suffix}")
        write_png(paths[-1], image)
    return paths


def snippet_frames(clip_thw3: np.ndarray, preds_thw: np.ndarray, protocol: Protocol) -> list[np.ndarray]:
    """Video frames: each clip frame (left) beside its colourised prediction (right)."""
    return [side_by_side(frame, colorize(pred, protocol)) for frame, pred in zip(clip_thw3, preds_thw)]
