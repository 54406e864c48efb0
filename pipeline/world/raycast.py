"""Ray casting the 2.5D world: for every pixel, the surface it sees, at which depth, and where on that surface.

The camera only yaws, so all rays of one pixel column share one horizontal direction. Each column is traced as a
2D ray against the sprites' footprint segments; a sprite hit at camera depth t covers the rows whose rays pass
between its low and high edge at that depth. The nearest covering sprite wins; rows below the horizon that no
sprite covers see the ground plane, the others the sky (at infinity). `flow_gt.py` turns depths into motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.world.camera import Pinhole, Pose, column_rays_xz
from pipeline.world.classes import WorldClass
from pipeline.world.sprites import profile_interval
from pipeline.world.street import Street, ground_class

NEAR_M, FAR_M = 0.3, 170.0  # sprites are seen between these camera depths
FRUSTUM_MARGIN = 0.1  # extra x/z slope kept when culling sprites outside the horizontal field of view
GROUND, SKY, EGO = -1, -2, -3  # GBuffer.sprite codes of pixels that show no sprite
ROW_LIMIT = 1e6  # clip row numbers of surfaces seen at grazing depth before converting them to integers
EGO_DEPTH_M = 1.0  # nominal depth of the bonnet (it is fixed to the camera: its flow is zero whatever it is)


@dataclass(frozen=True)
class GBuffer:
    """Per-pixel geometry of one frame, all (H, W, ...) arrays."""

    cls: np.ndarray  # uint8 WorldClass
    sprite: np.ndarray  # int32 index into street.sprites, or GROUND / SKY / EGO
    instance: np.ndarray  # int32 object id, 0 for stuff
    depth_m: np.ndarray  # float64 camera depth z (inf for the sky): the pixel's ray meets its surface there
    tex_m: np.ndarray  # (H, W, 2) float32 texture coordinates, metres: ground (X, Z); sprite (along + offset, Y);
    # sky (azimuth in radians, elevation slope)
    local: np.ndarray  # (H, W, 2) float32 sprite's (s, height fraction) in [0, 1]; ground (m beyond the road edge, 0)
    profile: np.ndarray  # int8 sprite profile, -1 elsewhere
    tint: np.ndarray  # float32 per-object colour choice in [0, 1)
    facing: np.ndarray  # float32 |normal . X|: 1 for a wall along the street, 0 across it; 1 off sprites


def ego_mask(size_hw: tuple[int, int], hood_frac: float) -> np.ndarray:
    """(H, W) bool bonnet at the bottom: `hood_frac` of H tall at the centre, lower towards the sides."""
    h, w = size_hw
    u = (np.arange(w) - (w - 1) / 2) / (0.6 * w)  # the curve reaches the bottom edge beyond the image sides
    top = h - hood_frac * h * np.clip(1.0 - u**2, 0.0, 1.0)
    return (np.arange(h)[:, None] >= top[None, :]) & (hood_frac > 0)


def _visible(a: np.ndarray, b: np.ndarray, cam: Pinhole, pose: Pose) -> np.ndarray:
    """Indices of footprints that may be seen: not entirely behind, too far, or beside the view wedge."""
    limit = cam.size_hw[1] / 2 / cam.focal_px + FRUSTUM_MARGIN
    depth, lateral = [], []
    for p in (a, b):
        rel = p - np.array([pose.x, pose.z])
        depth.append(rel @ pose.forward_xz)
        lateral.append(rel @ pose.right_xz)
    keep = (np.maximum(*depth) > NEAR_M) & (np.minimum(*depth) < FAR_M)
    for sign in (1.0, -1.0):  # a segment with both ends in one outer half-plane lies outside the convex wedge
        keep &= ~(
            (sign * lateral[0] > limit * np.maximum(depth[0], NEAR_M))
            & (sign * lateral[1] > limit * np.maximum(depth[1], NEAR_M))
        )
    return np.flatnonzero(keep)


def _column_hits(cam: Pinhole, pose: Pose, rays: np.ndarray, a, b, street: Street, idx: np.ndarray):
    """(W, S) depth, footprint position s and covered row range of each column ray against each sprite."""
    sp = street.sprites
    edge = b - a  # (S, 2)
    to_a = a - np.array([pose.x, pose.z])
    # Solve pose + t * ray = a + s * edge with 2D cross products: t = (to_a x edge) / (ray x edge), etc.
    denom = rays[:, :1] * edge[None, :, 1] - rays[:, 1:] * edge[None, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (to_a[:, 0] * edge[:, 1] - to_a[:, 1] * edge[:, 0])[None, :] / denom
        s = (to_a[None, :, 0] * rays[:, 1:] - to_a[None, :, 1] * rays[:, :1]) / denom
    lo, hi = profile_interval(sp.profile[idx][None], sp.y_lo[idx][None], sp.y_hi[idx][None], s)
    with np.errstate(divide="ignore", invalid="ignore"):
        row_top = cam.center_uv[1] + (cam.height_m - hi) * cam.focal_px / t
        row_bottom = cam.center_uv[1] + (cam.height_m - lo) * cam.focal_px / t
    ok = np.isfinite(t) & (t > NEAR_M) & (t < FAR_M) & (s >= 0) & (s < 1) & (hi > lo)
    ok &= (row_bottom >= 0) & (row_top <= cam.size_hw[0] - 1)
    return np.where(ok, t, np.inf), s, row_top, row_bottom


def _nearest_layers(t, s, row_top, row_bottom, max_layers: int):
    """The `max_layers` nearest hits of each column, farthest first: (W, S) arrays -> (W, K), plus their columns.

    Rows are rounded inwards to the pixel rows whose centres the surface covers.
    """
    if t.shape[1] > max_layers:
        pick = np.argpartition(t, max_layers - 1, axis=1)[:, :max_layers]
        pick = np.take_along_axis(pick, np.argsort(-np.take_along_axis(t, pick, 1), axis=1), 1)
    else:
        pick = np.argsort(-t, axis=1)
    t, s, row_top, row_bottom = (np.take_along_axis(x, pick, 1) for x in (t, s, row_top, row_bottom))
    hit = np.isfinite(t)
    first_row = np.where(hit, np.ceil(np.clip(row_top, -1, ROW_LIMIT)), 1).astype(np.int32)
    last_row = np.where(hit, np.floor(np.clip(row_bottom, -1, ROW_LIMIT)), 0).astype(np.int32)  # empty if no hit
    return t, s, first_row, last_row, pick


def _paint(first_row: np.ndarray, last_row: np.ndarray, h: int) -> np.ndarray:
    """(H, W) index of the layer seen at each pixel (-1: none), painting the (W, K) layers farthest first."""
    rows = np.arange(h, dtype=np.int32)[:, None]
    winner = np.full((h, first_row.shape[0]), -1, dtype=np.int32)
    for k in range(first_row.shape[1]):
        winner[(rows >= first_row[None, :, k]) & (rows <= last_row[None, :, k])] = k
    return winner


def trace(cam: Pinhole, pose: Pose, t_s: float, street: Street, max_layers: int, ego: np.ndarray) -> GBuffer:
    """The G-buffer of the frame seen from `pose` at time `t_s`; `ego` is the (H, W) bonnet mask."""
    h, w = cam.size_hw
    cv, f = cam.center_uv[1], cam.focal_px
    rays = column_rays_xz(cam, pose)  # (W, 2), forward component 1
    sp = street.sprites
    a_all, b_all = sp.footprints_at(t_s)
    idx = _visible(a_all, b_all, cam, pose)
    nothing_in_view = len(idx) == 0
    if nothing_in_view:  # trace one sprite and discard its hits, so that the arrays below keep their shapes
        idx = np.zeros(1, dtype=np.int64)
    t, s, row_top, row_bottom = _column_hits(cam, pose, rays, a_all[idx], b_all[idx], street, idx)
    if nothing_in_view:
        t[:] = np.inf
    t, s, first_row, last_row, pick = _nearest_layers(t, s, row_top, row_bottom, max_layers)
    winner = _paint(first_row, last_row, h)

    # Per pixel: layer K (appended, empty) stands for "no sprite", so one gather serves every pixel.
    rows = np.arange(h, dtype=np.float64)[:, None]
    cols = np.arange(w)[None, :]
    layer = np.where(winner >= 0, winner, t.shape[1])
    on_sprite = winner >= 0
    hit_t = np.concatenate([t, np.full((w, 1), np.inf)], axis=1)[cols, layer]
    along = np.concatenate([s, np.zeros((w, 1))], axis=1)[cols, layer]
    n = np.concatenate([idx[pick], np.zeros((w, 1), dtype=np.int64)], axis=1)[cols, layer]  # sprite (0: none)
    with np.errstate(divide="ignore"):
        ground_t = np.where(rows > cv, f * cam.height_m / (rows - cv), np.inf)  # the ground plane, below the horizon
    depth = np.where(on_sprite, hit_t, ground_t)
    sky = np.isinf(depth)
    reach = np.where(sky, 0.0, depth)
    x = pose.x + reach * rays[None, :, 0]
    z = pose.z + reach * rays[None, :, 1]
    y = np.where(on_sprite, cam.height_m - (rows - cv) * reach / f, 0.0)

    edge = b_all - a_all
    length = np.hypot(edge[:, 0], edge[:, 1])
    facing = np.abs(edge[:, 1]) / np.maximum(length, 1e-9)
    inv_span = 1.0 / np.maximum(sp.y_hi - sp.y_lo, 1e-9)
    azimuth = np.arctan2(rays[:, 0], rays[:, 1])[None, :]
    slope = -(rows - cv) / f / np.hypot(rays[:, 0], rays[:, 1])[None, :]  # the sky's texture: direction only
    tex_u = np.where(on_sprite, along * length[n] + sp.tex_offset[n], np.where(sky, azimuth, x))
    tex_v = np.where(on_sprite, y, np.where(sky, slope, z))
    local_s = np.where(on_sprite, along, np.abs(x) - street.road_half_m)
    local_f = np.where(on_sprite, (y - sp.y_lo[n]) * inv_span[n], 0.0)
    cls = np.where(on_sprite, sp.cls[n], np.where(sky, np.uint8(WorldClass.SKY), ground_class(street, x, z)))
    code = np.where(on_sprite, n, np.where(sky, SKY, GROUND)).astype(np.int32)
    instance = np.where(on_sprite & ~ego, sp.instance[n], 0).astype(np.int32)
    cls[ego], code[ego], depth[ego] = WorldClass.EGO, EGO, EGO_DEPTH_M
    return GBuffer(
        cls=cls.astype(np.uint8),
        sprite=code,
        instance=instance,
        depth_m=depth,
        tex_m=np.stack([tex_u, tex_v], axis=-1).astype(np.float32),
        local=np.stack([local_s, local_f], axis=-1).astype(np.float32),
        profile=np.where(on_sprite, sp.profile[n], -1).astype(np.int8),
        tint=np.where(on_sprite, sp.tint[n], 0.0).astype(np.float32),
        facing=np.where(on_sprite, facing[n], 1.0).astype(np.float32),
    )
