"""A shot: one recorded sequence (camera, ego-motion, street, look), and rendering one of its frames."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.world.camera import Pinhole, Trajectory
from pipeline.world.raycast import GBuffer, ego_mask, trace
from pipeline.world.render import Look, draw_look, paint, sensor
from pipeline.world.street import LANE_CENTRE_M, Street, build_street
from pipeline.world.styles import Style

SPEED_MPS = (5.0, 13.0)  # 18-47 km/h, urban driving
MIN_SPEED_MPS = 3.0  # braking never brings a sequence below this
MAX_ACCEL_MPS2 = 1.0
LANE_OFFSET_M, SWAY_M = 0.25, 0.3  # the camera keeps within its lane
MAX_YAW_DEG, YAW_PERIOD_S = 2.5, (3.0, 8.0)  # gentle steering
CAMERA_HEIGHT_M = (1.3, 1.6)  # windscreen-mounted camera
HORIZON_FRAC = 0.45  # horizon row / (H - 1): a little more road than sky, as in Cityscapes
STREET_ORIGIN_M = 1000.0  # sequences start at a random Z in [0, this): textures differ between streets


@dataclass(frozen=True)
class Shot:
    """Everything fixed for one sequence."""

    cam: Pinhole
    trajectory: Trajectory
    street: Street
    ego: np.ndarray  # (H, W) bool bonnet mask
    look: Look


def draw_trajectory(rng: np.random.Generator, duration_s: float) -> Trajectory:
    """Ego-motion along the ego lane: a speed per sequence, a little acceleration, sway and yaw."""
    speed = rng.uniform(*SPEED_MPS)
    accel = rng.uniform(-1.0, 1.0) * min(MAX_ACCEL_MPS2, (speed - MIN_SPEED_MPS) / max(duration_s, 1.0))
    return Trajectory(
        x0=LANE_CENTRE_M + rng.uniform(-LANE_OFFSET_M, LANE_OFFSET_M),
        z0=rng.uniform(0.0, STREET_ORIGIN_M),
        speed_mps=speed,
        accel_mps2=accel,
        sway_m=rng.uniform(0.0, SWAY_M),
        yaw_rad=math.radians(rng.uniform(0.0, MAX_YAW_DEG)),
        period_s=rng.uniform(*YAW_PERIOD_S),
        phase=rng.uniform(0.0, 2 * math.pi),
    )


def draw_shot(
    rng: np.random.Generator,
    size_wh: tuple[int, int],
    hfov_deg: float,
    duration_s: float,
    hood_frac: float,
    style: Style,
) -> Shot:
    """A random sequence of `duration_s` seconds seen by a `size_wh` camera, painted in `style`."""
    trajectory = draw_trajectory(rng, duration_s)
    street = build_street(rng, trajectory, duration_s)
    cam = Pinhole.from_fov((size_wh[1], size_wh[0]), hfov_deg, rng.uniform(*CAMERA_HEIGHT_M), HORIZON_FRAC)
    return Shot(cam, trajectory, street, ego_mask(cam.size_hw, hood_frac), draw_look(rng, style))


def render_frame(
    shot: Shot, t_s: float, style: Style, max_layers: int, noise_rng: np.random.Generator
) -> tuple[np.ndarray, GBuffer]:
    """(H, W, 3) uint8 RGB frame at time `t_s` and its G-buffer (classes, instances, geometry for the flow)."""
    gbuffer = trace(shot.cam, shot.trajectory.pose(t_s), t_s, shot.street, max_layers, shot.ego)
    return sensor(paint(gbuffer, style, shot.look), style, shot.look, noise_rng), gbuffer
