"""Exact optical flow of the demo world: where each pixel's surface point is seen in another frame."""

from __future__ import annotations

import numpy as np

from pipeline.world.camera import Pinhole, Pose, column_rays_xz, project
from pipeline.world.raycast import EGO, SKY, GBuffer
from pipeline.world.street import Street


def world_points(cam: Pinhole, pose: Pose, gbuffer: GBuffer) -> np.ndarray:
    """(H, W, 3) world point (X, Y, Z) seen at each pixel: pose + depth * ray; for the sky, the ray's direction."""
    h, w = cam.size_hw
    rays = column_rays_xz(cam, pose)  # (W, 2), forward component 1
    sky = gbuffer.sprite == SKY
    depth = np.where(sky, 1.0, gbuffer.depth_m)
    up = -(np.arange(h, dtype=np.float64)[:, None] - cam.center_uv[1]) / cam.focal_px  # Y per unit of depth
    x = np.where(sky, 0.0, pose.x) + depth * rays[None, :, 0]
    z = np.where(sky, 0.0, pose.z) + depth * rays[None, :, 1]
    y = np.where(sky, 0.0, cam.height_m) + depth * up
    return np.stack([x, y, z], axis=-1)


def ground_truth_flow(
    cam: Pinhole, street: Street, gbuffer_a: GBuffer, pose_a: Pose, t_a: float, pose_b: Pose, t_b: float
) -> np.ndarray:
    """F_{a->b} on frame a's grid, (2, H, W) float32 pixels (x, y): project_b(P + v (t_b - t_a)) - p.

    P is the world point seen at pixel p of frame a, v the velocity of its object (0 for static scenery).
    The sky is at infinity (only the camera's rotation moves it); the bonnet is fixed to the camera (zero flow).
    Occluded points get the flow of where they would be seen: a forward-backward check finds them.
    """
    h, w = cam.size_hw
    points = world_points(cam, pose_a, gbuffer_a)
    on_sprite = gbuffer_a.sprite >= 0
    velocity = np.where(on_sprite[..., None], street.sprites.vel_xz[np.maximum(gbuffer_a.sprite, 0)], 0.0)
    points[..., 0] += velocity[..., 0] * (t_b - t_a)
    points[..., 2] += velocity[..., 1] * (t_b - t_a)
    uv_b = project(cam, pose_b, points, at_infinity=gbuffer_a.sprite == SKY)
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)), axis=-1)
    flow = uv_b - grid  # (H, W, 2), as the projection computes it
    flow[gbuffer_a.sprite == EGO] = 0.0
    return np.ascontiguousarray(np.moveaxis(flow, -1, 0), dtype=np.float32)
