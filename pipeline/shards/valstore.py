"""The Cityscapes-val store for mIoU and TC: one HDF5 file, random access by annotated-frame key.

`stores/cityscapes_val/val.h5` holds, per annotated frame `<city>_<seq>_<frame>` (group `samples/<key>`):
- `clip`: its TC clip, T consecutive frames at the input size, each a lossless RGB PNG (variable-length bytes);
  the annotated frame is `clip[annotated_index]`, so it is stored once;
- `clip_flows`: the T-1 forward flows F(t -> t+1) on frame t's grid, in pixels of the input size, each encoded with
  the shard flow codec (`pipeline.flow.codec`) and read back as (T-1, 2, H, W);
- `labels/<protocol>`: the gtFine label at its native size in that protocol's train ids (255 = ignore), gzip;
- attributes `frames` (frame numbers of the clip), `annotated_index`, `meta` (JSON).
The manifest next to it (`manifest.json`) records the config, the sample count and the file's sha256.

Reading checks what the file declares before it allocates: each dataset's shape and dtype (at most the TC window's
frames per clip, one flow fewer, labels of uint8 at most MAX_SIDE_PX a side), each frame's PNG header and each flow's
codec header against the store's size (the manifest's `size_wh`, else the annotated frame's own, bounded), so a
hostile val.h5 is one InputError line naming the file and the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from pipeline.atomic import atomic_path
from pipeline.errors import InputError
from pipeline.flow.codec import FLOW_CODEC, decode_flow, encode_flow
from pipeline.limits import MAX_SIDE_PX
from pipeline.shards.remote import is_remote
from pipeline.shards.samples import JSON_MAX_BYTES, png_bytes, png_pixels
from pipeline.shards.store import MANIFEST_NAME, StoreInfo, open_store

VAL_FILE = "val.h5"
VAL_FORMAT = "i2vda-val/1"
SAMPLES_GROUP = "samples"
LABEL_GZIP_LEVEL = 4  # labels are piecewise constant: gzip shrinks them to a few percent at any level
_BYTES = h5py.vlen_dtype(np.uint8)  # one encoded PNG or flow per element
MAX_CLIP_FRAMES = 64  # frames of a TC clip when the manifest records no tc_window (a Cityscapes snippet has 30)


def tc_clip_bounds(snippet_len: int, annotated_index: int, tc_window: int) -> tuple[int, int]:
    """[start, stop) of the TC clip in a snippet: the `tc_window` frames ending at the annotated frame, or the first
    `tc_window` frames when fewer precede it; the whole snippet when it is shorter (30 = a whole Cityscapes snippet)."""
    if tc_window < 1:
        raise InputError(f"--tc-window: expected at least 1 frame, got {tc_window}")
    if not 0 <= annotated_index < snippet_len:
        raise ValueError(f"annotated index {annotated_index} outside a snippet of {snippet_len} frames")
    length = min(tc_window, snippet_len)
    start = max(annotated_index - length + 1, 0)
    return start, start + length


def encode_val_item(
    key: str,
    clip: np.ndarray,
    clip_flows: np.ndarray,
    labels: Mapping[str, np.ndarray],
    frames,
    annotated_index: int,
    meta: Mapping,
    frame_png: str = "stored",
) -> dict:
    """One annotated frame, encoded for the writer: clip (T, H, W, 3) uint8 RGB, clip_flows (T-1, 2, H, W) pixels."""
    if clip.ndim != 4 or clip_flows.shape != (len(clip) - 1, 2, *clip.shape[1:3]) or len(frames) != len(clip):
        raise ValueError(f"{key}: clip {clip.shape}, flows {clip_flows.shape} and {len(frames)} frames disagree")
    return {
        "key": key,
        "clip": [np.frombuffer(png_bytes(frame, frame_png), np.uint8) for frame in clip],
        "clip_flows": [np.frombuffer(encode_flow(flow), np.uint8) for flow in clip_flows],
        "labels": {name: np.asarray(label, np.uint8) for name, label in labels.items()},
        "frames": [int(f) for f in frames],
        "annotated_index": int(annotated_index),
        "meta": {**meta, "codec": FLOW_CODEC, "size_wh": [clip.shape[2], clip.shape[1]]},
    }


class ValWriter:
    """Writes val.h5 under a temporary name; `commit()` renames it into place, an exception removes it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._atomic = atomic_path(self.path)  # entered here, left by commit() or abort()
        self.partial = self._atomic.__enter__()
        self._file = h5py.File(self.partial, "w", track_order=True)
        self._file.attrs["format"] = VAL_FORMAT
        self._samples = self._file.create_group(SAMPLES_GROUP, track_order=True)
        self.count = 0

    def add(self, item: Mapping) -> None:
        """Append one encoded item (see `encode_val_item`)."""
        group = self._samples.create_group(item["key"])
        for name in ("clip", "clip_flows"):
            data = group.create_dataset(name, (len(item[name]),), dtype=_BYTES)
            for i, blob in enumerate(item[name]):
                data[i] = blob
        labels = group.create_group("labels")
        for protocol, label in sorted(item["labels"].items()):
            labels.create_dataset(protocol, data=label, compression="gzip", compression_opts=LABEL_GZIP_LEVEL)
        group.attrs["frames"] = np.asarray(item["frames"], np.int64)
        group.attrs["annotated_index"] = item["annotated_index"]
        group.attrs["meta"] = json.dumps(item["meta"], sort_keys=True)
        self.count += 1

    def commit(self) -> Path:
        """Close the file and rename it to its final name."""
        self._file.close()
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        self._file.close()
        aborted = RuntimeError(f"{self.path}: writing aborted")
        self._atomic.__exit__(RuntimeError, aborted, None)  # removes the temporary file

    def __enter__(self) -> ValWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class ValStore:
    """Read access to a val store folder (or its val.h5): keys, labels per protocol, TC clips and their flows."""

    def __init__(self, path: str | os.PathLike):
        if is_remote(str(path)):  # HDF5 reads at random offsets: a stream does not serve it
            raise InputError(
                f"{path}: the val store is one HDF5 file read at random places, not a stream; copy its folder "
                f"(val.h5 and manifest.json) to a local disk and pass that"
            )
        path = Path(path)
        folder, self.path = (path, path / VAL_FILE) if path.is_dir() else (path.parent, path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no val store here; run `i2vda-prep val` first")
        self.info: StoreInfo | None = open_store(folder) if (folder / MANIFEST_NAME).is_file() else None
        self.size_hw = None if self.info is None else self.info.size_hw  # what every frame and flow must declare
        tc_window = None if self.info is None else self.info.manifest.get("config", {}).get("tc_window")
        self.max_clip = tc_window or MAX_CLIP_FRAMES
        listed = [s for s in self.info.shards if s.path.name == self.path.name] if self.info else []
        if listed and listed[0].bytes and self.path.stat().st_size != listed[0].bytes:
            raise InputError(
                f"{self.path}: {self.path.stat().st_size} bytes, the manifest says {listed[0].bytes}; "
                f"the val store is damaged, rebuild it with `i2vda-prep val`"
            )
        self._file, self._pid = None, None
        samples = self._h5()[SAMPLES_GROUP] if SAMPLES_GROUP in self._h5() else None
        if self._h5().attrs.get("format") != VAL_FORMAT or samples is None:
            raise InputError(f"{self.path}: not an i2vda val store (expected format {VAL_FORMAT})")
        self._keys = sorted(samples)

    def _h5(self) -> h5py.File:
        """The open file; reopened in a new process (HDF5 handles must not cross a fork)."""
        if self._file is None or self._pid != os.getpid():
            try:
                self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
            except OSError as exc:  # h5py's message names no file
                reason = " ".join(str(exc).split())
                raise InputError(
                    f"{self.path}: not a readable HDF5 val store ({reason}); rebuild it with `i2vda-prep val`"
                ) from None
        return self._file

    def _group(self, key: str) -> h5py.Group:
        if key not in self._h5()[SAMPLES_GROUP]:
            raise KeyError(f"{key} is not an annotated frame of {self.path}")
        group = self._h5()[SAMPLES_GROUP][key]
        where = f"{self.path}:{key}"
        if not isinstance(group, h5py.Group):
            raise InputError(f"{where}: not an annotated-frame group; rebuild the val store with `i2vda-prep val`")
        clip = self._blobs(group, "clip", where, range(1, self.max_clip + 1))
        self._blobs(group, "clip_flows", where, (len(clip) - 1,))
        labels = group.get("labels")
        if not isinstance(labels, h5py.Group):
            raise InputError(f"{where}: no labels group; rebuild the val store with `i2vda-prep val`")
        for protocol, label in labels.items():
            ok = isinstance(label, h5py.Dataset) and label.dtype == np.uint8 and label.ndim == 2
            if not ok or not all(1 <= side <= MAX_SIDE_PX for side in label.shape):
                shape = getattr(label, "shape", None)
                raise InputError(
                    f"{where}: labels/{protocol} is {shape} {getattr(label, 'dtype', type(label).__name__)}, expected "
                    f"(H, W) uint8 of at most {MAX_SIDE_PX} a side; refused before reading it"
                )
        index, frames = group.attrs.get("annotated_index"), group.attrs.get("frames")
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(clip):
            raise InputError(f"{where}: annotated_index {index!r} is not a frame of its {len(clip)}-frame clip")
        if frames is None or np.shape(frames) != (len(clip),):
            raise InputError(f"{where}: its frame numbers do not match its {len(clip)}-frame clip")
        return group

    def _blobs(self, group: h5py.Group, name: str, where: str, lengths) -> h5py.Dataset:
        """Dataset `name` of encoded blobs, checked to be 1-D variable-length bytes with a length in `lengths`."""
        data = group.get(name)
        ok = isinstance(data, h5py.Dataset) and data.ndim == 1 and h5py.check_vlen_dtype(data.dtype) == np.uint8
        if not ok or len(data) not in lengths:
            shape = getattr(data, "shape", None)
            raise InputError(
                f"{where}: {name} is {shape} {getattr(data, 'dtype', type(data).__name__)}, expected a list of "
                f"encoded frames as long as its TC clip (at most {self.max_clip}); refused before reading it"
            )
        return data

    def _frame_size_hw(self, group: h5py.Group, where: str) -> tuple[int, int]:
        """The size every frame and flow of this sample must have: the store's, else the annotated frame's."""
        if self.size_hw is not None:
            return self.size_hw
        return png_pixels(group["clip"][int(group.attrs["annotated_index"])], where).shape[:2]

    def keys(self) -> list[str]:
        """Annotated-frame keys `<city>_<seq>_<frame>`, sorted."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def protocols(self) -> list[str]:
        """Protocols whose labels the store holds."""
        return sorted(self._group(self._keys[0])["labels"]) if self._keys else []

    def label(self, key: str, protocol: str) -> np.ndarray:
        """(H_label, W_label) uint8 train ids of the annotated frame under `protocol` (native label size)."""
        labels = self._group(key)["labels"]  # shapes and dtypes checked
        if protocol not in labels:
            raise InputError(f"{self.path}: no labels for protocol {protocol!r}; it holds {', '.join(sorted(labels))}")
        return labels[protocol][()]

    def image(self, key: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB annotated frame at the input size."""
        group = self._group(key)
        where = f"{self.path}:{key}"
        return png_pixels(group["clip"][int(group.attrs["annotated_index"])], where, self.size_hw)

    def sample(self, key: str) -> dict:
        """Everything about one annotated frame: image, labels {protocol: array}, clip (T, H, W, 3) uint8,
        clip_flows (T-1, 2, H, W) float32 F(t -> t+1) in pixels, frames, annotated_index, meta."""
        group = self._group(key)
        where = f"{self.path}:{key}"
        size_hw = self._frame_size_hw(group, where)
        clip = np.stack([png_pixels(png, where, size_hw) for png in group["clip"][()]])
        height, width = clip.shape[1:3]
        flows = [decode_flow(blob.tobytes(), where, size_hw) for blob in group["clip_flows"][()]]
        clip_flows = np.stack(flows) if flows else np.zeros((0, 2, height, width), np.float32)
        index = int(group.attrs["annotated_index"])
        meta = group.attrs.get("meta", "{}")
        if not isinstance(meta, str) or len(meta) > JSON_MAX_BYTES:
            raise InputError(f"{where}: its meta attribute is not a JSON text of at most {JSON_MAX_BYTES} bytes")
        return {
            "key": key,
            "image": clip[index],
            "labels": {name: data[()] for name, data in group["labels"].items()},
            "clip": clip,
            "clip_flows": clip_flows,
            "frames": [int(f) for f in group.attrs["frames"]],
            "annotated_index": index,
            "meta": _meta(meta, where),
        }

    def close(self) -> None:
        """Close the HDF5 file (reopened on next use)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> ValStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _meta(text: str, where: str) -> dict:
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"{where}: its meta attribute is not valid JSON") from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}: its meta attribute is not a JSON object")
    return meta
