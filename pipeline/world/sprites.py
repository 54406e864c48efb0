"""Vertical surfaces of the 2.5D world ("sprites"): a footprint segment on the ground, extruded between two heights.

Facades, box sides of cars, billboards of trees, people, poles and signs are all sprites. A sprite's vertical extent
may vary along its footprint (a car's cabin, a tree's round crown), through its profile: for each position
s in [0, 1] along the footprint it covers one interval [y_lo(s), y_hi(s)] of heights, so a pixel column sees at
most one interval per sprite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.world.classes import WorldClass

# Profiles: how the covered height interval varies along the footprint.
RECT, ELLIPSE, CAR_SIDE, CAR_END, PERSON = range(5)
CAR_BODY_FRAC = 0.55  # the body (below the windows) is this fraction of a car's height; the cabin is the rest
CAR_SIDE_CABIN = (0.22, 0.85)  # the cabin spans this part of a car's length
CAR_END_CABIN = 0.78  # the cabin spans this fraction of a car's width, seen from behind or ahead
CABIN_RAMP = 0.08  # windscreen slope, as a fraction of the length or width
HEAD_WIDTH_FRAC, HEAD_HEIGHT_FRAC = 0.4, 0.13  # a person's head, relative to the billboard's width and height
TEXTURE_OFFSET_RANGE_M = 1000.0  # each surface reads the procedural textures at its own random offset


@dataclass(frozen=True)
class Sprites:
    """N sprites as arrays. Footprints are given at time 0 and move with `vel_xz`."""

    a_xz: np.ndarray  # (N, 2) footprint start, metres (X, Z)
    b_xz: np.ndarray  # (N, 2) footprint end
    vel_xz: np.ndarray  # (N, 2) m/s
    y_lo: np.ndarray  # (N,) lowest covered height, metres
    y_hi: np.ndarray  # (N,) highest covered height
    profile: np.ndarray  # (N,) int8, one of RECT ... PERSON
    cls: np.ndarray  # (N,) uint8 WorldClass
    instance: np.ndarray  # (N,) int32 object id (the faces of a car share one); 0 for stuff
    tint: np.ndarray  # (N,) float32 in [0, 1): picks the object's colour in a style
    tex_offset: np.ndarray  # (N,) float32 metres added to the texture coordinate along the footprint

    def __len__(self) -> int:
        """Number of sprites."""
        return len(self.cls)

    def footprints_at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) start and end of each footprint at time `t_s`."""
        return self.a_xz + self.vel_xz * t_s, self.b_xz + self.vel_xz * t_s


def profile_interval(profile, y_lo, y_hi, s) -> tuple[np.ndarray, np.ndarray]:
    """Covered heights [lo, hi] at footprint position s in [0, 1]; all arguments broadcast together."""
    span = y_hi - y_lo
    centred = np.abs(2.0 * s - 1.0)  # 0 at the middle of the footprint, 1 at its ends
    # Ellipse (tree crown, round sign): half-height shrinks as sqrt(1 - centred^2).
    half = 0.5 * span * np.sqrt(np.clip(1.0 - centred**2, 0.0, 1.0))
    middle = 0.5 * (y_lo + y_hi)
    side_lo, side_hi = CAR_SIDE_CABIN
    side_cabin = np.clip(np.minimum(s - side_lo, side_hi - s) / CABIN_RAMP, 0.0, 1.0)
    end_cabin = np.clip((CAR_END_CABIN - centred) / CABIN_RAMP, 0.0, 1.0)
    body = CAR_BODY_FRAC + (1.0 - CAR_BODY_FRAC) * np.where(profile == CAR_SIDE, side_cabin, end_cabin)
    shoulders = np.where(centred > HEAD_WIDTH_FRAC, 1.0 - HEAD_HEIGHT_FRAC, 1.0)
    hi_frac = np.select(
        [profile == ELLIPSE, (profile == CAR_SIDE) | (profile == CAR_END), profile == PERSON],
        [0.0, body, shoulders],
        1.0,
    )
    lo = np.where(profile == ELLIPSE, middle - half, y_lo)
    hi = np.where(profile == ELLIPSE, middle + half, y_lo + span * hi_frac)
    return lo, hi


class SpriteBuilder:
    """Collects sprites one at a time (scene generation is not a hot path) and freezes them into arrays."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows: list[tuple] = []
        self._last_instance = 0

    def new_instance(self) -> int:
        """A fresh object id (1, 2, ...)."""
        self._last_instance += 1
        return self._last_instance

    def add(self, a_xz, b_xz, y_lo, y_hi, cls: WorldClass, profile=RECT, vel_xz=(0.0, 0.0), instance=0, tint=None):
        """One sprite from footprint end points (metres, at time 0)."""
        tint = self.rng.random() if tint is None else tint
        offset = self.rng.uniform(0.0, TEXTURE_OFFSET_RANGE_M)
        self.rows.append((*a_xz, *b_xz, *vel_xz, y_lo, y_hi, profile, int(cls), instance, tint, offset))

    def billboard(self, x, z, width, y_lo, y_hi, cls, profile=RECT, vel_xz=(0.0, 0.0), instance=0, tint=None):
        """A sprite facing down the street (footprint across it), centred at (x, z)."""
        self.add((x - width / 2, z), (x + width / 2, z), y_lo, y_hi, cls, profile, vel_xz, instance, tint)

    def box(self, x, z, width, length, height, cls, vel_xz=(0.0, 0.0), tint=None):
        """The four vertical faces of a car-like box centred at (x, z), long side along the street."""
        instance, tint = self.new_instance(), self.rng.random() if tint is None else tint
        x0, x1, z0, z1 = x - width / 2, x + width / 2, z - length / 2, z + length / 2
        for a, b, profile in (
            ((x0, z0), (x1, z0), CAR_END),
            ((x0, z1), (x1, z1), CAR_END),
            ((x0, z0), (x0, z1), CAR_SIDE),
            ((x1, z0), (x1, z1), CAR_SIDE),
        ):
            self.add(a, b, 0.0, height, cls, profile, vel_xz, instance, tint)

    def build(self) -> Sprites:
        """Freeze into arrays."""
        rows = np.array(self.rows, dtype=np.float64).reshape(-1, 13)
        return Sprites(
            a_xz=rows[:, 0:2],
            b_xz=rows[:, 2:4],
            vel_xz=rows[:, 4:6],
            y_lo=rows[:, 6],
            y_hi=rows[:, 7],
            profile=rows[:, 8].astype(np.int8),
            cls=rows[:, 9].astype(np.uint8),
            instance=rows[:, 10].astype(np.int32),
            tint=rows[:, 11].astype(np.float32),
            tex_offset=rows[:, 12].astype(np.float32),
        )
