"""Image and label files: checked reads (a bad file is an InputError naming it), indexed PNGs, resizing, and the one
writer of picture PNGs."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from pipeline.atomic import write_bytes_atomic
from pipeline.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAY, PNG_PALETTE = 0, 3  # IHDR colour types
JPEG_SOI, JPEG_SOS, JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"  # start of image, start of scan, end of image
ZLIB_LEVEL = 6  # zlib's default speed/size trade-off
# Pixels are kept as stored: an EXIF orientation tag must not rotate an image away from its label.
_COLOR_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
SHRINK_INTERPOLATION = cv2.INTER_AREA  # averages every source pixel an output pixel covers: no aliasing
ENLARGE_INTERPOLATION = cv2.INTER_CUBIC  # bicubic, as DA-VSN's PIL resize
# Pixel-centre nearest neighbour (as PIL's NEAREST); cv2.INTER_NEAREST samples half a pixel off.
LABEL_INTERPOLATION = cv2.INTER_NEAREST_EXACT


def _read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file; a missing, unreadable or empty one is an InputError naming it (decoders see only bytes)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not data:
        raise InputError(f"{path}: empty file")
    return data


def _png_chunks(data: bytes, path) -> list[tuple[bytes, bytes]]:
    """The (type, raw bytes incl. length and CRC) chunks of a PNG up to IEND; a truncated file raises InputError."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length  # length, type, payload, CRC
        if end > len(data):
            break
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos:end]))
        if kind == b"IEND":
            if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 25:
                break
            return chunks
        pos = end
    raise InputError(f"{path}: truncated or corrupt PNG (no complete IHDR ... IEND chunk sequence)")


def _ihdr(chunks) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk."""
    width, height, bit_depth, color_type = struct.unpack(">IIBB", chunks[0][1][8:18])
    return width, height, bit_depth, color_type


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _check_complete(data: bytes, path) -> tuple[int, int] | None:
    """The (H, W) a PNG header declares; JPEG must end its last scan; a truncated file raises InputError."""
    if data.startswith(PNG_SIGNATURE):
        width, height, _, _ = _ihdr(_png_chunks(data, path))
        return height, width
    if data.startswith(JPEG_SOI) and data.find(JPEG_EOI, max(data.rfind(JPEG_SOS), 0)) < 0:
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
    return None


def _decode(data: bytes, path, flags: int) -> np.ndarray:
    """Fully decode `data` with OpenCV and check the size against the header."""
    size_hw = _check_complete(data, path)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        image = None
    if image is None:
        raise InputError(f"{path}: not a readable image (corrupt, truncated or of an unknown format)")
    if size_hw is not None and image.shape[:2] != size_hw:
        raise InputError(
            f"{path}: decoded {image.shape[1]}x{image.shape[0]} pixels, the header says {size_hw[1]}x{size_hw[0]}"
        )
    return image


def _require_png(data: bytes, path) -> None:
    if not data.startswith(PNG_SIGNATURE):
        raise InputError(f"{path}: not a PNG file (bad signature)")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB image; a missing, unreadable, truncated or corrupt file raises InputError naming it."""
    bgr = _decode(_read_bytes(path), path, _COLOR_FLAGS)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_png_unchanged(path: str | os.PathLike) -> np.ndarray:
    """A label PNG as stored: (H, W) or (H, W, C) with C in OpenCV's BGR(A) order, uint8 or uint16."""
    data = _read_bytes(path)
    _require_png(data, path)
    return _decode(data, path, cv2.IMREAD_UNCHANGED)


def read_palette_png(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint8 palette indices of an indexed PNG (or the values of an 8-bit grayscale PNG)."""
    data = _read_bytes(path)
    _require_png(data, path)
    chunks = _png_chunks(data, path)
    _, _, bit_depth, color_type = _ihdr(chunks)
    if color_type == PNG_GRAY and bit_depth == 8:
        return _decode(data, path, cv2.IMREAD_UNCHANGED)
    if color_type != PNG_PALETTE:
        raise InputError(
            f"{path}: expected an indexed (palette) PNG or an 8-bit grayscale PNG of class ids, "
            f"got colour type {color_type} at bit depth {bit_depth}"
        )
    # OpenCV expands a palette into colours; give it the identity palette (entry i = grey i) so that the colour it
    # returns is the index. The IHDR and IDAT chunks are kept byte for byte, so libpng still checks their CRCs.
    # Ancillary chunks (gamma, transparency, histogram) are dropped: none of them changes an index.
    identity = np.repeat(np.arange(2**bit_depth, dtype=np.uint8), 3).tobytes()
    rebuilt = b"".join(
        [PNG_SIGNATURE, chunks[0][1], _chunk(b"PLTE", identity)]
        + [raw for kind, raw in chunks if kind == b"IDAT"]
        + [chunks[-1][1]]
    )
    return np.ascontiguousarray(_decode(rebuilt, path, _COLOR_FLAGS)[:, :, 0])


def write_palette_png(path: str | os.PathLike, indices: np.ndarray, palette) -> None:
    """Write (H, W) palette indices and their RGB palette as an 8-bit indexed PNG, atomically."""
    indices = np.asarray(indices)
    palette_rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    if indices.ndim != 2 or indices.size == 0:
        raise ValueError(f"indices must be a non-empty (H, W) array, got shape {indices.shape}")
    if not 1 <= len(palette_rgb) <= 256 or palette_rgb.min() < 0 or palette_rgb.max() > 255:
        raise ValueError("palette must hold 1 to 256 RGB triples in 0..255")
    if indices.min() < 0 or indices.max() >= len(palette_rgb):
        raise ValueError(f"indices must lie in 0..{len(palette_rgb) - 1}, got {indices.min()}..{indices.max()}")
    height, width = indices.shape
    # Each row is prefixed by its filter type; 0 (None) stores the bytes as they are.
    rows = np.concatenate([np.zeros((height, 1), np.uint8), indices.astype(np.uint8)], axis=1)
    png = b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, PNG_PALETTE, 0, 0, 0)),
            _chunk(b"PLTE", palette_rgb.astype(np.uint8).tobytes()),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), ZLIB_LEVEL)),
            _chunk(b"IEND", b""),
        ]
    )
    write_bytes_atomic(path, png, durable=False)


def parse_size_wh(text: str, flag: str = "--size") -> tuple[int, int]:
    """'1024x512' (width first, as every flag and config file of the project writes a size) -> (W, H) = (1024, 512),
    both positive; anything else is a one-line InputError naming `flag`."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"{flag} {text}: expected WIDTHxHEIGHT in pixels, e.g. 1024x512")
    return int(parts[0]), int(parts[1])


def size_text(size_wh) -> str:
    """(W, H) -> 'WxH', as flags write it (the inverse of `parse_size_wh`)."""
    return f"{size_wh[0]}x{size_wh[1]}"


def _check_size(size_wh) -> tuple[int, int]:
    width, height = (int(v) for v in size_wh)
    if width <= 0 or height <= 0:
        raise ValueError(f"size_wh must be two positive integers (W, H), got {size_wh}")
    return width, height


def resize_rgb(img: np.ndarray, size_wh) -> np.ndarray:
    """Resize an (H, W, 3) image to size_wh = (W, H): area averaging when shrinking, bicubic when enlarging."""
    width, height = _check_size(size_wh)
    if img.shape[:2] == (height, width):
        return img
    shrink = width <= img.shape[1] and height <= img.shape[0]
    interpolation = SHRINK_INTERPOLATION if shrink else ENLARGE_INTERPOLATION
    return cv2.resize(img, (width, height), interpolation=interpolation)


def resize_label(label: np.ndarray, size_wh) -> np.ndarray:
    """Resize an (H, W) label map to size_wh = (W, H) with pixel-centre nearest neighbour (no new ids)."""
    width, height = _check_size(size_wh)
    if label.shape[:2] == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=LABEL_INTERPOLATION)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB or (H, W) grey picture as a PNG (OpenCV's default settings), atomically, into a
    folder made if missing; -> the path."""
    image = np.asarray(image, dtype=np.uint8)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode a picture of shape {image.shape} as PNG")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data.tobytes(), durable=False)
    return path
