"""Layer 1 of the shard format: one sample's WebDataset members, encoded and decoded (no tar, no Ray).

A sample is `{"__key__": key, "<field>.<ext>": bytes}`: PNG frames and labels, codec flows, JSON meta. See
stores/README.md for the members of each store. Decoding checks what each member's header declares before it decodes
(`pipeline.limits`): a PNG's IHDR and a flow's header must give the store's size (`size_hw`, when the reader knows
it), a PNG must be 8-bit RGB or grayscale; `member_byte_limit` is how many bytes a member of a store of that size may
take at most, which the tar reader checks before it reads one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import cv2
import numpy as np

from pipeline.errors import InputError, echo_native, native_stderr
from pipeline.flow.codec import FLOW_CODEC, FLOW_EXT, FLOW_EXTS, decode_flow, encode_flow
from pipeline.limits import MAX_SIDE_PX, PNG_GRAY, PNG_RGB, check_declared_size, read_png_header

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

# The bytes a member may take, checked from its tar header before it is read: the raw bytes of a picture of the
# store's size (3 per pixel and a filter byte per row for an RGB PNG, the largest PNG a store holds; 4 per pixel for a
# flow: two int16 codes), plus 1/64 of that (a stored PNG's deflate blocks and chunks add 0.2%, zstd's worst case
# 0.4%) and MEMBER_SLACK_BYTES for headers. JSON members (meta.json, a few hundred bytes) take at most JSON_MAX_BYTES.
PICTURE_BYTES_PER_PIXEL = {"png": 3, FLOW_EXT: 4, "png16": 4}
MEMBER_SLACK_BYTES = 64 * 1024
JSON_MAX_BYTES = 1 << 20
MEMBER_TYPES = (*PICTURE_BYTES_PER_PIXEL, "json")  # the member extensions a store holds
MAX_SAMPLE_MEMBERS = 16  # members of one sample (a target pair has 5): bounds what one sample can hold in memory


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


def member_byte_limit(name: str, size_hw: tuple[int, int] | None = None) -> int | None:
    """The most bytes member `name` (`<key>.<field>.<ext>` or `<field>.<ext>`) of a store of `size_hw` (H, W) may
    take (without a size: of MAX_SIDE_PX a side); None for an extension no store holds."""
    ext = name.rsplit(".", 1)[-1].lower()
    if ext == "json":
        return JSON_MAX_BYTES
    if ext not in PICTURE_BYTES_PER_PIXEL:
        return None
    height, width = size_hw if size_hw is not None else (MAX_SIDE_PX, MAX_SIDE_PX)
    raw = PICTURE_BYTES_PER_PIXEL[ext] * height * width + 2 * height  # + a PNG row's filter byte (16-bit: two)
    return raw + raw // 64 + MEMBER_SLACK_BYTES


def png_pixels(data, where: str, size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8 RGB or (H, W) uint8; bad bytes raise InputError naming `where`. Its IHDR must
    declare 8-bit RGB or grayscale of `size_hw` (H, W) when given (else at most MAX_SIDE_PX a side): checked before a
    byte is decompressed."""
    header = read_png_header(data, where)
    if header.bit_depth != 8 or header.colour_type not in (PNG_RGB, PNG_GRAY):
        raise InputError(
            f"{where}: a PNG of bit depth {header.bit_depth}, colour type {header.colour_type}; a store holds 8-bit "
            f"RGB (type {PNG_RGB}) or grayscale (type {PNG_GRAY}) PNGs"
        )
    check_declared_size(where, "PNG header", header.width, header.height, size_hw)
    with native_stderr() as said:  # libpng prints its own "libpng error: ..." line: it goes into ours
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    channels = 3 if header.colour_type == PNG_RGB else None
    expected = (header.height, header.width) + ((channels,) if channels else ())
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape != expected:
        raise InputError(f"{where}: not a readable PNG" + (f" ({said[-1]})" if said else ""))
    echo_native(said)
    return pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def json_bytes(obj: Mapping) -> bytes:
    """Deterministic JSON (sorted keys, no spaces), so equal content gives equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def check_key(key: str) -> str:
    """`key`, if WebDataset can group members by it; else ValueError."""
    if not key or "." in key or "/" in key:
        raise ValueError(f"sample key {key!r} must be non-empty without '.' or '/' (WebDataset splits at the dot)")
    return key


def target_meta(meta: Mapping, size_hw: tuple[int, int]) -> dict:
    """A target pair's `meta.json` content: the builder's fields, the flow codec and the stored size (W, H)."""
    return {**meta, "codec": FLOW_CODEC, "size_wh": [size_hw[1], size_hw[0]]}


def encode_target_sample(
    key: str,
    frame0: np.ndarray,
    frame1: np.ndarray,
    flow_01: np.ndarray,
    flow_10: np.ndarray,
    meta: Mapping,
    frames: str = "stored",
) -> dict:
    """A target pair as WebDataset members: frames (H, W, 3) uint8 RGB, flows (2, H, W) float32 pixels (x, y)."""
    size_hw = frame0.shape[:2]
    if frame1.shape != frame0.shape or flow_01.shape != (2, *size_hw) or flow_10.shape != (2, *size_hw):
        raise ValueError(
            f"{key}: frames {frame0.shape} {frame1.shape} and flows {flow_01.shape} {flow_10.shape} differ"
        )
    meta = target_meta(meta, size_hw)
    return {
        "__key__": check_key(key),
        "frame0.png": png_bytes(frame0, frames),
        "frame1.png": png_bytes(frame1, frames),
        f"flow01.{FLOW_EXT}": encode_flow(np.asarray(flow_01, np.float32)),
        f"flow10.{FLOW_EXT}": encode_flow(np.asarray(flow_10, np.float32)),
        "meta.json": json_bytes(meta),
    }


def encode_source_sample(key: str, image: np.ndarray, label: np.ndarray, meta: Mapping, frames: str = "stored") -> dict:
    """A source sample as WebDataset members: image (H, W, 3) uint8 RGB, label (H, W) uint8 train ids."""
    if label.shape != image.shape[:2]:
        raise ValueError(f"{key}: image {image.shape} and label {label.shape} differ in size")
    meta = {**meta, "size_wh": [image.shape[1], image.shape[0]]}
    return {
        "__key__": check_key(key),
        "image.png": png_bytes(image, frames),
        "label.png": png_bytes(label),
        "meta.json": json_bytes(meta),
    }


def decode_sample(sample: Mapping, size_hw: tuple[int, int] | None = None) -> dict:
    """Raw WebDataset sample {"__key__", "frame0.png": bytes, ...} -> {"__key__", "frame0": array, "meta": dict}: each
    member decoded under its name on disk (the data contract's `flow01`, `flow10`: (2, H, W) float32 pixels).

    `size_hw` (H, W): the store's size, which every picture's header must declare (checked before decoding)."""
    key = sample.get("__key__", "?")
    out = {}
    for name, value in sample.items():
        if name.startswith("__"):
            out[name] = value
            continue
        field, _, ext = name.partition(".")
        where = f"{sample.get('__url__', 'sample')}: {key}.{name}"
        if ext in FLOW_EXTS:
            out[field] = decode_flow(value, where, size_hw)
        elif ext == "png":
            out[field] = png_pixels(value, where, size_hw)
        elif ext == "json":
            out[field] = _json_member(value, where)
        else:
            raise InputError(f"{where}: unknown member type .{ext}")
    return out


def _json_member(value: bytes, where: str) -> dict:
    """A JSON object member (meta.json), at most JSON_MAX_BYTES; deep nesting is refused, not a RecursionError."""
    if len(value) > JSON_MAX_BYTES:
        raise InputError(f"{where}: {len(value)} bytes of JSON, more than the {JSON_MAX_BYTES} a member may hold")
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        raise InputError(f"{where}: not valid JSON (or nested too deeply)") from None
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj
