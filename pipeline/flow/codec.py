"""The shard flow codec: a flow in pixels, (2, H, W) as every flow in memory, <-> the bytes of one WebDataset member
(`flow01.zflow`).

Format "zstd-dx16x64" (member extension `zflow`), chosen by measurement (`bench/bench_codec.py`, `bench/bench_read.py`;
tables in `docs/FLOW_CODEC.md`):

- a 16-byte little-endian header: magic `I2VF`, format version 1 (one byte), three reserved zero bytes, height H
  and width W (uint32 each);
- one zstd frame (content size and checksum included) holding 4*H*W bytes: the codes of u (x, right) and then v
  (y, down), each an int16 `round(64 * f)` per pixel in row-major order, predicted from the left neighbour (the
  first pixel of a row from 0; differences wrap modulo 2**16), zigzag-mapped (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...)
  and split into bytes: all low bytes of the 2*H*W values, then all high bytes.

Precision: steps of 1/64 px (error at most 1/128 px); range [-512, 511.984375] px. Smooth flow turns into small
differences whose high bytes are nearly all zero, which zstd packs tightly: a real DIS flow at 1024x512 takes 24.7% of
the bytes of DA-VSN's int16x10 `.npy` (bound: 40%) and decodes in about 5 ms of one core, half the time of the 16-bit
PNG layout we used first (`png16x64`, still read; see below), and encodes in 0.2-0.6x its time.

The extension "zflow" matches none of webdataset's auto-decoders, so its bytes pass through untouched and the shard
reader calls `decode_flow`. Flows beyond the range are clipped by default (a displacement of 512 px at the 1024x512
training size is an estimator failure, not motion); `on_overflow="raise"` raises InputError instead. Non-finite flows
always raise. Corrupt or truncated bytes raise InputError naming the member (the zstd checksum covers the payload).
The size a header declares (W x H, and the zstd frame's content size) is checked before anything is decompressed:
against the store's size when the reader gives it, else against `pipeline.limits.MAX_SIDE_PX`.

Stores of shard layout v1 hold `png16x64` flows (`flow01.png16`: one 16-bit grayscale PNG of size (2H, W), u rows
above v rows, `round(64 * f) + 2**15`); `decode_flow` recognises them by the PNG signature and reads them too.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import zstandard

from pipeline.errors import InputError, echo_native, native_stderr
from pipeline.limits import PNG_GRAY, PNG_SIGNATURE, check_declared_size, read_png_header

FLOW_CODEC = "zstd-dx16x64"
FLOW_EXT = "zflow"
LEGACY_CODEC, LEGACY_EXT = "png16x64", "png16"  # shard layout v1 stores: decoded, no longer written
FLOW_EXTS = (FLOW_EXT, LEGACY_EXT)

FLOW_SCALE = 64  # quantisation steps per pixel: the 1/64 px precision the design requires (KITTI uses the same)
CODE_MIN, CODE_MAX = -(2**15), 2**15 - 1  # int16 codes
FLOW_MIN_PX = CODE_MIN / FLOW_SCALE  # -512.0
FLOW_MAX_PX = CODE_MAX / FLOW_SCALE  # 511.984375
ZSTD_LEVEL = 3  # zstd's default: within 1.1 points of level 9's size at 0.4-0.8x its encode time (docs/FLOW_CODEC.md)
ON_OVERFLOW = ("clip", "raise")

_MAGIC, _VERSION = b"I2VF", 1
_HEADER = struct.Struct("<4sB3xII")  # 16 bytes: magic, version, 3 reserved, H, W
_LEGACY_OFFSET = 2**15  # png16x64 stores code + 2**15 as an unsigned 16-bit sample


def flow_codes(flow: np.ndarray, on_overflow: str = "clip") -> np.ndarray:
    """(2, H, W) float flow in pixels -> (2, H, W) int16 codes round(64 * f), validated and clipped to the range."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[0] != 2 or flow.shape[1] == 0 or flow.shape[2] == 0:
        raise ValueError(f"flow must be (2, H, W) with H, W > 0, got {flow.shape}")
    if on_overflow not in ON_OVERFLOW:
        raise ValueError(f"on_overflow must be one of {ON_OVERFLOW}, got {on_overflow!r}")
    if not np.isfinite(flow).all():
        raise InputError(f"flow of size {flow.shape[2]}x{flow.shape[1]} has non-finite values; cannot encode it")
    codes = np.rint(flow.astype(np.float64) * FLOW_SCALE)
    if on_overflow == "raise":
        beyond = (codes < CODE_MIN) | (codes > CODE_MAX)
        if beyond.any():
            raise InputError(
                f"flow reaches {np.abs(flow).max():.1f} px at {int(beyond.sum())} values, beyond the "
                f"{FLOW_CODEC} range [{FLOW_MIN_PX}, {FLOW_MAX_PX}] px"
            )
    return np.clip(codes, CODE_MIN, CODE_MAX).astype(np.int16)


def encode_flow(flow: np.ndarray, on_overflow: str = "clip", level: int = ZSTD_LEVEL) -> bytes:
    """Encode a (2, H, W) float flow in pixels as zstd-dx16x64 bytes; see the module docstring for the layout."""
    planes = np.ascontiguousarray(flow_codes(flow, on_overflow))  # (2, H, W): the u plane, then the v plane
    delta = planes.copy()
    np.subtract(planes[:, :, 1:], planes[:, :, :-1], out=delta[:, :, 1:])  # int16 arithmetic wraps: exact mod 2**16
    zigzag = ((delta << 1) ^ (delta >> 15)).view(np.uint16).ravel()
    pairs = zigzag.astype("<u2", copy=False).view(np.uint8).reshape(-1, 2)  # (low, high) byte of each value
    payload = np.concatenate((pairs[:, 0], pairs[:, 1]))
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    height, width = planes.shape[1:]
    return _HEADER.pack(_MAGIC, _VERSION, height, width) + compressor.compress(payload.tobytes())


def decode_flow(data: bytes, name: str = "flow member", size_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode zstd-dx16x64 (or legacy png16x64) bytes into a (2, H, W) float32 flow in pixels; bad bytes raise
    InputError naming `name`. The size the header declares must be `size_hw` (H, W) when given (the store's), else at
    most MAX_SIDE_PX a side, and the zstd frame must declare exactly the bytes of that size: both are checked before
    anything is decompressed (`pipeline.limits`)."""
    data = bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data
    if bytes(data[: len(PNG_SIGNATURE)]) == PNG_SIGNATURE:
        return _decode_legacy_png16(data, name, size_hw)
    if len(data) < _HEADER.size or bytes(data[:4]) != _MAGIC:
        raise InputError(f"{name}: not a {FLOW_CODEC} flow (no {_MAGIC.decode()} header in {len(data)} bytes)")
    _, version, height, width = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise InputError(f"{name}: unsupported {FLOW_CODEC} header (version {version}, size {width}x{height})")
    check_declared_size(name, f"{FLOW_CODEC} header", width, height, size_hw)
    count = 2 * height * width  # int16 codes: u and v per pixel
    payload = memoryview(data)[_HEADER.size :]
    try:
        declared = zstandard.frame_content_size(payload)
        if declared != 2 * count:  # -1: a frame that does not say (our writer always does)
            raise InputError(
                f"{name}: its zstd frame declares {declared} bytes, a {width}x{height} flow has {2 * count}; "
                f"refused before decompressing"
            )
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=2 * count)
    except zstandard.ZstdError as exc:
        raise InputError(f"{name}: corrupt or truncated {FLOW_CODEC} flow ({exc})") from None
    if len(raw) != 2 * count:
        raise InputError(f"{name}: {FLOW_CODEC} payload of {len(raw)} bytes, expected {2 * count} for {width}x{height}")
    split = np.frombuffer(raw, np.uint8)
    zigzag = np.empty(count, np.dtype("<u2"))
    interleaved = zigzag.view(np.uint8)
    interleaved[0::2], interleaved[1::2] = split[:count], split[count:]
    zigzag = zigzag.astype(np.uint16, copy=False)
    delta = (zigzag >> 1).view(np.int16) ^ -(zigzag & 1).view(np.int16)
    planes = delta.reshape(2, height, width)
    np.cumsum(planes, axis=2, dtype=np.int16, out=planes)  # undo the left prediction (wrapping, like the encoder)
    flow = planes.astype(np.float32)
    flow *= 1.0 / FLOW_SCALE  # exact: 1/64 is a power of two
    return flow


def _decode_legacy_png16(data, name: str, size_hw: tuple[int, int] | None) -> np.ndarray:
    header = read_png_header(data, name)
    if header.bit_depth != 16 or header.colour_type != PNG_GRAY or header.height % 2:
        raise InputError(
            f"{name}: expected a 16-bit grayscale PNG of even height ({LEGACY_CODEC}), its header declares "
            f"{header.bit_depth}-bit colour type {header.colour_type}, {header.width}x{header.height}"
        )
    check_declared_size(name, f"{LEGACY_CODEC} PNG header", header.width, header.height // 2, size_hw)
    with native_stderr() as said:  # libpng's own error line goes into ours
        planes = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if planes is None:
        reason = f"; {said[-1]}" if said else ""
        raise InputError(f"{name}: corrupt or truncated {LEGACY_CODEC} PNG ({len(data)} bytes{reason})")
    echo_native(said)
    if planes.dtype != np.uint16 or planes.ndim != 2 or planes.shape != (header.height, header.width):
        raise InputError(
            f"{name}: expected a 16-bit grayscale PNG of even height ({LEGACY_CODEC}), got {planes.dtype} "
            f"{planes.shape}"
        )
    flow = np.subtract(planes.reshape(2, planes.shape[0] // 2, planes.shape[1]), _LEGACY_OFFSET, dtype=np.float32)
    flow *= 1.0 / FLOW_SCALE
    return flow


def encode_legacy_png16(flow: np.ndarray, on_overflow: str = "clip") -> bytes:
    """The shard layout v1 flow codec (png16x64), for reading tests and the codec benchmark; stores no longer use it."""
    codes = flow_codes(flow, on_overflow).astype(np.int32) + _LEGACY_OFFSET
    planes = codes.reshape(-1, codes.shape[2]).astype(np.uint16)  # (2H, W): u on top, v below
    params = [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FAST_FILTERS, cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, png = cv2.imencode(".png", planes, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {planes.shape} uint16 PNG")
    return png.tobytes()
