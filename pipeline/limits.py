"""What a reader accepts before it allocates: every declared size is checked first.

A member's header declares how much memory decoding it takes: a PNG's IHDR (width, height, bit depth, colour type),
the flow codec's header (W x H) and its zstd frame's content size, a tar header's member size. Readers check the
declaration against what the store allows (its size from the manifest) before they allocate or decompress anything,
so a few bytes that lie cannot make a process allocate gigabytes: on a cluster node that is an OOM kill that prints
nothing and can take other people's jobs with it. Without a store size, a picture may have at most MAX_SIDE_PX a side.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from pipeline.errors import InputError

# The largest side of a stored picture (frame, label, flow), in pixels: 4x Cityscapes' native 2048. A manifest may not
# declare more, and a reader given no store size accepts no more; 8192 x 8192 x 3 bytes is 192 MiB decoded.
MAX_SIDE_PX = 8192

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sIIBBBBB")  # chunk length (13), b"IHDR", width, height, bit depth, colour type, ...
PNG_HEADER_BYTES = len(PNG_SIGNATURE) + _IHDR.size
PNG_GRAY, PNG_RGB = 0, 2  # IHDR colour types; the others (palette, alpha) are never written into a store


class PngHeader(NamedTuple):
    """What a PNG's IHDR declares."""

    width: int
    height: int
    bit_depth: int
    colour_type: int


def read_png_header(data, name: str) -> PngHeader:
    """The IHDR of PNG bytes (the first 33 bytes); anything else is a one-line InputError naming `name`."""
    head = bytes(memoryview(data)[:PNG_HEADER_BYTES])
    if head[: len(PNG_SIGNATURE)] != PNG_SIGNATURE:
        raise InputError(f"{name}: not a PNG (no PNG signature in its first bytes)")
    if len(head) < PNG_HEADER_BYTES:
        raise InputError(f"{name}: a PNG cut inside its header ({len(data)} bytes)")
    length, kind, width, height, depth, colour, *_ = _IHDR.unpack_from(head, len(PNG_SIGNATURE))
    if kind != b"IHDR" or length != 13:
        raise InputError(f"{name}: a PNG without an IHDR header chunk first")
    return PngHeader(width, height, depth, colour)


def check_declared_size(name: str, what: str, width: int, height: int, size_hw=None) -> None:
    """Refuse a declared `width` x `height` unless it is `size_hw` (H, W), the store's size; without one, unless each
    side is 1..MAX_SIDE_PX. One InputError line naming `name` and the `what` header that declared it."""
    if size_hw is not None:
        if (height, width) != tuple(size_hw):
            raise InputError(
                f"{name}: its {what} declares {width}x{height} pixels, the store holds {size_hw[1]}x{size_hw[0]} "
                f"(W x H); refused before decoding"
            )
    elif not (1 <= width <= MAX_SIDE_PX and 1 <= height <= MAX_SIDE_PX):
        raise InputError(
            f"{name}: its {what} declares {width}x{height} pixels, beyond the {MAX_SIDE_PX} px a side a store may "
            f"hold; refused before decoding"
        )
