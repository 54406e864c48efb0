"""Looks of the domains: a flat, saturated "game" style (sources), a textured, noisy "camera" style (target), and
random looks for the world's ImageNet analog (`random_style`), which are neither.

The domain gap lives here only: geometry and layout come from one generator. `camera_style(gap)` interpolates every
parameter between the game look (gap 0) and the full camera look (gap 1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pipeline.world.classes import NUM_WORLD_CLASSES
from pipeline.world.classes import WorldClass as C

N_OPTIONS = 4  # colour choices per class; an object's tint picks one
# Parts painted over a class's base colour (their own colour options, same picking rule).
WINDOW, GLASS, WHEEL, TRUNK, SKIN, PANTS, LAMP, RIM = range(8)
NUM_PARTS = 8

_GAME = {
    C.SKY: [(40, 130, 255), (60, 150, 250), (30, 110, 240), (80, 170, 255)],
    C.ROAD: [(90, 90, 120), (100, 90, 130), (80, 85, 110), (95, 100, 125)],
    C.LANE_MARK: [(255, 255, 255), (255, 255, 255), (255, 230, 0), (255, 255, 255)],
    C.SIDEWALK: [(240, 150, 170), (230, 140, 180), (250, 165, 150), (235, 160, 175)],
    C.CURB: [(255, 250, 250)] * 4,
    C.TERRAIN: [(170, 235, 60), (190, 240, 80), (150, 225, 50), (200, 230, 70)],
    C.BUILDING: [(255, 200, 120), (140, 220, 235), (205, 165, 255), (255, 150, 120)],
    C.FENCE: [(210, 120, 50), (190, 100, 40), (230, 140, 60), (200, 110, 70)],
    C.POLE: [(90, 90, 220), (100, 100, 230), (80, 80, 210), (110, 110, 235)],
    C.LIGHT: [(20, 20, 20)] * 4,
    C.SIGN: [(0, 80, 255), (255, 30, 30), (255, 230, 0), (0, 200, 90)],
    C.TREE: [(30, 205, 40), (50, 220, 60), (20, 190, 50), (70, 215, 30)],
    C.HEDGE: [(20, 170, 70), (30, 160, 60), (10, 180, 80), (40, 175, 55)],
    C.PERSON: [(255, 0, 130), (0, 205, 255), (255, 160, 0), (165, 0, 255)],
    C.CAR: [(255, 20, 20), (255, 230, 0), (20, 80, 255), (250, 250, 250)],
    C.EGO: [(40, 40, 60)] * 4,
}
_CAMERA = {
    C.SKY: [(200, 212, 225), (178, 198, 222), (215, 218, 222), (160, 182, 212)],
    C.ROAD: [(78, 78, 80), (88, 86, 84), (70, 72, 75), (96, 93, 90)],
    C.LANE_MARK: [(210, 210, 205), (200, 200, 195), (200, 178, 90), (215, 212, 200)],
    C.SIDEWALK: [(150, 146, 140), (166, 160, 150), (140, 138, 136), (175, 168, 156)],
    C.CURB: [(182, 182, 178)] * 4,
    C.TERRAIN: [(118, 128, 74), (134, 124, 80), (108, 124, 70), (140, 138, 88)],
    C.BUILDING: [(150, 118, 98), (170, 165, 150), (120, 116, 112), (182, 150, 118)],
    C.FENCE: [(122, 110, 98), (104, 98, 92), (138, 126, 110), (96, 90, 84)],
    C.POLE: [(112, 112, 110), (98, 98, 100), (126, 124, 120), (88, 88, 90)],
    C.LIGHT: [(42, 42, 38)] * 4,
    C.SIGN: [(40, 70, 150), (178, 42, 40), (198, 178, 44), (220, 220, 216)],
    C.TREE: [(56, 80, 40), (70, 90, 46), (46, 70, 36), (80, 96, 56)],
    C.HEDGE: [(50, 74, 40), (60, 82, 44), (44, 66, 36), (66, 86, 50)],
    C.PERSON: [(60, 60, 70), (122, 42, 42), (42, 62, 102), (150, 140, 120)],
    C.CAR: [(32, 32, 36), (200, 200, 205), (122, 22, 22), (62, 72, 92)],
    C.EGO: [(28, 28, 30)] * 4,
}
_GAME_PARTS = [
    [(20, 40, 160)] * 4,  # building windows
    [(40, 220, 255)] * 4,  # car glass
    [(0, 0, 0)] * 4,  # wheels
    [(150, 80, 20)] * 4,  # tree trunk
    [(255, 200, 150), (230, 170, 120), (160, 100, 60), (255, 215, 170)],  # skin
    [(30, 30, 200), (20, 20, 20), (200, 0, 0), (0, 120, 0)],  # trousers
    [(255, 0, 0), (255, 200, 0), (0, 255, 60), (255, 0, 0)],  # lit lamp: red, amber, green
    [(255, 255, 255)] * 4,  # sign rim
]
_CAMERA_PARTS = [
    [(62, 70, 78), (90, 98, 105), (50, 55, 60), (110, 116, 120)],
    [(46, 52, 58)] * 4,
    [(22, 22, 22)] * 4,
    [(78, 64, 50)] * 4,
    [(200, 160, 130), (170, 125, 95), (110, 75, 55), (215, 180, 150)],
    [(40, 44, 60), (36, 36, 38), (70, 60, 50), (52, 56, 44)],
    [(230, 60, 40), (235, 170, 40), (80, 220, 120), (230, 60, 40)],
    [(225, 225, 222)] * 4,
]


@dataclass(frozen=True)
class Style:
    """How surfaces are painted and how the sensor sees them; every field interpolates linearly."""

    palette: np.ndarray  # (NUM_WORLD_CLASSES, N_OPTIONS, 3) RGB 0..255 base colours
    parts: np.ndarray  # (NUM_PARTS, N_OPTIONS, 3) RGB of windows, glass, wheels, ...
    texture: float  # amplitude of the multiplicative surface noise (0 = flat colours)
    tile_contrast: float  # darkening of sidewalk joints and fence planks
    clouds: float  # how much of the sky turns to cloud
    haze: float  # fraction of the haze colour reached at great depth
    vignette: float  # brightness lost in the image corners
    blur_px: float  # sigma of the lens blur (0 = sharp)
    noise: float  # sensor noise sigma, in 0..255 units
    exposure_jitter: float  # a sequence's gain is drawn in 1 +- this
    cast_jitter: float  # a sequence's per-channel colour gain is drawn in 1 +- this
    cast: np.ndarray  # (3,) fixed per-channel gain of the domain (SYNTHIA's dawn light)


def _table(rows: dict | list, count: int) -> np.ndarray:
    table = np.zeros((count, N_OPTIONS, 3))
    for key, colours in rows.items() if isinstance(rows, dict) else enumerate(rows):
        table[int(key)] = colours
    return table


def game_style(cast: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Style:
    """Flat saturated colours, sharp edges, no noise: the look of the source games."""
    return Style(
        _table(_GAME, NUM_WORLD_CLASSES),
        _table(_GAME_PARTS, NUM_PARTS),
        texture=0.0,
        tile_contrast=0.1,
        clouds=0.0,
        haze=0.0,
        vignette=0.0,
        blur_px=0.0,
        noise=0.0,
        exposure_jitter=0.0,
        cast_jitter=0.0,
        cast=np.asarray(cast, dtype=np.float64),
    )


# Fields that are the surfaces' own colours (the rest is texture, weather and sensor).
COLOUR_FIELDS = ("palette", "parts")


def camera_style(gap: float, colour_gap: float | None = None) -> Style:
    """The target's look: `gap` 0 is the game look, 1 a textured, hazy, blurred, noisy camera with other colours.

    `colour_gap` (default: `gap`) moves only the surface colours: below `gap`, classes keep more of their game
    colours while texture, haze, blur and noise stay at `gap`, as between a game and real streets.
    """
    colour_gap = gap if colour_gap is None else colour_gap
    game = game_style()
    real = Style(
        _table(_CAMERA, NUM_WORLD_CLASSES),
        _table(_CAMERA_PARTS, NUM_PARTS),
        texture=0.35,
        tile_contrast=0.25,
        clouds=0.6,
        haze=0.35,
        vignette=0.3,
        blur_px=0.7,
        noise=4.0,
        exposure_jitter=0.2,
        cast_jitter=0.08,
        cast=np.ones(3),
    )
    weights = {f.name: colour_gap if f.name in COLOUR_FIELDS else gap for f in fields(Style)}
    return Style(**{name: _mix(getattr(game, name), getattr(real, name), w) for name, w in weights.items()})


def _mix(game, real, gap: float):
    """(1 - gap) * game + gap * real, for numbers and arrays alike."""
    value = (1 - gap) * np.asarray(game, dtype=np.float64) + gap * np.asarray(real, dtype=np.float64)
    return float(value) if value.ndim == 0 else value


# Ranges of the ImageNet analog's looks (`random_style`): from flat to more textured, hazy, blurred and noisy than the
# camera look, so that its pictures span many looks, as photographs of every kind do, without being either domain's.
RANDOM_LOOK = {
    "texture": (0.0, 0.5),
    "tile_contrast": (0.0, 0.3),
    "clouds": (0.0, 1.0),
    "haze": (0.0, 0.5),
    "vignette": (0.0, 0.4),
    "blur_px": (0.0, 1.2),
    "noise": (0.0, 8.0),
    "exposure_jitter": (0.0, 0.3),
    "cast_jitter": (0.0, 0.15),
}
RANDOM_SATURATION, RANDOM_VALUE = (0.1, 0.9), (0.25, 1.0)  # HSV ranges of the random surface colours


def _random_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, N_OPTIONS, 3) RGB 0..255: hue uniform, saturation and value in RANDOM_SATURATION / RANDOM_VALUE."""
    h = rng.uniform(0.0, 1.0, (count, N_OPTIONS))
    s = rng.uniform(*RANDOM_SATURATION, (count, N_OPTIONS))
    v = rng.uniform(*RANDOM_VALUE, (count, N_OPTIONS))
    k = np.stack([(5.0 + h * 6.0) % 6.0, (3.0 + h * 6.0) % 6.0, (1.0 + h * 6.0) % 6.0], axis=-1)  # HSV -> RGB
    rgb = v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return 255.0 * rgb


def random_style(rng: np.random.Generator) -> Style:
    """A look drawn at random: every class and part in random colours, texture, weather and sensor in RANDOM_LOOK.

    The ImageNet analog paints each of its pictures in its own random look: the pretraining learns shapes, layouts and
    textures of the world's classes, never the source's or the target's colours."""
    palette, parts = _random_colours(rng, NUM_WORLD_CLASSES), _random_colours(rng, NUM_PARTS)
    look = {name: float(rng.uniform(low, high)) for name, (low, high) in RANDOM_LOOK.items()}
    return Style(palette, parts, cast=np.ones(3), **look)
