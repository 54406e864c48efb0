"""Pictures people look at, laid out one way everywhere: tiles, title strips, class legends, figure grids and the
sheets stacked from them (`i2vda-prep inspect`'s sheet, the world's contact sheet, i2vda-eval's and the demo's figures,
i2vda-predict's video frames)."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.sources.images import resize_rgb
from pipeline.sources.protocols import Protocol

WHITE = 255
GRID_PAD = 4  # white pixels between tiles of a figure grid
TITLE_HEIGHT = 22  # pixels of the white strip that carries a title
TITLE_FONT = cv2.FONT_HERSHEY_SIMPLEX
TITLE_SCALE = 0.5
LEGEND_FONT_SCALE = 0.4
LEGEND_SWATCH = 14  # side of a class colour square in a legend, pixels
LEGEND_ENTRY_WIDTH = 118  # pixels per legend entry: swatch, gap, class name
LEGEND_ROW_HEIGHT = 20


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 as it is, (H, W) grey repeated into RGB."""
    image = np.asarray(image, dtype=np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def tile(image: np.ndarray, width: int | None = None, height: int | None = None, nearest: bool = False) -> np.ndarray:
    """An (H, W, 3) or (H, W) picture resized to `width` columns or `height` rows, keeping its aspect ratio: area
    averaging, or nearest neighbour for label colours (no blended colours that no class has)."""
    h, w = image.shape[:2]
    size = (width, max(1, round(h * width / w))) if width is not None else (max(1, round(w * height / h)), height)
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """(H_i, W_i, 3) rows stacked top to bottom, each padded on the right with black to the widest."""
    width = max(row.shape[1] for row in rows)
    return np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows], axis=0)


def title_strip(title: str, width: int) -> np.ndarray:
    """A white (TITLE_HEIGHT, width, 3) strip with `title` centred in black."""
    strip = np.full((TITLE_HEIGHT, width, 3), WHITE, dtype=np.uint8)
    (text_w, text_h), _ = cv2.getTextSize(title, TITLE_FONT, TITLE_SCALE, 1)
    origin = (max((width - text_w) // 2, 0), (TITLE_HEIGHT + text_h) // 2)
    cv2.putText(strip, title, origin, TITLE_FONT, TITLE_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def figure_grid(rows, titles=None, tile_hw=None, pad: int = GRID_PAD, legend: Protocol | None = None) -> np.ndarray:
    """(H, W, 3) uint8 figure: `rows` of equally many images, `titles` one per column above the first row.

    Every tile is resized to `tile_hw` (default: the first image's size); grey images are shown as RGB. With
    `legend`, the protocol's class colours and names are drawn below the grid (`class_legend`).
    """
    rows = [list(row) for row in rows]
    if not rows or not rows[0] or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError("figure_grid needs a non-empty list of rows with equally many images")
    cols = len(rows[0])
    if titles is not None and len(titles) != cols:
        raise ValueError(f"figure_grid got {len(titles)} titles for {cols} columns")
    tile_h, tile_w = tile_hw if tile_hw is not None else rows[0][0].shape[:2]
    height = len(rows) * tile_h + (len(rows) + 1) * pad + (TITLE_HEIGHT if titles else 0)
    width = cols * tile_w + (cols + 1) * pad
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)
    top = pad
    if titles:
        for c, title in enumerate(titles):
            left = pad + c * (tile_w + pad)
            canvas[top : top + TITLE_HEIGHT, left : left + tile_w] = title_strip(str(title), tile_w)
        top += TITLE_HEIGHT
    for r, row in enumerate(rows):
        y = top + r * (tile_h + pad)
        for c, image in enumerate(row):
            x = pad + c * (tile_w + pad)
            canvas[y : y + tile_h, x : x + tile_w] = resize_rgb(as_rgb(image), (tile_w, tile_h))
    if legend is not None:
        canvas = np.concatenate([canvas, class_legend(legend, width)], axis=0)
    return canvas


def class_legend(protocol: Protocol, width: int) -> np.ndarray:
    """(H, width, 3) uint8 white strip: a colour square and the name of each trained class, wrapped into rows."""
    per_row = max(1, (width - GRID_PAD) // LEGEND_ENTRY_WIDTH)
    rows = -(-protocol.num_classes // per_row)  # ceil
    strip = np.full((rows * LEGEND_ROW_HEIGHT + GRID_PAD, width, 3), WHITE, dtype=np.uint8)
    for i, name in enumerate(protocol.class_names[: protocol.num_classes]):
        x = GRID_PAD + (i % per_row) * LEGEND_ENTRY_WIDTH
        y = (i // per_row) * LEGEND_ROW_HEIGHT + (LEGEND_ROW_HEIGHT - LEGEND_SWATCH) // 2
        color = tuple(int(c) for c in protocol.palette[i])
        cv2.rectangle(strip, (x, y), (x + LEGEND_SWATCH - 1, y + LEGEND_SWATCH - 1), color, thickness=-1)
        cv2.putText(
            strip,
            str(name),
            (x + LEGEND_SWATCH + 4, y + LEGEND_SWATCH - 2),
            TITLE_FONT,
            LEGEND_FONT_SCALE,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return strip
