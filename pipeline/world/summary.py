"""What the demo world holds: per-class pixel shares under the class protocols, and its contact sheet."""

from __future__ import annotations

import numpy as np

from pipeline.flow.viz import flow_key, flow_to_color
from pipeline.sources.figures import class_legend, stack_rows, tile, title_strip
from pipeline.sources.protocols import IGNORE_ID, SYNTHIA11, VIPER15, Protocol, colorize
from pipeline.world.classes import CITYSCAPES_LUT, SYNTHIA_LUT, VIPER_LUT, WorldClass

SHEET_TILE_H = 128  # every tile of the contact sheet is scaled to this height
IGNORE = "ignore"
SHARE_DIGITS = 5  # shares are rounded to 1e-5 in world.json


def _train_ids_of_world(protocol: Protocol, domain: str) -> np.ndarray:
    """(NUM_WORLD_CLASSES,) train id of each world class as the domain's reader labels it."""
    if domain == "target":
        return protocol.cityscapes_lut()[CITYSCAPES_LUT]
    train = protocol.source_lut()[VIPER_LUT if domain == "viper" else SYNTHIA_LUT].copy()
    train[WorldClass.EGO] = IGNORE_ID  # the VIPER reader removes the ego car
    return train


def class_shares(histogram: np.ndarray, protocol: Protocol, domain: str) -> dict[str, float]:
    """Fraction of the labelled frames' pixels per train class (and "ignore"), from a world-class pixel histogram."""
    train = _train_ids_of_world(protocol, domain)
    total = max(int(histogram.sum()), 1)
    shares = {name: float(histogram[train == i].sum() / total) for i, name in enumerate(protocol.class_names)}
    shares[IGNORE] = float(histogram[train == IGNORE_ID].sum() / total)
    return {name: round(value, SHARE_DIGITS) for name, value in shares.items()}


def world_shares(histograms: dict[str, np.ndarray]) -> dict:
    """Shares for the two benchmarks: source (VIPER or SYNTHIA frames) and target (annotated Cityscapes frames)."""
    return {
        protocol.name: {
            "source": class_shares(histograms[source], protocol, source),
            "target": class_shares(histograms["target"], protocol, "target"),
        }
        for protocol, source in ((VIPER15, "viper"), (SYNTHIA11, "synthia"))
    }


def _to_train(world_cls: np.ndarray, protocol: Protocol, domain: str) -> np.ndarray:
    return _train_ids_of_world(protocol, domain)[world_cls]


def world_class_ids(protocol: Protocol, source: str) -> list[int]:
    """The protocol's train ids the world can produce, in its source domain or its target frames (the legend's)."""
    ids = np.concatenate([_train_ids_of_world(protocol, source), _train_ids_of_world(protocol, "target")])
    return [int(i) for i in np.unique(ids) if i < protocol.num_classes]


def _tile(image: np.ndarray, nearest: bool) -> np.ndarray:
    return tile(image, height=SHEET_TILE_H, nearest=nearest)


def _row(caption: str, tiles: list[np.ndarray]) -> np.ndarray:
    body = np.concatenate(tiles, axis=1)
    return np.concatenate([title_strip(caption, body.shape[1]), body], axis=0)


def world_sheet(samples: dict[str, list[tuple]]) -> np.ndarray:
    """(H, W, 3) uint8 RGB: source frames next to their labels in the protocol palette (two per row); target frames
    with their labels in both protocols and their ground-truth flow (one per row); below, per protocol the legend of
    the classes the world holds in it, and the key of the flow colours.

    `samples[domain]` holds (rgb, world classes, flow to the next frame or None) tuples.
    """
    rows = []
    for domain, protocol, name in (
        ("viper", VIPER15, "VIPER source (game style), labels in viper15"),
        ("synthia", SYNTHIA11, "SYNTHIA source (game style), labels in synthia11"),
    ):
        tiles = []
        for rgb, world_cls, _ in samples.get(domain, []):
            tiles += [_tile(rgb, False), _tile(colorize(_to_train(world_cls, protocol, domain), protocol), True)]
        if tiles:
            rows.append(_row(name, tiles))
    for rgb, world_cls, flow in samples.get("target", []):
        tiles = [_tile(rgb, False)] + [
            _tile(colorize(_to_train(world_cls, p, "target"), p), True) for p in (VIPER15, SYNTHIA11)
        ]
        tiles += [] if flow is None else [_tile(flow_to_color(flow), False)]
        rows.append(_row("Cityscapes target (camera style), labels in viper15 and synthia11, ground-truth flow", tiles))
    width = max(row.shape[1] for row in rows)
    for protocol, source in ((VIPER15, "viper"), (SYNTHIA11, "synthia")):
        legend = class_legend(protocol, width, world_class_ids(protocol, source))
        rows.append(_row(f"classes of the world in {protocol.name} labels", [legend]))
    if any(flow is not None for _, _, flow in samples.get("target", [])):
        rows.append(flow_key(width, "each tile's own longest vector"))
    return stack_rows(rows)
