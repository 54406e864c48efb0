"""The shard flow codec: a flow in pixels <-> the bytes of one WebDataset member (`flow01.png16`).

Format "png16x64": one 16-bit grayscale PNG of size (2H, W); rows 0..H-1 hold u (x, right), rows H..2H-1 hold v
(y, down), each stored as round(64 * f) + 2**15. Precision: steps of 1/64 px (error at most 1/128 px); range
[-512, 511.984375] px. Chosen by measurement (`bench/bench_codec.py`; table in `docs/FLOW_CODEC.md`). On 1024x512
flows it takes 31.7% of the bytes of DA-VSN's int16x10 `.npy` for DIS flow on a real stereo pair, 15.1% for that
pair's ground truth, 3.9% for a smooth street flow and 36.3% for the same flow with 0.05 px noise (bound: 40%); it
decodes in 5-10 ms of one CPU core. KITTI's 3-channel 16-bit PNG (same 1/64 px plus a validity plane that our dense
flows do not need) took 23-50%, int16 x64 through `np.savez_compressed` 22-71%.

The member extension "png16" does not end in ".png", so webdataset's auto-decoder leaves the bytes alone (it
would decode a ".png" member as an 8-bit image and lose the flow); the shard reader calls `decode_flow` itself.
Flows beyond the range are clipped by default (a displacement of 512 px at the 1024x512 training size is an
estimator failure, not motion); `on_overflow="raise"` raises InputError instead. Non-finite flows always raise.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.errors import InputError

FLOW_CODEC = "png16x64"
FLOW_EXT = "png16"

FLOW_SCALE = 64  # quantisation steps per pixel: the 1/64 px precision the design requires (KITTI uses the same)
FLOW_OFFSET = 2**15  # uint16 code of a zero flow, so negative flows fit the unsigned PNG samples
CODE_MAX = 2**16 - 1  # the largest 16-bit PNG sample
FLOW_MIN_PX = -FLOW_OFFSET / FLOW_SCALE  # -512.0: code 0
FLOW_MAX_PX = (CODE_MAX - FLOW_OFFSET) / FLOW_SCALE  # 511.984375: code 65535
# libpng picks none/sub/up per row (sub turns smooth rows into near-constant differences); zlib level 3 with its
# default strategy. Against OpenCV 5.0's default PNG settings (Z_RLE strategy) this saves 0.5-16 points of the .npy size
# on the benchmark flows; level 6 would save up to 2.6 more points at 1.4-3.7x the encode time.
_PNG_PARAMS = [
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FAST_FILTERS,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_DEFAULT,
    cv2.IMWRITE_PNG_COMPRESSION, 3,
]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ON_OVERFLOW = ("clip", "raise")


def encode_flow(flow: np.ndarray, on_overflow: str = "clip") -> bytes:
    """Encode an (H, W, 2) float flow in pixels as png16x64 bytes; see the module docstring for the layout."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] == 0 or flow.shape[1] == 0:
        raise ValueError(f"flow must be (H, W, 2) with H, W > 0, got {flow.shape}")
    if on_overflow not in ON_OVERFLOW:
        raise ValueError(f"on_overflow must be one of {ON_OVERFLOW}, got {on_overflow!r}")
    if not np.isfinite(flow).all():
        raise InputError(f"flow of size {flow.shape[1]}x{flow.shape[0]} has non-finite values; cannot encode it")
    codes = np.rint(flow.astype(np.float64) * FLOW_SCALE) + FLOW_OFFSET
    if on_overflow == "raise":
        beyond = (codes < 0) | (codes > CODE_MAX)
        if beyond.any():
            raise InputError(
                f"flow reaches {np.abs(flow).max():.1f} px at {int(beyond.sum())} values, beyond the "
                f"{FLOW_CODEC} range [{FLOW_MIN_PX}, {FLOW_MAX_PX}] px"
            )
    codes = np.clip(codes, 0, CODE_MAX).astype(np.uint16)
    planes = np.concatenate((codes[..., 0], codes[..., 1]), axis=0)  # (2H, W): u on top, v below
    ok, png = cv2.imencode(".png", planes, _PNG_PARAMS)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {planes.shape} uint16 PNG")
    return png.tobytes()


def decode_flow(data: bytes, name: str = "flow member") -> np.ndarray:
    """Decode png16x64 bytes into an (H, W, 2) float32 flow in pixels; bad bytes raise InputError naming `name`."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if bytes(buffer[: len(_PNG_SIGNATURE)]) != _PNG_SIGNATURE:
        raise InputError(f"{name}: not a {FLOW_CODEC} flow (no PNG signature in {len(buffer)} bytes)")
    planes = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if planes is None:
        raise InputError(f"{name}: corrupt or truncated {FLOW_CODEC} PNG ({len(buffer)} bytes)")
    if planes.dtype != np.uint16 or planes.ndim != 2 or planes.shape[0] % 2:
        raise InputError(
            f"{name}: expected a 16-bit grayscale PNG of even height ({FLOW_CODEC}), got {planes.dtype} "
            f"{planes.shape}"
        )
    h = planes.shape[0] // 2
    flow = np.empty((h, planes.shape[1], 2), dtype=np.float32)
    np.subtract(planes[:h], FLOW_OFFSET, out=flow[..., 0], dtype=np.float32)
    np.subtract(planes[h:], FLOW_OFFSET, out=flow[..., 1], dtype=np.float32)
    flow *= 1.0 / FLOW_SCALE  # exact: 1/64 is a power of two
    return flow
