"""Class legends drawn under pictures of label maps: a colour swatch and the class name per class, wrapped into rows.

One home for every picture of the project (`i2vda-prep inspect` sheets, the built-in world's contact sheet,
`i2vda-eval` overlays, `i2vda-predict` videos): a legend lists the classes a picture can show, never the protocol's
whole list when the picture holds fewer. Colours are the protocol's (the Cityscapes palette); car (0, 0, 142),
truck (0, 0, 70) and bus (0, 60, 100) are close, so swatches are large and outlined.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from pipeline.sources.protocols import Protocol

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5  # 12-pixel capitals at scale 1
SWATCH_HW = (16, 28)  # a class colour, pixels at scale 1
ROW_HEIGHT = 26
GAP = 6  # between a swatch and its name, and around the strip
ENTRY_PAD = 16  # between one entry's name and the next swatch
OUTLINE = (96, 96, 96)  # grey frame around each swatch: dark blues stay apart from each other and from the text
WHITE = 255


def legend_classes(protocol: Protocol, *label_maps: np.ndarray) -> list[int]:
    """The protocol's trained class ids that occur in any of `label_maps` (train ids; 255 and others skipped)."""
    present = np.zeros(protocol.num_classes, dtype=bool)
    for labels in label_maps:
        ids = np.unique(np.asarray(labels))
        present[ids[ids < protocol.num_classes].astype(np.int64)] = True
    return [int(i) for i in np.flatnonzero(present)]


def entry_width(protocol: Protocol, class_ids: Iterable[int] | None = None, scale: float = 1.0) -> int:
    """Pixels one legend entry takes: the swatch, the widest class name shown and the gaps."""
    ids = range(protocol.num_classes) if class_ids is None else list(class_ids)
    widest = max((cv2.getTextSize(protocol.class_names[i], FONT, FONT_SCALE * scale, 1)[0][0] for i in ids), default=0)
    return round((SWATCH_HW[1] + GAP + ENTRY_PAD) * scale) + widest


def class_legend(
    protocol: Protocol, width: int, class_ids: Iterable[int] | None = None, scale: float = 1.0
) -> np.ndarray:
    """(H, width, 3) uint8 white strip: a swatch and the name of each class of `class_ids` (default: every trained
    class of `protocol`), in train-id order, wrapped into rows; `scale` enlarges everything (wide pictures)."""
    ids = list(range(protocol.num_classes)) if class_ids is None else sorted({int(i) for i in class_ids})
    ids = [i for i in ids if 0 <= i < protocol.num_classes]
    pad, row_h = round(GAP * scale), round(ROW_HEIGHT * scale)
    swatch_h, swatch_w = round(SWATCH_HW[0] * scale), round(SWATCH_HW[1] * scale)
    step = entry_width(protocol, ids, scale)
    per_row = max(1, (width - pad) // step)
    rows = max(1, -(-len(ids) // per_row))  # an empty legend still takes one row: the picture keeps its layout
    strip = np.full((rows * row_h + pad, width, 3), WHITE, dtype=np.uint8)
    thickness = max(1, round(scale))
    for k, class_id in enumerate(ids):
        x = pad + (k % per_row) * step
        y = pad // 2 + (k // per_row) * row_h + (row_h - swatch_h) // 2
        color = tuple(int(c) for c in protocol.palette[class_id])
        cv2.rectangle(strip, (x, y), (x + swatch_w - 1, y + swatch_h - 1), color, thickness=-1)
        cv2.rectangle(strip, (x, y), (x + swatch_w - 1, y + swatch_h - 1), OUTLINE, thickness=1)
        (_, text_h), _ = cv2.getTextSize(protocol.class_names[class_id], FONT, FONT_SCALE * scale, thickness)
        origin = (x + swatch_w + pad, y + (swatch_h + text_h) // 2)
        cv2.putText(
            strip, protocol.class_names[class_id], origin, FONT, FONT_SCALE * scale, (0, 0, 0), thickness, cv2.LINE_AA
        )
    return strip
