"""A user's footage for `i2vda-predict`: a video file, a folder of frames or one image, read as batches of RGB frames.

Frames come out as `(B, H, W, 3)` uint8 RGB with a name each; every frame of one input has the same size. Bad input
(an unreadable video, an empty folder, frames of mixed sizes, a corrupt image) raises `InputError` naming the file,
before any frame is handed out where it can be checked up front (sizes are read from the image headers).
`Footage.select` takes a part of a long input (`--start`, `--every`, `--max-frames`): a frame keeps the name of its
place in the whole input, so predictions of two parts never collide.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
# Cityscapes frames are named <city>_<seq>_<frame>_leftImg8bit.png; without the suffix a prediction is named as
# `i2vda-eval --pred-dir` expects (<city>_<seq>_<frame>_pred.png).
CITYSCAPES_SUFFIX = "_leftImg8bit"
DEFAULT_FPS = 17.0  # a folder of frames has no rate of its own: Cityscapes' 17 Hz
VIDEO_NAME = "frame_{:06d}"  # frames of a video, numbered from 0


@dataclass(frozen=True)
class Footage:
    """One input: `kind` ("video", "frames" or "image"), frame size, frame rate and (when known) frame count."""

    path: Path
    kind: str
    size_hw: tuple[int, int]
    fps: float
    count: int | None  # frames handed out; None where a video does not say how many frames it holds
    files: tuple[Path, ...] = ()  # the frames of a folder (or the one image), in name order
    start: int = 0  # index of the first frame handed out
    every: int = 1  # one frame out of `every`
    max_frames: int | None = None  # at most this many frames (None: to the end)

    @property
    def is_sequence(self) -> bool:
        """Whether the frames follow each other in time (a video, or a folder of more than one frame)."""
        return self.kind == "video" or (self.kind == "frames" and len(self.files) > 1)

    @property
    def bytes(self) -> int:
        """Bytes of the input on disk: the video file, or the frame files taken."""
        return sum(path.stat().st_size for path in (self.files if self.kind != "video" else (self.path,)))

    @property
    def output_fps(self) -> float:
        """The rate of the frames handed out: one of `every` frames is kept."""
        return self.fps / self.every

    def select(self, start: int = 0, every: int = 1, max_frames: int | None = None, flag: str = "--start") -> Footage:
        """Frames start, start + every, ... (at most `max_frames`); a start past a known end raises InputError."""
        if start < 0 or every < 1 or (max_frames is not None and max_frames < 1):
            raise ValueError(f"expected start >= 0, every >= 1, max_frames >= 1; got {start}, {every}, {max_frames}")
        total = self.count
        if total is not None and start >= total:
            raise InputError(f"{flag} {start}: {self.path} has {total} frame(s), numbered from 0")
        count = None if total is None else -(-(total - start) // every)  # ceil
        if max_frames is not None:
            count = max_frames if count is None else min(count, max_frames)
        files = self.files[start::every][:max_frames] if self.files else ()
        return replace(self, count=count, files=files, start=start, every=every, max_frames=max_frames)

    def batches(self, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """(names, (B, H, W, 3) uint8 RGB frames) of up to `batch_size` frames at a time, in order."""
        frames = self._frames()
        while True:
            chunk = [item for _, item in zip(range(batch_size), frames)]
            if not chunk:
                return
            yield [name for name, _ in chunk], np.stack([frame for _, frame in chunk])

    def _frames(self) -> Iterator[tuple[str, np.ndarray]]:
        if self.kind == "video":
            yield from _video_frames(self.path, self.size_hw, self.start, self.every, self.max_frames)
            return
        for path in self.files:
            yield frame_name(path), _read_image(path, self.size_hw)


def frame_name(path: Path) -> str:
    """The output name of a frame file: its stem, without Cityscapes' `_leftImg8bit`."""
    stem = path.stem
    return stem[: -len(CITYSCAPES_SUFFIX)] if stem.endswith(CITYSCAPES_SUFFIX) else stem


def open_footage(path: str | os.PathLike, fps: float | None = None, flag: str = "--input") -> Footage:
    """Footage of a video file, a folder of frames or one image; `fps` overrides the rate (default: the video's)."""
    path = Path(path)
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        if not files:
            raise InputError(f"{flag} {path}: the folder holds no frames ({', '.join(IMAGE_SUFFIXES)})")
        size_hw = _same_size(files, flag)
        return Footage(path, "frames", size_hw, fps or DEFAULT_FPS, len(files), files)
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such video, folder of frames or image")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        size_hw = _same_size((path,), flag)
        return Footage(path, "image", size_hw, fps or DEFAULT_FPS, 1, (path,))
    return _open_video(path, fps, flag)


def _image_size_hw(path: Path, flag: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:  # reads the header only
            w, h = image.size
    except Exception:  # any decoder failure is bad input
        raise InputError(f"{flag}: {path} is not a readable image") from None
    return h, w


def _same_size(files, flag: str) -> tuple[int, int]:
    """The frames' common (H, W); a frame of another size raises InputError naming it and both sizes."""
    first = _image_size_hw(files[0], flag)
    for path in files[1:]:
        size_hw = _image_size_hw(path, flag)
        if size_hw != first:
            raise InputError(
                f"{flag}: {path.name} is {size_hw[1]}x{size_hw[0]} but {files[0].name} is "
                f"{first[1]}x{first[0]}; all frames of one input must have the same size"
            )
    return first


def _read_image(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"--input: cannot decode {path} (corrupt or truncated image?)")
    if bgr.shape[:2] != tuple(size_hw):
        raise InputError(f"--input: {path} is {bgr.shape[1]}x{bgr.shape[0]}, expected {size_hw[1]}x{size_hw[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _open_video(path: Path, fps: float | None, flag: str) -> Footage:
    capture = cv2.VideoCapture(str(path))
    try:
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not ok or first is None:
            raise InputError(f"{flag} {path}: not a readable video (OpenCV/FFmpeg cannot decode a frame of it)")
        rate = capture.get(cv2.CAP_PROP_FPS)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    rate = fps or (rate if np.isfinite(rate) and rate > 0 else DEFAULT_FPS)
    return Footage(path, "video", tuple(first.shape[:2]), float(rate), count if count > 0 else None)


def _video_frames(
    path: Path, size_hw: tuple[int, int], start: int = 0, every: int = 1, max_frames: int | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Frames start, start + every, ... of a video, named by their index in it; skipped frames are only grabbed
    (demuxed and decoded, not converted), since seeking by frame number is not exact in every container."""
    capture = cv2.VideoCapture(str(path))
    try:
        index, handed = 0, 0
        while max_frames is None or handed < max_frames:
            wanted = index >= start and (index - start) % every == 0
            ok = capture.grab()
            if ok and wanted:
                ok, bgr = capture.retrieve()
            if not ok:
                return
            if wanted:
                if bgr.shape[:2] != tuple(size_hw):
                    raise InputError(
                        f"--input {path}: frame {index} is {bgr.shape[1]}x{bgr.shape[0]}, the first was "
                        f"{size_hw[1]}x{size_hw[0]}"
                    )
                yield VIDEO_NAME.format(index), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                handed += 1
            index += 1
    finally:
        capture.release()
