"""The demo world's semantic classes and their ids in each dataset's label encoding.

Ids come from the datasets' published label tables: Cityscapes labelIds (gtFine `_labelIds.png`), VIPER `classes.csv`
ids (palette index of `train/cls` PNGs) and SYNTHIA-SEQS ids (R channel of `GT/LABELS`).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class WorldClass(IntEnum):
    """What a ray hit. Finer than any dataset (tree vs hedge, lane mark vs road) so each encoding can be honoured."""

    SKY = 0
    ROAD = 1
    LANE_MARK = 2  # painted on the road: Cityscapes and VIPER call it road, SYNTHIA has its own id
    SIDEWALK = 3
    CURB = 4  # painted apart, labelled sidewalk in every dataset (as Cityscapes does)
    TERRAIN = 5
    BUILDING = 6
    FENCE = 7
    POLE = 8
    LIGHT = 9
    SIGN = 10
    TREE = 11  # trunk and crown; VIPER separates trees from other vegetation
    HEDGE = 12
    PERSON = 13
    CAR = 14
    EGO = 15  # the recording vehicle's own bonnet, fixed on screen


NUM_WORLD_CLASSES = len(WorldClass)

# Cityscapes labelIds. 1 = "ego vehicle", which every protocol ignores.
CITYSCAPES_ID = {
    WorldClass.SKY: 23,
    WorldClass.ROAD: 7,
    WorldClass.LANE_MARK: 7,
    WorldClass.SIDEWALK: 8,
    WorldClass.CURB: 8,
    WorldClass.TERRAIN: 22,
    WorldClass.BUILDING: 11,
    WorldClass.FENCE: 13,
    WorldClass.POLE: 17,
    WorldClass.LIGHT: 19,
    WorldClass.SIGN: 20,
    WorldClass.TREE: 21,
    WorldClass.HEDGE: 21,
    WorldClass.PERSON: 24,
    WorldClass.CAR: 26,
    WorldClass.EGO: 1,
}

# VIPER classes.csv ids. Poles fall under 10 "infrastructure"; the ego car is a car (24), as in the real data,
# where the reader removes the car component touching the bottom-centre pixel.
VIPER_ID = {
    WorldClass.SKY: 2,
    WorldClass.ROAD: 3,
    WorldClass.LANE_MARK: 3,
    WorldClass.SIDEWALK: 4,
    WorldClass.CURB: 4,
    WorldClass.TERRAIN: 6,
    WorldClass.BUILDING: 9,
    WorldClass.FENCE: 11,
    WorldClass.POLE: 10,
    WorldClass.LIGHT: 13,
    WorldClass.SIGN: 14,
    WorldClass.TREE: 7,
    WorldClass.HEDGE: 8,
    WorldClass.PERSON: 20,
    WorldClass.CAR: 24,
    WorldClass.EGO: 24,
}

# SYNTHIA-SEQS ids. SYNTHIA-SEQS has no terrain class: grass is labelled vegetation (6); lane marks keep their
# own id 12 (ignored by the protocols); the ego vehicle is never in view (0 = void).
SYNTHIA_ID = {
    WorldClass.SKY: 1,
    WorldClass.ROAD: 3,
    WorldClass.LANE_MARK: 12,
    WorldClass.SIDEWALK: 4,
    WorldClass.CURB: 4,
    WorldClass.TERRAIN: 6,
    WorldClass.BUILDING: 2,
    WorldClass.FENCE: 5,
    WorldClass.POLE: 7,
    WorldClass.LIGHT: 15,
    WorldClass.SIGN: 9,
    WorldClass.TREE: 6,
    WorldClass.HEDGE: 6,
    WorldClass.PERSON: 10,
    WorldClass.CAR: 8,
    WorldClass.EGO: 0,
}

# Classes whose pixels carry an instance id (SYNTHIA's G channel); everything else is "stuff" (instance 0).
THING_CLASSES = (WorldClass.PERSON, WorldClass.CAR)


def _lut(table: dict) -> np.ndarray:
    """(NUM_WORLD_CLASSES,) uint8 dataset id per world class, read-only."""
    lut = np.zeros(NUM_WORLD_CLASSES, dtype=np.uint8)
    for world_class, dataset_id in table.items():
        lut[int(world_class)] = dataset_id
    lut.flags.writeable = False
    return lut


CITYSCAPES_LUT, VIPER_LUT, SYNTHIA_LUT = _lut(CITYSCAPES_ID), _lut(VIPER_ID), _lut(SYNTHIA_ID)


def to_cityscapes(world_cls: np.ndarray) -> np.ndarray:
    """(H, W) world classes -> (H, W) uint8 Cityscapes labelIds."""
    return CITYSCAPES_LUT[world_cls]


def to_viper(world_cls: np.ndarray) -> np.ndarray:
    """(H, W) world classes -> (H, W) uint8 VIPER class ids."""
    return VIPER_LUT[world_cls]


def to_synthia(world_cls: np.ndarray) -> np.ndarray:
    """(H, W) world classes -> (H, W) uint8 SYNTHIA-SEQS class ids."""
    return SYNTHIA_LUT[world_cls]
