"""The shard format: one sample per WebDataset key, shards written atomically, a manifest per store.

Layer 1 (sample) encodes/decodes one sample's members; layer 2 (shard) writes a tar under a temporary name and
renames it, and reads stores back. Both are plain Python, usable without Ray. See stores/README.md for the layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import cv2
import numpy as np

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.flow.codec import FLOW_CODEC, FLOW_EXT, FLOW_EXTS, decode_flow, encode_flow

MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".tar"
PARTIAL_SUFFIX = ".partial"  # a shard or manifest being written; never matches the shard glob
MANIFEST_FORMAT = "i2vda-store/1"  # bump when the manifest's meaning changes
# RGB PNGs (frames, source images) are "stored" by default: no zlib compression and no row filters, so a 1024x512
# frame decodes in about 1.5 ms instead of 9-15 ms for any zlib level or filter, at 1.8-2x the bytes
# (`bench/bench_read.py`, table in docs/PREP.md); reading a training sample is then several times faster than
# estimating its flows. "compressed" (`--frames compressed`) trades that speed for disk: zlib level 1, run-length
# strategy. Labels (long runs of one id) are always compressed that way: a few percent of the stored size.
FRAME_MODES = ("stored", "compressed")
FRAME_PNG_PARAMS = {
    "stored": [cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE],
    "compressed": [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE],
}
LABEL_PNG_PARAMS = FRAME_PNG_PARAMS["compressed"]
# Tar headers carry no time, owner or permissions of the machine that wrote them, so reruns are byte-identical.
TAR_MTIME = 0
TAR_MODE = 0o644
# WebDataset's grouping rule: the key is the member name up to the first dot of its last path component.
_KEY_FIELD = re.compile(r"^((?:.*/|)[^./]+)\.([^/]+)$")
TARGET_KIND = "target_pairs"
SOURCE_KIND = "source"
VAL_KIND = "val"


# ---- layer 1: one sample -------------------------------------------------------------------------------------------


def png_bytes(image: np.ndarray, frames: str = "stored") -> bytes:
    """Lossless PNG of an (H, W, 3) uint8 RGB image (written the `frames` way, one of FRAME_MODES) or an (H, W) uint8
    label (always compressed)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if frames not in FRAME_MODES:
        raise ValueError(f"frames must be one of {FRAME_MODES}, got {frames!r}")
    if image.ndim == 2:
        ok, buf = cv2.imencode(".png", image, LABEL_PNG_PARAMS)
    else:  # OpenCV writes BGR
        ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), FRAME_PNG_PARAMS[frames])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def png_pixels(data, where: str) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8 RGB or (H, W) uint8; bad bytes raise InputError naming `where`."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise InputError(f"{where}: not a readable PNG")
    return pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def _json_bytes(obj: Mapping) -> bytes:
    """Deterministic JSON (sorted keys, no spaces), so equal content gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _check_key(key: str) -> str:
    if not key or "." in key or "/" in key:
        raise ValueError(f"sample key {key!r} must be non-empty without '.' or '/' (WebDataset splits at the dot)")
    return key


def encode_target_sample(key: str, frame0: np.ndarray, frame1: np.ndarray, flow01: np.ndarray, flow10: np.ndarray,
                         meta: Mapping, frames: str = "stored") -> dict:
    """A target pair as WebDataset members: frames (H, W, 3) uint8 RGB, flows (H, W, 2) float32 pixels (x, y)."""
    size_hw = frame0.shape[:2]
    if frame1.shape != frame0.shape or flow01.shape != (*size_hw, 2) or flow10.shape != (*size_hw, 2):
        raise ValueError(f"{key}: frames {frame0.shape} {frame1.shape} and flows {flow01.shape} {flow10.shape} differ")
    meta = {**meta, "codec": FLOW_CODEC, "size_wh": [size_hw[1], size_hw[0]]}
    return {
        "__key__": _check_key(key),
        "frame0.png": png_bytes(frame0, frames),
        "frame1.png": png_bytes(frame1, frames),
        f"flow01.{FLOW_EXT}": encode_flow(np.asarray(flow01, np.float32)),
        f"flow10.{FLOW_EXT}": encode_flow(np.asarray(flow10, np.float32)),
        "meta.json": _json_bytes(meta),
    }


def encode_source_sample(key: str, image: np.ndarray, label: np.ndarray, meta: Mapping, frames: str = "stored") -> dict:
    """A source sample as WebDataset members: image (H, W, 3) uint8 RGB, label (H, W) uint8 train ids."""
    if label.shape != image.shape[:2]:
        raise ValueError(f"{key}: image {image.shape} and label {label.shape} differ in size")
    meta = {**meta, "size_wh": [image.shape[1], image.shape[0]]}
    return {"__key__": _check_key(key), "image.png": png_bytes(image, frames), "label.png": png_bytes(label),
            "meta.json": _json_bytes(meta)}


def decode_sample(sample: Mapping) -> dict:
    """Raw WebDataset sample {"__key__", "frame0.png": bytes, ...} -> {"__key__", "frame0": array, "meta": dict}."""
    key = sample.get("__key__", "?")
    out = {}
    for name, value in sample.items():
        if name.startswith("__"):
            out[name] = value
            continue
        field, ext = name.split(".", 1)
        where = f"{sample.get('__url__', 'sample')}: {key}.{name}"
        if ext in FLOW_EXTS:
            out[field] = decode_flow(value, where)
        elif ext == "png":
            out[field] = png_pixels(value, where)
        elif ext == "json":
            try:
                out[field] = json.loads(value)
            except ValueError:
                raise InputError(f"{where}: not valid JSON") from None
        else:
            raise InputError(f"{where}: unknown member type .{ext}")
    return out


# ---- layer 2: shards and manifests ----------------------------------------------------------------------------------


def shard_name(store_name: str, index: int) -> str:
    """File name of shard `index` of a store: `<name>-000000.tar`."""
    return f"{store_name}-{index:06d}{SHARD_SUFFIX}"


def write_shard(path: str | os.PathLike, samples: Iterable[Mapping]) -> dict:
    """Write encoded samples to a tar at `path` atomically (temporary name, then rename); -> {name, samples, bytes,
    sha256}. On any error the temporary file is removed and nothing appears under `path`."""
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    count = 0
    try:
        with open(partial, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                for sample in samples:
                    key = _check_key(sample["__key__"])
                    for field in sorted(k for k in sample if not k.startswith("__")):
                        info = tarfile.TarInfo(f"{key}.{field}")
                        info.size, info.mtime, info.mode = len(sample[field]), TAR_MTIME, TAR_MODE
                        tar.addfile(info, io.BytesIO(sample[field]))
                    count += 1
            raw.flush()
            os.fsync(raw.fileno())
        info = {"name": path.name, "samples": count, "bytes": partial.stat().st_size, "sha256": file_sha256(partial)}
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return info


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(store_dir: str | os.PathLike, manifest: Mapping) -> dict:
    """Write `store_dir/manifest.json` atomically (sorted keys, fixed indent), adding format and tool version;
    -> what was written."""
    path = Path(store_dir) / MANIFEST_NAME
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    body = {"format": MANIFEST_FORMAT, "tool_version": __version__, **manifest}
    partial.write_text(json.dumps(body, sort_keys=True, indent=1) + "\n")
    os.replace(partial, path)
    return body


def read_manifest(store: str | os.PathLike) -> dict:
    """The manifest of a store folder (or the manifest.json path itself); a one-line InputError if absent or bad."""
    path = Path(store)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: no store manifest here; run `i2vda-prep` to build the store first")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a valid manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path}: not an i2vda store manifest (expected format {MANIFEST_FORMAT})")
    return manifest


def check_manifest(manifest: Mapping | str | os.PathLike, **expected) -> dict:
    """Refuse a store that is incomplete or does not match what the caller needs (one-line InputError).

    `expected` names manifest fields (top level, else under "config"): kind, protocol, size_wh (or size_hw),
    estimator, codec, ...; None means any."""
    where = "store manifest"
    if not isinstance(manifest, Mapping):
        where = str(manifest)
        manifest = read_manifest(manifest)
    if "size_hw" in expected:
        size_hw = expected.pop("size_hw")
        expected["size_wh"] = None if size_hw is None else (size_hw[1], size_hw[0])
    if not manifest.get("complete", False):
        raise InputError(f"{where}: the store {manifest.get('name')!r} is incomplete; rerun its i2vda-prep command")
    for field, want in expected.items():
        if want is None:
            continue
        have = manifest[field] if field in manifest else manifest.get("config", {}).get(field)
        if _as_json(have) != _as_json(want):
            raise InputError(f"{where}: store {manifest.get('name')!r} has {field}={have!r}, expected {want!r}")
    return dict(manifest)


def _as_json(value):
    """Tuples compare equal to the lists JSON turns them into."""
    return list(value) if isinstance(value, tuple) else value


def store_shards(store: str | os.PathLike) -> list[str]:
    """Shard paths of a store folder: those its manifest lists, else every `*.tar` in it, sorted."""
    store = Path(store)
    if (store / MANIFEST_NAME).is_file():
        return [str(store / s["name"]) for s in read_manifest(store)["shards"]]
    return sorted(str(p) for p in store.glob(f"*{SHARD_SUFFIX}"))


def _raw_samples(shard: str) -> Iterator[dict]:
    """Group a tar's members into raw samples the way WebDataset does (consecutive members sharing a key)."""
    sample: dict = {}
    try:
        with tarfile.open(shard, mode="r|") as tar:
            for member in tar:
                match = _KEY_FIELD.match(member.name) if member.isfile() else None
                if match is None:
                    continue
                key, field = match.groups()
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                sample.setdefault("__key__", key)
                sample["__url__"] = shard
                sample[field] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{shard}: unreadable or truncated shard ({exc})") from None
    if sample:
        yield sample


def read_samples(path: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[dict]:
    """Decoded samples of a store folder, one shard, or a list of shards, in shard order (see module docstring)."""
    if isinstance(path, (str, os.PathLike)):
        if not Path(path).exists():
            raise InputError(f"{path}: no such store or shard")
        shards = store_shards(path) if Path(path).is_dir() else [str(path)]
    else:
        shards = [str(p) for p in path]
    if not shards:
        raise InputError(f"{path}: no shards found")
    for shard in shards:
        if not Path(shard).is_file():
            raise InputError(f"{shard}: shard missing")
        for sample in _raw_samples(shard):
            yield decode_sample(sample)
