"""A procedural street along +Z: the ground's layout, buildings, vegetation, street furniture, people and traffic.

Right-hand traffic: the ego vehicle drives in the lane centred at X = +LANE_CENTRE_M, oncoming cars at -LANE_CENTRE_M.
Every street of every domain comes from the same generator, so class shapes and layout statistics are shared; the
domains differ only in how the surfaces are painted (`render.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.world.camera import Trajectory
from pipeline.world.classes import WorldClass as C
from pipeline.world.sprites import ELLIPSE, PERSON, RECT, SpriteBuilder, Sprites

LANE_CENTRE_M = 1.75  # 3.5 m lanes either side of the centre line
ROAD_HALF_M = (3.8, 6.5)  # half the road's width, drawn per street
SIDEWALK_M = (2.0, 4.0)
CURB_M = 0.3
VERGE_M, VERGE_SHARE = (1.0, 2.5), 0.5  # half of the streets have a grass verge between curb and sidewalk
PARKING_ROAD_HALF_M, PARKING_SHARE = 5.2, 0.7  # parked cars fit beside the two lanes on a road this wide
MARK_HALF_WIDTH_M = 0.08
DASH_PERIOD_M, DASH_LENGTH_M = 9.0, 3.0  # centre line: 3 m dashes every 9 m
EDGE_LINE_INSET_M = 0.3
BEHIND_M, AHEAD_M = 25.0, 170.0  # scenery is generated this far behind the first and beyond the last camera position
TRAJECTORY_SAMPLES = 200  # camera positions checked when placing traffic and crossing people
# Blocks of buildings (metres): length along the street, height, depth; some are set back behind a front garden
# (with a hedge or a fence), and some blocks are missing, which opens the view to the backdrop.
BLOCK_LENGTH_M, BLOCK_HEIGHT_M, BLOCK_DEPTH_M = (8.0, 30.0), (6.0, 24.0), (8.0, 15.0)
BLOCK_GAP_SHARE, BLOCK_GAP_M = 0.2, (3.0, 12.0)
SETBACK_SHARE, SETBACK_M, GARDEN_EDGE_SHARE, HEDGE_SHARE = 0.5, (1.5, 5.0), 0.6, 0.6
HEDGE_M, FENCE_M = (0.7, 1.3), (1.0, 1.8)  # heights
BACKDROP_X_M = (38.0, 48.0)  # a far row of buildings and vegetation closes the view between the street's blocks
BACKDROP_LENGTH_M, BACKDROP_BUILDING_M, BACKDROP_GREEN_M = (15.0, 45.0), (12.0, 35.0), (8.0, 16.0)
BACKDROP_BUILDING_SHARE = 0.7
# Street furniture: spacing along the street (metres) and sizes.
TREE_LINED_SHARE, TREE_SPACING_M = 0.65, (7.0, 16.0)
CROWN_BOTTOM_M, CROWN_WIDTH_M, CROWN_HEIGHT_M, TRUNK_WIDTH_M = (1.8, 3.0), (2.5, 4.5), (2.5, 5.0), 0.3
LAMP_SPACING_M, LAMP_HEIGHT_M, LAMP_WIDTH_M = (20.0, 38.0), (6.0, 8.5), 0.18
SIGN_SPACING_M, SIGN_TOP_M, SIGN_PLATE_M, SIGN_POLE_WIDTH_M = (12.0, 40.0), (2.3, 2.9), (0.5, 0.8), 0.08
LIGHT_SPACING_M, LIGHT_TOP_M, LIGHT_BOX_M, LIGHT_POLE_WIDTH_M = (35.0, 90.0), (3.6, 4.4), (0.35, 1.0), 0.15
# Cars and people.
CAR_WIDTH_M, CAR_LENGTH_M, CAR_HEIGHT_M = (1.7, 1.9), (3.8, 4.8), (1.35, 1.7)
PARKED_GAP_M, LEADING_CARS, LEADING_GAP_M = (0.8, 12.0), 4, (8.0, 40.0)
ONCOMING_MPS, ONCOMING_GAP_M = (6.0, 14.0), (15.0, 60.0)
LANE_JITTER_M = 0.2
SAFE_GAP_M = 6.0  # no car or person comes closer than this to the camera along the lane
PERSON_WIDTH_M, PERSON_HEIGHT_M, WALK_MPS = 0.5, (1.55, 1.9), (0.8, 1.7)
WALKER_SPACING_M, STANDING_SHARE = (6.0, 30.0), 0.3
CROSSING_EVERY_S, CROSSING_AHEAD_M = 4.0, (8.0, 50.0)


@dataclass(frozen=True)
class Street:
    """One street: widths of its ground bands and its sprites."""

    road_half_m: float
    sidewalk_m: float
    verge_m: float  # grass strip between the curb and the sidewalk (0: none)
    sprites: Sprites


def ground_class(street: Street, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """World class of ground points (X, Z) in metres: road, lane marks, curb, verge, sidewalk, terrain beyond."""
    ax = np.abs(x)
    edge = street.road_half_m
    cls = np.full(ax.shape, C.TERRAIN, dtype=np.uint8)
    sidewalk_in = edge + CURB_M + street.verge_m
    cls[(ax >= sidewalk_in) & (ax < sidewalk_in + street.sidewalk_m)] = C.SIDEWALK
    cls[ax < edge + CURB_M] = C.CURB
    cls[ax < edge] = C.ROAD
    dash = (ax < MARK_HALF_WIDTH_M) & (np.mod(z, DASH_PERIOD_M) < DASH_LENGTH_M)
    edge_line = np.abs(ax - (edge - EDGE_LINE_INSET_M)) < MARK_HALF_WIDTH_M
    cls[dash | edge_line] = C.LANE_MARK
    return cls


def build_street(rng: np.random.Generator, trajectory: Trajectory, duration_s: float) -> Street:
    """A random street around a camera that follows `trajectory` for `duration_s` seconds."""
    times = np.linspace(0.0, duration_s, TRAJECTORY_SAMPLES)
    poses = [trajectory.pose(t) for t in times]
    cam_x, cam_z = np.array([p.x for p in poses]), np.array([p.z for p in poses])
    z_from, z_to = cam_z.min() - BEHIND_M, cam_z.max() + AHEAD_M
    road_half, sidewalk = rng.uniform(*ROAD_HALF_M), rng.uniform(*SIDEWALK_M)
    verge = rng.uniform(*VERGE_M) if rng.random() < VERGE_SHARE else 0.0
    b = SpriteBuilder(rng)
    for side in (-1.0, 1.0):
        _buildings(b, side, road_half + CURB_M + verge + sidewalk, z_from, z_to)
        _backdrop(b, side, z_from, z_to)
        _furniture(b, side, road_half + CURB_M, z_from, z_to)
        _walkers(b, side, road_half + CURB_M + verge, sidewalk, z_from, z_to, duration_s)
        if road_half >= PARKING_ROAD_HALF_M and rng.random() < PARKING_SHARE:
            _parked_cars(b, side * (road_half - 1.05), z_from, z_to)
    _traffic(b, times, cam_z, z_from, z_to, trajectory)
    _crossing_people(b, times, cam_x, cam_z, duration_s)
    return Street(road_half, sidewalk, verge, b.build())


def _buildings(b: SpriteBuilder, side: float, street_edge: float, z_from: float, z_to: float) -> None:
    """Blocks along one side: facade plus the two end walls, with gaps, set-backs, hedges and fences."""
    rng, z = b.rng, z_from
    while z < z_to:
        length = rng.uniform(*BLOCK_LENGTH_M)
        if rng.random() < BLOCK_GAP_SHARE:
            z += rng.uniform(*BLOCK_GAP_M)
            continue
        setback = rng.uniform(*SETBACK_M) if rng.random() < SETBACK_SHARE else 0.0
        x_in, depth, height = street_edge + setback, rng.uniform(*BLOCK_DEPTH_M), rng.uniform(*BLOCK_HEIGHT_M)
        tint = rng.random()
        b.add((side * x_in, z), (side * x_in, z + length), 0.0, height, C.BUILDING, tint=tint)
        for z_end in (z, z + length):
            b.add((side * x_in, z_end), (side * (x_in + depth), z_end), 0.0, height, C.BUILDING, tint=tint)
        if setback > 0 and rng.random() < GARDEN_EDGE_SHARE:
            kind = C.HEDGE if rng.random() < HEDGE_SHARE else C.FENCE
            top = rng.uniform(*(HEDGE_M if kind == C.HEDGE else FENCE_M))
            x_front = side * (street_edge + 0.3)
            b.add((x_front, z + 0.5), (x_front, z + length - 0.5), 0.0, top, kind)
        z += length


def _backdrop(b: SpriteBuilder, side: float, z_from: float, z_to: float) -> None:
    """A continuous far row of tall buildings and vegetation behind the street's blocks."""
    rng, z = b.rng, z_from
    while z < z_to:
        length, x = rng.uniform(*BACKDROP_LENGTH_M), side * rng.uniform(*BACKDROP_X_M)
        if rng.random() < BACKDROP_BUILDING_SHARE:
            b.add((x, z), (x, z + length), 0.0, rng.uniform(*BACKDROP_BUILDING_M), C.BUILDING)
        else:
            b.add((x, z), (x, z + length), 0.0, rng.uniform(*BACKDROP_GREEN_M), C.HEDGE)
        z += length


def _furniture(b: SpriteBuilder, side: float, curb_out: float, z_from: float, z_to: float) -> None:
    """Trees, street lamps, signs and traffic lights along the curb (on the verge where there is one)."""
    rng = b.rng
    # Parts that belong together sit a few centimetres apart along Z, the front one facing the camera.
    if rng.random() < TREE_LINED_SHARE:
        for z in _positions(rng, z_from, z_to, TREE_SPACING_M):
            x, crown_lo = side * (curb_out + rng.uniform(0.6, 1.1)), rng.uniform(*CROWN_BOTTOM_M)
            crown_hi = crown_lo + rng.uniform(*CROWN_HEIGHT_M)
            b.billboard(x, z, rng.uniform(*CROWN_WIDTH_M), crown_lo, crown_hi, C.TREE, ELLIPSE)
            b.billboard(x, z + 0.05, TRUNK_WIDTH_M, 0.0, crown_lo + 0.6, C.TREE)  # trunk, behind its crown
    for z in _positions(rng, z_from, z_to, LAMP_SPACING_M):  # street lamps
        b.billboard(side * (curb_out + 0.35), z, LAMP_WIDTH_M, 0.0, rng.uniform(*LAMP_HEIGHT_M), C.POLE)
    for z in _positions(rng, z_from, z_to, SIGN_SPACING_M):  # signs face the traffic
        x, top, plate = side * (curb_out + 0.5), rng.uniform(*SIGN_TOP_M), rng.uniform(*SIGN_PLATE_M)
        b.billboard(x, z + 0.05, SIGN_POLE_WIDTH_M, 0.0, top, C.POLE)
        b.billboard(x, z, plate, top - plate, top, C.SIGN, ELLIPSE if rng.random() < 0.5 else RECT)
    for z in _positions(rng, z_from, z_to, LIGHT_SPACING_M):  # traffic lights
        x, top = side * (curb_out + 0.4), rng.uniform(*LIGHT_TOP_M)
        box_w, box_h = LIGHT_BOX_M
        b.billboard(x, z + 0.1, LIGHT_POLE_WIDTH_M, 0.0, top - 0.2, C.POLE)
        b.billboard(x, z, box_w, top - box_h, top, C.LIGHT)


def _walkers(b: SpriteBuilder, side, sidewalk_in, sidewalk, z_from, z_to, duration_s) -> None:
    """People standing or walking along one sidewalk (they may walk in from beyond the generated range)."""
    rng, reach = b.rng, WALK_MPS[1] * duration_s
    for z in _positions(rng, z_from - reach, z_to + reach, WALKER_SPACING_M):
        speed = 0.0 if rng.random() < STANDING_SHARE else rng.choice([-1.0, 1.0]) * rng.uniform(*WALK_MPS)
        x = side * (sidewalk_in + rng.uniform(0.3, max(sidewalk - 0.3, 0.4)))
        b.billboard(
            x, z, PERSON_WIDTH_M, 0.0, rng.uniform(*PERSON_HEIGHT_M), C.PERSON, PERSON, (0.0, speed), b.new_instance()
        )


def _parked_cars(b: SpriteBuilder, x: float, z_from: float, z_to: float) -> None:
    """A row of parked cars along the road's edge."""
    rng, z = b.rng, z_from
    while z < z_to:
        length = rng.uniform(*CAR_LENGTH_M)
        b.box(x, z + length / 2, rng.uniform(*CAR_WIDTH_M), length, rng.uniform(*CAR_HEIGHT_M), C.CAR)
        z += length + rng.uniform(*PARKED_GAP_M)


def _traffic(b: SpriteBuilder, times, cam_z, z_from, z_to, trajectory: Trajectory) -> None:
    """Cars driving away in the ego lane (never faster-approaching than the camera) and oncoming cars."""
    rng, duration = b.rng, times[-1]
    max_ego_mps = max(trajectory.speed_mps, trajectory.speed_mps + trajectory.accel_mps2 * duration)
    z = cam_z[0] + SAFE_GAP_M + rng.uniform(*LEADING_GAP_M)
    for _ in range(rng.integers(0, LEADING_CARS)):
        length, speed = rng.uniform(*CAR_LENGTH_M), max_ego_mps + rng.uniform(0.5, 3.0)
        b.box(
            LANE_CENTRE_M + rng.uniform(-LANE_JITTER_M, LANE_JITTER_M),
            z + length / 2,
            rng.uniform(*CAR_WIDTH_M),
            length,
            rng.uniform(*CAR_HEIGHT_M),
            C.CAR,
            (0.0, speed),
        )
        z += length + rng.uniform(*LEADING_GAP_M)
    speed = rng.uniform(*ONCOMING_MPS)
    for z in _positions(rng, z_from, z_to + speed * duration, ONCOMING_GAP_M):
        b.box(
            -LANE_CENTRE_M + rng.uniform(-LANE_JITTER_M, LANE_JITTER_M),
            z,
            rng.uniform(*CAR_WIDTH_M),
            rng.uniform(*CAR_LENGTH_M),
            rng.uniform(*CAR_HEIGHT_M),
            C.CAR,
            (0.0, -speed),
        )


def _crossing_people(b: SpriteBuilder, times, cam_x, cam_z, duration_s) -> None:
    """People crossing the road ahead; one who would be in the camera's path as it passes is not placed."""
    rng = b.rng
    for _ in range(int(duration_s / CROSSING_EVERY_S) + int(rng.integers(0, 3))):
        speed, t_cross = rng.choice([-1.0, 1.0]) * rng.uniform(*WALK_MPS), rng.uniform(0.0, duration_s)
        z = np.interp(t_cross, times, cam_z) + rng.uniform(*CROSSING_AHEAD_M)
        x_of_t = speed * (times - t_cross)  # at X = 0 (the centre line) at t_cross
        passing = (cam_z > z - SAFE_GAP_M) & (cam_z < z + 1.0)
        if np.any(passing & (np.abs(x_of_t - cam_x) < 1.5)):
            continue
        b.billboard(
            -speed * t_cross,
            z,
            PERSON_WIDTH_M,
            0.0,
            rng.uniform(*PERSON_HEIGHT_M),
            C.PERSON,
            PERSON,
            (speed, 0.0),
            b.new_instance(),
        )


def _positions(rng: np.random.Generator, z_from: float, z_to: float, spacing_m: tuple[float, float]) -> np.ndarray:
    """Positions along the street from a random start, with uniformly random spacing."""
    z = z_from + rng.uniform(0.0, spacing_m[1])
    out = []
    while z < z_to:
        out.append(z)
        z += rng.uniform(*spacing_m)
    return np.array(out)
