"""Procedural textures: smooth value noise evaluated at surface coordinates, so the pattern moves with the surface."""

from __future__ import annotations

import numpy as np

# The noise repeats every LATTICE cells (>= 40 m at the finest texture, never noticed in a frame); a power of two,
# so that indices wrap with a bit mask.
LATTICE = 256
# One random value per lattice point; a fixed table (read-only), so every run paints the same textures.
_VALUES = np.random.default_rng(20220724).random(LATTICE * LATTICE, dtype=np.float32)  # row-major (y, x)
_VALUES.flags.writeable = False
_SEED_SHIFT = (97, 41)  # lattice offsets per seed: different seeds read different parts of the table


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth noise in [0, 1] with one random value per unit lattice cell, interpolated with smoothstep."""
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix = (x0.astype(np.int64) + seed * _SEED_SHIFT[0]) & (LATTICE - 1)
    iy = (y0.astype(np.int64) + seed * _SEED_SHIFT[1]) & (LATTICE - 1)
    row0, row1 = iy * LATTICE, ((iy + 1) & (LATTICE - 1)) * LATTICE
    ix1 = (ix + 1) & (LATTICE - 1)
    top = _VALUES[row0 + ix] * (1 - fx) + _VALUES[row0 + ix1] * fx
    bottom = _VALUES[row1 + ix] * (1 - fx) + _VALUES[row1 + ix1] * fx
    return top * (1 - fy) + bottom * fy


def fractal_noise(x: np.ndarray, y: np.ndarray, seed: int, octaves: int) -> np.ndarray:
    """Sum of `octaves` value-noise layers, each twice as fine and half as strong; in [0, 1]."""
    total, weight, norm = np.zeros(np.broadcast(x, y).shape), 1.0, 0.0
    for octave in range(octaves):
        scale = 2.0**octave
        total += weight * value_noise(x * scale, y * scale, seed + octave)
        norm += weight
        weight *= 0.5
    return total / norm


def stripes(coord: np.ndarray, period: float, duty: float) -> np.ndarray:
    """True on the first `duty` fraction of each `period` of `coord` (windows, tiles, planks)."""
    return np.mod(coord, period) < duty * period
