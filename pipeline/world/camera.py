"""Pinhole camera on a moving vehicle: intrinsics, pose along a trajectory, projection of world points.

World frame (metres): X right of the street axis, Y up (ground at Y = 0), Z along the street. Camera frame:
x right, y down, z forward; the camera only yaws about the vertical (no pitch, no roll), so a vertical line in
the world stays a pixel column: that is what lets `raycast.py` trace one 2D ray per column.
Pixel (u, v) is the centre of column u, row v, the convention of `pipeline.flow.warp`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_DEPTH_M = 0.05  # points closer than this (or behind) are projected as if at this depth: they leave the view


@dataclass(frozen=True)
class Pinhole:
    """Intrinsics: image size, focal length in pixels, principal point, mounting height above the ground."""

    size_hw: tuple[int, int]
    focal_px: float
    center_uv: tuple[float, float]  # principal point; its row is the horizon since the camera does not pitch
    height_m: float

    @classmethod
    def from_fov(cls, size_hw: tuple[int, int], hfov_deg: float, height_m: float, horizon_frac: float) -> Pinhole:
        """Camera whose horizontal field of view is `hfov_deg` and whose horizon lies at `horizon_frac` of H."""
        h, w = size_hw
        focal_px = 0.5 * w / math.tan(math.radians(hfov_deg) / 2)
        return cls((h, w), focal_px, ((w - 1) / 2, horizon_frac * (h - 1)), height_m)


@dataclass(frozen=True)
class Pose:
    """Camera position on the ground plane (x, z) in metres and yaw in radians (positive turns towards +X)."""

    x: float
    z: float
    yaw: float

    @property
    def forward_xz(self) -> np.ndarray:
        """(2,) unit viewing direction on the ground plane (X, Z)."""
        return np.array([math.sin(self.yaw), math.cos(self.yaw)])

    @property
    def right_xz(self) -> np.ndarray:
        """(2,) unit direction of the image's +x axis on the ground plane (X, Z)."""
        return np.array([math.cos(self.yaw), -math.sin(self.yaw)])


@dataclass(frozen=True)
class Trajectory:
    """Ego-motion: forward speed with constant acceleration, a slow lateral sway and a small periodic yaw."""

    x0: float
    z0: float
    speed_mps: float
    accel_mps2: float
    sway_m: float
    yaw_rad: float
    period_s: float
    phase: float

    def pose(self, t_s: float) -> Pose:
        """The camera pose at time `t_s` (seconds from the start of the sequence)."""
        angle = 2 * math.pi * t_s / self.period_s + self.phase
        z = self.z0 + self.speed_mps * t_s + 0.5 * self.accel_mps2 * t_s**2
        return Pose(self.x0 + self.sway_m * math.sin(angle), z, self.yaw_rad * math.cos(angle))


def column_rays_xz(cam: Pinhole, pose: Pose) -> np.ndarray:
    """(W, 2) horizontal world direction of each column's rays, scaled so that the forward component is 1.

    A point at camera depth z_cam along column u lies at pose + z_cam * ray[u].
    """
    slope = (np.arange(cam.size_hw[1]) - cam.center_uv[0]) / cam.focal_px  # x_cam / z_cam
    return pose.forward_xz[None, :] + slope[:, None] * pose.right_xz[None, :]


def row_heights(cam: Pinhole, depth_m: np.ndarray) -> np.ndarray:
    """World height Y of each row's ray at camera depth `depth_m` (..., W): (H, ...) via y_cam = (v - cv) z / f."""
    rows = np.arange(cam.size_hw[0], dtype=np.float64).reshape((-1,) + (1,) * np.ndim(depth_m))
    return cam.height_m - (rows - cam.center_uv[1]) * depth_m / cam.focal_px


def project(cam: Pinhole, pose: Pose, points: np.ndarray, at_infinity: np.ndarray | None = None) -> np.ndarray:
    """(..., 3) world points (X, Y, Z) -> (..., 2) pixel coordinates (u, v).

    Where `at_infinity` is true the point is a direction (sky): only the camera's rotation moves it.
    """
    rel_x = points[..., 0] - pose.x
    rel_z = points[..., 2] - pose.z
    rel_y = points[..., 1] - cam.height_m
    if at_infinity is not None:
        rel_x = np.where(at_infinity, points[..., 0], rel_x)
        rel_z = np.where(at_infinity, points[..., 2], rel_z)
        rel_y = np.where(at_infinity, points[..., 1], rel_y)
    fx, fz = pose.forward_xz
    rx, rz = pose.right_xz
    z_cam = np.maximum(rel_x * fx + rel_z * fz, MIN_DEPTH_M)
    x_cam = rel_x * rx + rel_z * rz
    y_cam = -rel_y
    u = cam.center_uv[0] + cam.focal_px * x_cam / z_cam
    v = cam.center_uv[1] + cam.focal_px * y_cam / z_cam
    return np.stack([u, v], axis=-1)
