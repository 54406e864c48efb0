"""Class protocols: which classes are trained and scored, and how each dataset's ids map to train ids.

The registry of source datasets (`pipeline/sources/datasets.py`) holds each protocol with the dataset it is made for.
Train ids follow the column order of the paper's Table 1 (VIPER, 15 classes) and Table 2 (SYNTHIA, 11 classes);
`synthia12` is DA-VSN's variant (fence trained at train id 3, dropped when scoring). Mappings are the tables in the
datasets' published label tables and DA-VSN's class mappings (github.com/Dayan-Guan/DA-VSN); every id not listed maps
to IGNORE_ID.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_ID = 255  # train id of pixels that are neither trained nor scored
LUT_SIZE = 256  # one entry per uint8 value; Cityscapes' license plate (-1) is stored as 255 in uint8 PNGs

# Cityscapes palette colours (RGB) of the classes used by the protocols below.
_COLOR = {
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "building": (70, 70, 70),
    "fence": (190, 153, 153),
    "pole": (153, 153, 153),
    "light": (250, 170, 30),
    "sign": (220, 220, 0),
    "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152),
    "sky": (70, 130, 180),
    "person": (220, 20, 60),
    "rider": (255, 0, 0),
    "car": (0, 0, 142),
    "truck": (0, 0, 70),
    "bus": (0, 60, 100),
    "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}


@dataclass(frozen=True)
class Protocol:
    """A class protocol: trained classes (train ids 0..num_classes-1), scored train ids and the id mappings."""

    name: str
    source: str  # the registered source dataset whose labels it maps ("viper", "synthia")
    class_names: tuple[str, ...]  # indexed by train id
    palette: tuple[tuple[int, int, int], ...]  # RGB per train id
    num_classes: int  # classes trained (the network's output channels)
    eval_ids: tuple[int, ...]  # train ids that are scored
    source_to_train: tuple[tuple[int, int], ...]  # (source dataset class id, train id)
    cityscapes_to_train: tuple[tuple[int, int], ...]  # (Cityscapes labelId, train id)

    @property
    def eval_class_names(self) -> tuple[str, ...]:
        """Names of the scored classes, in train-id order."""
        return tuple(self.class_names[i] for i in self.eval_ids)

    def source_lut(self) -> np.ndarray:
        """(256,) uint8 lookup table: source dataset class id -> train id (IGNORE_ID where unlisted)."""
        return _lut(self.source_to_train)

    def cityscapes_lut(self) -> np.ndarray:
        """(256,) uint8 lookup table: Cityscapes labelId -> train id (IGNORE_ID where unlisted, incl. -1 = 255)."""
        return _lut(self.cityscapes_to_train)


def _lut(pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    lut = np.full(LUT_SIZE, IGNORE_ID, dtype=np.uint8)
    for dataset_id, train_id in pairs:
        lut[dataset_id] = train_id
    return lut


def make_protocol(name, source, class_names, eval_ids, source_to_train, cityscapes_to_train) -> Protocol:
    """A Protocol whose palette is the Cityscapes colour of each class name (train id = position in class_names)."""
    return Protocol(
        name=name,
        source=source,
        class_names=tuple(class_names),
        palette=tuple(_COLOR[c] for c in class_names),
        num_classes=len(class_names),
        eval_ids=tuple(eval_ids),
        source_to_train=tuple(source_to_train),
        cityscapes_to_train=tuple(cityscapes_to_train),
    )


_VIPER15_NAMES = (
    "road",
    "sidewalk",
    "building",
    "fence",
    "light",
    "sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "car",
    "truck",
    "bus",
    "motorcycle",
    "bicycle",
)
_SYNTHIA11_NAMES = (
    "road",
    "sidewalk",
    "building",
    "pole",
    "light",
    "sign",
    "vegetation",
    "sky",
    "person",
    "rider",
    "car",
)
_SYNTHIA12_NAMES = _SYNTHIA11_NAMES[:3] + ("fence",) + _SYNTHIA11_NAMES[3:]

VIPER15 = make_protocol(
    "viper15",
    "viper",
    _VIPER15_NAMES,
    range(15),
    # VIPER ids (classes.csv): tree (7) and vegetation (8) are both vegetation; the ego car is removed by the reader.
    [
        (3, 0),
        (4, 1),
        (9, 2),
        (11, 3),
        (13, 4),
        (14, 5),
        (7, 6),
        (8, 6),
        (6, 7),
        (2, 8),
        (20, 9),
        (24, 10),
        (27, 11),
        (26, 12),
        (23, 13),
        (22, 14),
    ],
    # Cityscapes labelIds: rider (25) is counted as person.
    [
        (7, 0),
        (8, 1),
        (11, 2),
        (13, 3),
        (19, 4),
        (20, 5),
        (21, 6),
        (22, 7),
        (23, 8),
        (24, 9),
        (25, 9),
        (26, 10),
        (27, 11),
        (28, 12),
        (32, 13),
        (33, 14),
    ],
)

SYNTHIA11 = make_protocol(
    "synthia11",
    "synthia",
    _SYNTHIA11_NAMES,
    range(11),
    # SYNTHIA-SEQS ids; fence (5) is ignored, as is lane marking (12, not merged into road).
    [(3, 0), (4, 1), (2, 2), (7, 3), (15, 4), (9, 5), (6, 6), (1, 7), (10, 8), (11, 9), (8, 10)],
    # Cityscapes labelIds; fence (13) is ignored.
    [(7, 0), (8, 1), (11, 2), (17, 3), (19, 4), (20, 5), (21, 6), (23, 7), (24, 8), (25, 9), (26, 10)],
)

SYNTHIA12 = make_protocol(
    "synthia12",
    "synthia",
    _SYNTHIA12_NAMES,
    [i for i in range(12) if i != 3],  # DA-VSN trains fence, scores 11
    [(3, 0), (4, 1), (2, 2), (5, 3), (7, 4), (15, 5), (9, 6), (6, 7), (1, 8), (10, 9), (11, 10), (8, 11)],
    [(7, 0), (8, 1), (11, 2), (13, 3), (17, 4), (19, 5), (20, 6), (21, 7), (23, 8), (24, 9), (25, 10), (26, 11)],
)


def colorize(label: np.ndarray, protocol: Protocol) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 RGB in the protocol's palette; ignore and unknown ids are black."""
    table = np.zeros((LUT_SIZE, 3), dtype=np.uint8)
    table[: protocol.num_classes] = protocol.palette
    ids = np.asarray(label)
    known = (ids >= 0) & (ids < protocol.num_classes)
    return table[np.where(known, ids, IGNORE_ID)]


def id_outside(label: np.ndarray, num_classes: int) -> int | None:
    """The largest id in `label` that is neither a train id 0..num_classes-1 nor IGNORE_ID, or None. One vectorised
    max over the label; a second pass only when that max is the ignore id."""
    top = int(label.max()) if label.size else 0
    if top < num_classes:
        return None
    if top != IGNORE_ID:
        return top
    outside = label[(label >= num_classes) & (label != IGNORE_ID)]
    return int(outside.max()) if outside.size else None
