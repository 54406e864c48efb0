"""Pictures people look at, laid out one way everywhere: tiles, title strips, class legends, figure grids and the
sheets stacked from them (`i2vda-prep inspect`'s sheet, the world's contact sheet, i2vda-eval's and the demo's figures,
i2vda-predict's video frames).

A legend lists the classes a picture can show (`legend_classes`), never the protocol's whole list when the picture
holds fewer. Colours are the protocol's (the Cityscapes palette); car (0, 0, 142), truck (0, 0, 70) and bus (0, 60,
100) are close, so swatches are large and outlined, and wide pictures get a larger legend (`with_legend`).
"""

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
LEGEND_FONT_SCALE = 0.5  # 12-pixel capitals at scale 1
LEGEND_SWATCH_HW = (16, 28)  # a class colour, pixels at scale 1
LEGEND_ROW_HEIGHT = 26
LEGEND_GAP = 6  # between a swatch and its name, and around the strip
LEGEND_ENTRY_PAD = 16  # between one entry's name and the next swatch
LEGEND_OUTLINE = (96, 96, 96)  # grey frame around each swatch: dark blues stay apart from each other and the text
LEGEND_WIDTH_PER_SCALE = 1024  # `with_legend`: a picture this wide gets the legend at scale 1, twice as wide at 2


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


def figure_grid(
    rows, titles=None, tile_hw=None, pad: int = GRID_PAD, legend: Protocol | None = None, legend_ids=None
) -> np.ndarray:
    """(H, W, 3) uint8 figure: `rows` of equally many images, `titles` one per column above the first row.

    Every tile is resized to `tile_hw` (default: the first image's size); grey images are shown as RGB. With
    `legend`, the class colours and names of `legend_ids` (default: the protocol's trained classes) are drawn below
    the grid (`class_legend`).
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
        canvas = np.concatenate([canvas, class_legend(legend, width, legend_ids)], axis=0)
    return canvas


def legend_classes(protocol: Protocol, *label_maps: np.ndarray) -> list[int]:
    """The protocol's trained class ids that occur in any of `label_maps` (train ids; 255 and others skipped)."""
    present = np.zeros(protocol.num_classes, dtype=bool)
    for labels in label_maps:
        ids = np.unique(np.asarray(labels))
        present[ids[ids < protocol.num_classes].astype(np.int64)] = True
    return [int(i) for i in np.flatnonzero(present)]


def legend_entry_width(protocol: Protocol, class_ids=None, scale: float = 1.0) -> int:
    """Pixels one legend entry takes: the swatch, the widest class name shown and the gaps."""
    ids = range(protocol.num_classes) if class_ids is None else list(class_ids)
    font = LEGEND_FONT_SCALE * scale
    widest = max((cv2.getTextSize(protocol.class_names[i], TITLE_FONT, font, 1)[0][0] for i in ids), default=0)
    return round((LEGEND_SWATCH_HW[1] + LEGEND_GAP + LEGEND_ENTRY_PAD) * scale) + widest


def class_legend(protocol: Protocol, width: int, class_ids=None, scale: float = 1.0) -> np.ndarray:
    """(H, width, 3) uint8 white strip: a swatch and the name of each class of `class_ids` (default: every trained
    class of `protocol`), in train-id order, wrapped into rows; `scale` enlarges everything (wide pictures)."""
    ids = list(range(protocol.num_classes)) if class_ids is None else sorted({int(i) for i in class_ids})
    ids = [i for i in ids if 0 <= i < protocol.num_classes]
    pad, row_h = round(LEGEND_GAP * scale), round(LEGEND_ROW_HEIGHT * scale)
    swatch_h, swatch_w = round(LEGEND_SWATCH_HW[0] * scale), round(LEGEND_SWATCH_HW[1] * scale)
    step = legend_entry_width(protocol, ids, scale)
    per_row = max(1, (width - pad) // step)
    rows = max(1, -(-len(ids) // per_row))  # an empty legend still takes one row: the picture keeps its layout
    strip = np.full((rows * row_h + pad, width, 3), WHITE, dtype=np.uint8)
    thickness, font = max(1, round(scale)), LEGEND_FONT_SCALE * scale
    for k, class_id in enumerate(ids):
        x = pad + (k % per_row) * step
        y = pad // 2 + (k // per_row) * row_h + (row_h - swatch_h) // 2
        color = tuple(int(c) for c in protocol.palette[class_id])
        cv2.rectangle(strip, (x, y), (x + swatch_w - 1, y + swatch_h - 1), color, thickness=-1)
        cv2.rectangle(strip, (x, y), (x + swatch_w - 1, y + swatch_h - 1), LEGEND_OUTLINE, thickness=1)
        name = str(protocol.class_names[class_id])
        (_, text_h), _ = cv2.getTextSize(name, TITLE_FONT, font, thickness)
        origin = (x + swatch_w + pad, y + (swatch_h + text_h) // 2)
        cv2.putText(strip, name, origin, TITLE_FONT, font, (0, 0, 0), thickness, cv2.LINE_AA)
    return strip


def with_legend(picture: np.ndarray, protocol: Protocol, *label_maps: np.ndarray) -> np.ndarray:
    """`picture` with the legend of the classes `label_maps` show below it, scaled to its width."""
    width = picture.shape[1]
    scale = max(1.0, width / LEGEND_WIDTH_PER_SCALE)
    strip = class_legend(protocol, width, legend_classes(protocol, *label_maps), scale)
    return np.concatenate([as_rgb(picture), strip], axis=0)
