"""Flow pictures in the Middlebury colour coding (Baker et al., IJCV 2011): hue = direction, saturation = magnitude.

The wheel has 55 colours in six ramps (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta 13,
magenta-red 6). A flow (u, v) picks the wheel position of the angle atan2(-v, -u) (pixel axes: x right, y down), so
+x is red, +y orange-yellow, -x cyan-blue and -y blue-violet; like the Middlebury code, the 55 colours span the
angle range with 54 steps, so the magenta-red ramp's last colour and red meet without a blend just above +x.
Magnitudes are divided by `max_flow` (default: the largest finite magnitude); below 1 the colour fades to white,
above 1 it is darkened to 3/4. Non-finite flow is black.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.flow.flo import components_first

# (ramp length, start colour, end colour): each ramp goes from its start to (just before) the next ramp's start.
_RAMPS = (
    (15, (255, 0, 0), (255, 255, 0)),  # red -> yellow
    (6, (255, 255, 0), (0, 255, 0)),  # yellow -> green
    (4, (0, 255, 0), (0, 255, 255)),  # green -> cyan
    (11, (0, 255, 255), (0, 0, 255)),  # cyan -> blue
    (13, (0, 0, 255), (255, 0, 255)),  # blue -> magenta
    (6, (255, 0, 255), (255, 0, 0)),  # magenta -> red
)
SATURATED_DIM = 0.75  # colour scale for magnitudes beyond max_flow, so they stand out from those just below it
_EPS = 1e-9  # keeps an all-zero flow at magnitude 0 (white) instead of 0/0


def color_wheel() -> np.ndarray:
    """The (55, 3) uint8 RGB Middlebury colour wheel: each channel steps floor(255 * i / ramp length)."""
    rows = []
    for length, start, end in _RAMPS:
        steps = np.floor(255 * np.arange(length) / length)  # 0 .. just under 255
        direction = np.sign(np.subtract(end, start))  # per channel: +1 rising, -1 falling, 0 constant
        rows.append(np.asarray(start)[None, :] + direction[None, :] * steps[:, None])
    return np.concatenate(rows).astype(np.uint8)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Flow in pixels, (2, H, W) or (H, W, 2) as `est()` returns it -> (H, W, 3) uint8 RGB in the Middlebury coding;
    `flow` is not modified."""
    flow = components_first(np.asarray(flow, dtype=np.float64))
    known = np.isfinite(flow).all(axis=0)
    u = np.where(known, flow[0], 0.0)
    v = np.where(known, flow[1], 0.0)
    magnitude = np.hypot(u, v)
    if max_flow is None:
        max_flow = float(magnitude.max()) if magnitude.size else 0.0
    if max_flow < 0:
        raise ValueError(f"max_flow must be >= 0, got {max_flow}")
    rad = magnitude / (max_flow + _EPS)

    wheel = color_wheel().astype(np.float64) / 255.0
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]; -1 (and +1) is +x
    position = (angle + 1.0) / 2.0 * (n - 1)  # 0 .. n - 1 along the wheel
    k0 = np.floor(position).astype(np.int64)
    k1 = np.where(k0 + 1 == n, 0, k0 + 1)
    frac = (position - k0)[..., None]
    color = (1.0 - frac) * wheel[k0] + frac * wheel[k1]  # (H, W, 3) in [0, 1]

    inside = (rad <= 1.0)[..., None]
    color = np.where(inside, 1.0 - rad[..., None] * (1.0 - color), color * SATURATED_DIM)
    color = np.where(known[..., None], color, 0.0)
    return np.floor(255.0 * color).astype(np.uint8)


def flow_legend(size: int = 151) -> np.ndarray:
    """A (size, size, 3) uint8 key: pixel p shows the colour of flow p - centre, saturated on the inscribed circle."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack((xs - centre, ys - centre))
    return flow_to_color(flow, max_flow=max(centre, 1.0))


KEY_WHEEL = 64  # side of the colour wheel in a flow key, pixels
KEY_TEXT = (
    "flow colour: hue = direction (red right, yellow down, cyan left, violet up),",
    "saturation = length: white = still, full colour = the longest vector ({scale})",
)


def flow_key(width: int, scale: str = "the largest in the picture") -> np.ndarray:
    """(H, width, 3) uint8 white strip explaining the flow colours: the wheel (`flow_legend`) and two lines of text;
    `scale` says which length is drawn in full colour."""
    pad = 4
    strip = np.full((KEY_WHEEL + 2 * pad, width, 3), 255, dtype=np.uint8)
    side = min(KEY_WHEEL, width - 2 * pad)
    if side > 0:
        strip[pad : pad + side, pad : pad + side] = flow_legend(side)
    for line, text in enumerate(KEY_TEXT):
        origin = (KEY_WHEEL + 3 * pad, pad + 24 + 22 * line)
        cv2.putText(strip, text.format(scale=scale), origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return strip
