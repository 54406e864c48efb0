"""What one prep worker does, without Ray: read and resize frames, estimate both flows, encode, write one shard
(or one val item). The Ray actor in `pipeline/job.py` and the plain loop of the benchmark both call `Builder`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.errors import InputError
from pipeline.flow.estimators import load_estimator
from pipeline.plan import PrepConfig, ShardTask
from pipeline.shards import (
    RUN_LAYOUT,
    SOURCE_KIND,
    TARGET_KIND,
    RunEncoder,
    encode_source_sample,
    encode_target_sample,
    encode_val_item,
    tc_clip_bounds,
    write_shard,
)
from pipeline.sources import get_protocol, protocol_names, read_source_label
from pipeline.sources.cityscapes import AnnotatedFrame, read_label
from pipeline.sources.images import read_rgb, resize_label, resize_rgb


def pin_threads(threads: int = 1) -> None:
    """Let OpenCV and torch use `threads` threads, so that N workers use N cores and no more."""
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


class BadSample(InputError):
    """A sample that cannot be built: `path` (relative to the dataset root) and `reason` say why."""

    def __init__(self, key: str, path: str, reason: str):
        super().__init__(reason)
        self.key, self.path, self.reason = key, path, reason


class Builder:
    """Builds shards (or val items) of one PrepConfig; loads the flow estimator once."""

    def __init__(self, config: PrepConfig, device: str = "cpu"):
        self.config = config
        self.root = Path(config.root)
        self.estimator = None
        if config.kind != SOURCE_KIND:
            self.estimator = load_estimator(
                config.flow, checkpoint=config.flow_ckpt, device=device, **config.estimator_options
            )
        self._last_frame1: tuple[str, np.ndarray, np.ndarray] | None = None  # (path, native, resized); see _pair
        self.flow_meta = (
            {}
            if self.estimator is None
            else {
                "estimator": self.estimator.name,
                "estimator_options": dict(self.estimator.options),
                "checkpoint_sha256": self.estimator.checkpoint_sha256,
            }
        )

    def _rel(self, path: str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def _read(self, key: str, path: str, previous: tuple[str, np.ndarray] | None = None) -> np.ndarray:
        """A frame as (H, W, 3) uint8 RGB, of the size of the `previous` (path, frame) if given; errors -> BadSample."""
        try:
            rgb = read_rgb(path)
        except InputError as exc:
            raise BadSample(key, self._rel(path), str(exc)) from None
        if previous is not None and rgb.shape != previous[1].shape:
            (h, w), (h0, w0) = rgb.shape[:2], previous[1].shape[:2]
            raise BadSample(
                key,
                self._rel(path),
                f"{path}: frame of {w}x{h} pixels, but the frame before it, {previous[0]}, has {w0}x{h0}",
            )
        return rgb

    def _guarded(self, make: Callable, record, skipped: list):
        """make(record), or None after recording the failure when --on-error skip (fail: the error propagates)."""
        try:
            return make(record)
        except BadSample as exc:
            if self.config.on_error == "fail":
                raise
            skipped.append({"key": exc.key, "path": exc.path, "reason": exc.reason})
            return None

    def _pair(self, record) -> tuple:
        """(record, frame0, frame1 at the store size, native (W, H)) of a Cityscapes PairRecord.

        Consecutive pairs of a snippet share a frame (I1 of pair f is I0 of pair f+1): the last good I1 is kept,
        native and resized, so `--pairs all` decodes each frame once instead of twice."""
        if self._last_frame1 is not None and self._last_frame1[0] == record.path0:
            _, frame0, small0 = self._last_frame1
        else:
            frame0 = self._read(record.key, record.path0)
            small0 = resize_rgb(frame0, self.config.size_wh)
        frame1 = self._read(record.key, record.path1, previous=(record.path0, frame0))
        small1 = resize_rgb(frame1, self.config.size_wh)
        self._last_frame1 = (record.path1, frame1, small1)
        return record, small0, small1, [frame0.shape[1], frame0.shape[0]]

    def flows_both_ways(self, frames0: np.ndarray, frames1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """F_0->1 and F_1->0 (B, 2, H, W) of B pairs, in one batched estimator call of 2B pairs."""
        flows = self.estimator.flows(np.concatenate([frames0, frames1]), np.concatenate([frames1, frames0]))
        return flows[: len(frames0)], flows[len(frames0) :]

    def _target_pairs(self, records, skipped: list) -> Iterator[tuple]:
        """(record, frame0, frame1, flow_01, flow_10, meta) of each good pair, in record order; flows (2, H, W)
        estimated `batch_size` pairs at a time."""
        batch = self.config.batch_size
        for start in range(0, len(records), batch):
            pairs = [p for p in (self._guarded(self._pair, r, skipped) for r in records[start : start + batch]) if p]
            if not pairs:
                continue
            flows_01, flows_10 = self.flows_both_ways(np.stack([p[1] for p in pairs]), np.stack([p[2] for p in pairs]))
            for (record, frame0, frame1, native_wh), flow_01, flow_10 in zip(pairs, flows_01, flows_10):
                meta = {
                    "key": record.key,
                    "city": record.city,
                    "seq": record.seq,
                    "frame0": record.frame - 1,
                    "frame1": record.frame,
                    "source_paths": [record.rel0, record.rel1],
                    "source_size_wh": native_wh,
                    **self.flow_meta,
                }
                yield record, frame0, frame1, flow_01, flow_10, meta

    def _target_samples(self, records, skipped: list, counted: list) -> Iterator[dict]:
        """The shard's samples: one per pair (layout 2), or runs of pairs that share a frame (layout 3, the next
        pair's I0 is this pair's I1 file); `counted` gets one entry per pair written."""
        frames = self.config.frames
        if self.config.layout != RUN_LAYOUT:
            for record, frame0, frame1, flow_01, flow_10, meta in self._target_pairs(records, skipped):
                counted.append(record.key)
                yield encode_target_sample(record.key, frame0, frame1, flow_01, flow_10, meta, frames)
            return
        run, last_path = None, None
        for record, frame0, frame1, flow_01, flow_10, meta in self._target_pairs(records, skipped):
            if run is not None and record.path0 != last_path:
                yield run.sample()
                run = None
            if run is None:
                run = RunEncoder(frame0, frames)
            run.add(record.key, frame1, flow_01, flow_10, meta)
            counted.append(record.key)
            last_path = record.path1
        if run is not None:
            yield run.sample()

    def _source_sample(self, record) -> dict:
        """One labelled image and its protocol label, both resized to the store size; a bad file -> BadSample."""
        protocol = get_protocol(self.config.protocol)
        image = self._read(record.key, record.image_path)
        try:
            label = read_source_label(self.config.src, record.label_path, protocol)
        except InputError as exc:
            raise BadSample(record.key, record.rel_label, str(exc)) from None
        if label.shape != image.shape[:2]:
            raise BadSample(
                record.key,
                record.rel_label,
                f"{record.label_path}: label of {label.shape[1]}x"
                f"{label.shape[0]} pixels, image {record.image_path} of {image.shape[1]}x{image.shape[0]}",
            )
        meta = {
            "key": record.key,
            "source": self.config.src,
            "protocol": protocol.name,
            "source_paths": {"image": record.rel_image, "label": record.rel_label},
            "source_size_wh": [image.shape[1], image.shape[0]],
        }
        size_wh = self.config.size_wh
        return encode_source_sample(
            record.key, resize_rgb(image, size_wh), resize_label(label, size_wh), meta, self.config.frames
        )

    def shard(self, task: ShardTask) -> dict:
        """Write shard `task.name` into the store folder; -> its manifest entry (with `skipped` samples)."""
        skipped: list = []
        if self.config.kind == TARGET_KIND:
            pairs: list = []
            info = write_shard(self.config.store_dir / task.name, self._target_samples(task.records, skipped, pairs))
            return {**info, "pairs": len(pairs), "skipped": skipped}
        made = (self._guarded(self._source_sample, r, skipped) for r in task.records)
        info = write_shard(self.config.store_dir / task.name, (s for s in made if s is not None))
        return {**info, "skipped": skipped}

    def _val_item(self, record: AnnotatedFrame) -> dict:
        """The TC clip around one annotated frame (frames and forward flows) and its label under every protocol."""
        numbers = [number for number, _ in record.snippet]
        annotated = numbers.index(record.frame)
        start, stop = tc_clip_bounds(len(numbers), annotated, self.config.tc_window)
        paths = [path for _, path in record.snippet[start:stop]]
        frames = [self._read(record.key, paths[0])]
        for before, path in zip(paths, paths[1:]):
            frames.append(self._read(record.key, path, previous=(before, frames[-1])))
        native = frames[0]
        clip = np.stack([resize_rgb(f, self.config.size_wh) for f in frames])
        step, last = self.config.batch_size, len(clip) - 1  # flows F(t -> t+1) for t = 0 .. T-2, `step` at a time
        flows = [
            self.estimator.flows(clip[t : min(t + step, last)], clip[t + 1 : min(t + step, last) + 1])
            for t in range(0, last, step)
        ]
        height, width = clip.shape[1:3]
        clip_flows = np.concatenate(flows) if flows else np.zeros((0, 2, height, width), np.float32)
        try:
            labels = {name: read_label(record.label_path, get_protocol(name)) for name in protocol_names()}
            label_h, label_w = next(iter(labels.values())).shape  # every protocol maps the same label file
        except InputError as exc:
            raise BadSample(record.key, self._rel(record.label_path), str(exc)) from None
        meta = {
            "key": record.key,
            "city": record.city,
            "seq": record.seq,
            "frame": record.frame,
            "source_paths": {"clip": [self._rel(p) for p in paths], "label": self._rel(record.label_path)},
            "source_size_wh": [native.shape[1], native.shape[0]],
            "label_size_wh": [label_w, label_h],
            **self.flow_meta,
        }
        return encode_val_item(
            record.key, clip, clip_flows, labels, numbers[start:stop], annotated - start, meta, self.config.frames
        )

    def val_item(self, record: AnnotatedFrame) -> dict:
        """One encoded val item, or {"skipped": [entry]} when it is bad and --on-error skip."""
        skipped: list = []
        item = self._guarded(self._val_item, record, skipped)
        return item if item is not None else {"skipped": skipped}
