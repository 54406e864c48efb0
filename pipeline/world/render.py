"""Painting a G-buffer in a style (colours, parts, textures on surface coordinates), then the style's sensor."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.world.classes import NUM_WORLD_CLASSES
from pipeline.world.classes import WorldClass as C
from pipeline.world.raycast import EGO, SKY, GBuffer
from pipeline.world.sprites import CAR_BODY_FRAC, CAR_END, CAR_SIDE, HEAD_HEIGHT_FRAC, RECT
from pipeline.world.styles import GLASS, LAMP, N_OPTIONS, PANTS, RIM, SKIN, TRUNK, WHEEL, WINDOW, Style
from pipeline.world.textures import fractal_noise, stripes

# Texture: lattice cells per metre and relative strength of each class's surface noise.
TEXTURE_FREQ = {
    C.ROAD: 3.0,
    C.LANE_MARK: 3.0,
    C.SIDEWALK: 2.0,
    C.CURB: 2.0,
    C.TERRAIN: 4.0,
    C.BUILDING: 1.2,
    C.FENCE: 3.0,
    C.POLE: 2.0,
    C.TREE: 5.0,
    C.HEDGE: 6.0,
    C.PERSON: 4.0,
    C.CAR: 1.5,
    C.SIGN: 2.0,
}
TEXTURE_GAIN = {
    C.ROAD: 0.6,
    C.LANE_MARK: 0.4,
    C.SIDEWALK: 0.6,
    C.CURB: 0.4,
    C.TERRAIN: 1.0,
    C.BUILDING: 0.7,
    C.FENCE: 0.8,
    C.POLE: 0.3,
    C.TREE: 1.2,
    C.HEDGE: 1.2,
    C.PERSON: 0.5,
    C.CAR: 0.3,
    C.SIGN: 0.2,
}
TEXTURE_OCTAVES, TEXTURE_SEED, CLOUD_SEED = 2, 7, 11  # seeds: any two different integers
CLOUD_RGB = np.array([236.0, 236.0, 238.0])
CLOUD_FREQ = (4.0, 12.0)  # cells per radian of azimuth, per unit of elevation slope
FACING_SHADE = 0.25  # walls across the street are this much darker than walls along it
HAZE_DEPTH_M = 120.0  # depth at which haze reaches 1 - 1/e of its maximum
SKY_GRADIENT = 0.3  # the sky darkens by this much from the horizon to 45 degrees up
EGO_GRADIENT = 0.5  # the bonnet darkens by this much towards the bottom edge
# Where parts sit: in metres on facades, else as fractions of the surface (s along it, height fraction up it).
WINDOW_PERIOD_M, WINDOW_FLOOR_M, GROUND_FLOOR_M, WINDOW_SILL_M = 2.6, 3.2, 2.5, 0.9  # bays, storeys, shop floor
WINDOW_DUTY, ROOF_FRAC = (0.5, 0.55), 0.93  # window share of a bay's width and of a storey; no window above
CAR_BELT_FRAC = 0.05  # the windows start this far above the body's top
WHEEL_CENTRES, WHEEL_HALF_WIDTH, WHEEL_TOP = (0.2, 0.8), 0.09, 0.3
CAR_LAMP_ROWS, CAR_LAMP_OUTER = (0.3, 0.42), 0.62  # rear/front lamps: a band, at the outer ends of the width
LEGS_TOP, HEAD_BOTTOM = 0.47, 1.0 - HEAD_HEIGHT_FRAC  # a person: trousers below, shirt between, head above
LAMP_RADIUS = 0.35  # a traffic light holds three lamps stacked, each this fraction of a third of the box
SIGN_RIM = 0.09  # white border of a sign plate
JOINT_PERIOD_M, PLANK_PERIOD_M = 1.0, 0.2


@dataclass(frozen=True)
class Look:
    """A sequence's appearance, drawn once: the sensor's per-channel gain and the road and sky colour choices."""

    gain_rgb: np.ndarray  # (3,)
    ground_option: int
    sky_option: int


def draw_look(rng: np.random.Generator, style: Style) -> Look:
    """Exposure and colour cast within the style's jitter; the same number of draws for every style."""
    exposure = 1.0 + style.exposure_jitter * rng.uniform(-1.0, 1.0)
    cast = 1.0 + style.cast_jitter * rng.uniform(-1.0, 1.0, 3)
    return Look(style.cast * exposure * cast, int(rng.integers(N_OPTIONS)), int(rng.integers(N_OPTIONS)))


def _class_table(values: dict) -> np.ndarray:
    table = np.zeros(NUM_WORLD_CLASSES, dtype=np.float32)
    for cls, value in values.items():
        table[int(cls)] = value
    return table


def _colour_index(gb: GBuffer, option: np.ndarray) -> np.ndarray:
    """(P,) row of `_colour_table` for each of the P = H * W pixels: the class colour or a part painted over it."""
    cls, u, v = gb.cls.ravel(), gb.tex_m[..., 0].ravel(), gb.tex_m[..., 1].ravel()
    s, frac, profile = gb.local[..., 0].ravel(), gb.local[..., 1].ravel(), gb.profile.ravel()
    index = cls.astype(np.int64) * N_OPTIONS + option

    def put(pixels: np.ndarray, part: int, part_option=None) -> None:
        """Paint `part` over `pixels` (flat indices), in their own colour option unless one is given."""
        opt = option[pixels] if part_option is None else part_option
        index[pixels] = (NUM_WORLD_CLASSES + part) * N_OPTIONS + opt

    p = np.flatnonzero(cls == C.BUILDING)
    windows = stripes(u[p], WINDOW_PERIOD_M, WINDOW_DUTY[0]) & stripes(
        v[p] - WINDOW_SILL_M, WINDOW_FLOOR_M, WINDOW_DUTY[1]
    )
    put(p[windows & (v[p] > GROUND_FLOOR_M) & (frac[p] < ROOF_FRAC)], WINDOW)
    p = np.flatnonzero(cls == C.CAR)
    put(p[frac[p] > CAR_BODY_FRAC + CAR_BELT_FRAC], GLASS)
    wheel = np.min([np.abs(s[p] - centre) for centre in WHEEL_CENTRES], axis=0) < WHEEL_HALF_WIDTH
    put(p[(profile[p] == CAR_SIDE) & (frac[p] < WHEEL_TOP) & wheel], WHEEL)
    lamp_rows = (frac[p] > CAR_LAMP_ROWS[0]) & (frac[p] < CAR_LAMP_ROWS[1])
    put(p[(profile[p] == CAR_END) & lamp_rows & (np.abs(2 * s[p] - 1) > CAR_LAMP_OUTER)], LAMP, 0)  # red
    p = np.flatnonzero(cls == C.PERSON)
    put(p[frac[p] < LEGS_TOP], PANTS)
    put(p[frac[p] > HEAD_BOTTOM], SKIN)
    put(np.flatnonzero((cls == C.TREE) & (profile == RECT)), TRUNK)
    p = np.flatnonzero(cls == C.LIGHT)
    lamp_index = np.clip(2 - np.floor(frac[p] * 3), 0, 2).astype(np.int64)  # red on top, amber, green at the bottom
    in_lamp = np.abs(np.mod(frac[p] * 3, 1.0) - 0.5) < LAMP_RADIUS
    lamp = (np.abs(2 * s[p] - 1) < 2 * LAMP_RADIUS) & in_lamp
    lit = lamp & (lamp_index == np.floor(gb.tint.ravel()[p] * 3))
    put(p[lit], LAMP, lamp_index[lit])
    put(p[lamp & ~lit], WHEEL)  # an unlit lamp is as dark as rubber
    p = np.flatnonzero(cls == C.SIGN)
    rim = (np.abs(2 * s[p] - 1) > 1 - 2 * SIGN_RIM) | (frac[p] < SIGN_RIM) | (frac[p] > 1 - SIGN_RIM)
    put(p[rim], RIM)
    return index


def _shade(gb: GBuffer, style: Style) -> np.ndarray:
    """(P,) brightness factor: joints and planks, wall orientation, sky gradient, bonnet gradient, texture."""
    h, w = gb.cls.shape
    cls, u, v, code = gb.cls.ravel(), gb.tex_m[..., 0].ravel(), gb.tex_m[..., 1].ravel(), gb.sprite.ravel()
    shade = np.ones(h * w, dtype=np.float32)
    p = np.flatnonzero(cls == C.SIDEWALK)
    shade[p[~(stripes(u[p], JOINT_PERIOD_M, 0.94) & stripes(v[p], JOINT_PERIOD_M, 0.94))]] -= style.tile_contrast
    p = np.flatnonzero(cls == C.FENCE)
    shade[p[stripes(u[p], PLANK_PERIOD_M, 0.15)]] -= style.tile_contrast
    p = np.flatnonzero(code >= 0)
    shade[p] *= 1.0 - FACING_SHADE * (1.0 - gb.facing.ravel()[p])
    p = np.flatnonzero(code == SKY)
    shade[p] *= 1.0 - SKY_GRADIENT * np.clip(v[p], 0.0, 1.0)
    ego = (gb.sprite == EGO).reshape(h, w)
    if np.any(ego):
        below_edge = np.cumsum(ego, axis=0) / h  # fraction of H below the bonnet's edge, per pixel
        shade[ego.ravel()] *= 1.0 - EGO_GRADIENT * np.clip(below_edge[ego] / 0.15, 0.0, 1.0)
    if style.texture > 0:
        p = np.flatnonzero((code != SKY) & (code != EGO))
        freq = _class_table(TEXTURE_FREQ)[cls[p]]
        gain = _class_table(TEXTURE_GAIN)[cls[p]] * style.texture
        noise = fractal_noise(u[p] * freq, v[p] * freq, TEXTURE_SEED, TEXTURE_OCTAVES)
        shade[p] *= 1.0 + 2.0 * gain * (noise - 0.5)
    return shade


def paint(gb: GBuffer, style: Style, look: Look) -> np.ndarray:
    """(H, W, 3) float32 RGB in 0..255 (before the sensor): colours, parts, joints, shading, texture, clouds, haze."""
    h, w = gb.cls.shape
    code = gb.sprite.ravel()
    option = np.where(
        code >= 0, np.minimum(gb.tint.ravel() * N_OPTIONS, N_OPTIONS - 1).astype(np.int64), look.ground_option
    )
    option[code == SKY] = look.sky_option
    table = np.concatenate([style.palette.reshape(-1, 3), style.parts.reshape(-1, 3)]).astype(np.float32)
    rgb = table[_colour_index(gb, option)] * _shade(gb, style)[:, None]
    sky = np.flatnonzero(code == SKY)
    if style.clouds > 0 and len(sky):
        u, v = gb.tex_m[..., 0].ravel()[sky], gb.tex_m[..., 1].ravel()[sky]
        cloud = fractal_noise(u * CLOUD_FREQ[0], v * CLOUD_FREQ[1], CLOUD_SEED, TEXTURE_OCTAVES)
        amount = style.clouds * np.clip(3.0 * (cloud - 0.45), 0.0, 1.0)
        rgb[sky] += amount[:, None].astype(np.float32) * (CLOUD_RGB.astype(np.float32) - rgb[sky])
    if style.haze > 0:
        p = np.flatnonzero((code != SKY) & (code != EGO))
        far = style.haze * (1.0 - np.exp(-gb.depth_m.ravel()[p] / HAZE_DEPTH_M))
        rgb[p] += far[:, None].astype(np.float32) * (style.palette[C.SKY, look.sky_option].astype(np.float32) - rgb[p])
    return rgb.reshape(h, w, 3)


def sensor(rgb: np.ndarray, style: Style, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Exposure and colour cast, vignetting, lens blur and sensor noise; (H, W, 3) uint8 RGB."""
    h, w = rgb.shape[:2]
    out = rgb * look.gain_rgb.astype(np.float32)
    if style.vignette > 0:
        ys = (np.arange(h)[:, None] - (h - 1) / 2) / (h / 2)
        xs = (np.arange(w)[None, :] - (w - 1) / 2) / (w / 2)
        out = out * (1.0 - style.vignette * 0.5 * (xs**2 + ys**2)).astype(np.float32)[..., None]
    if style.blur_px > 0:
        out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), style.blur_px)
    if style.noise > 0:
        out = out + np.float32(style.noise) * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
