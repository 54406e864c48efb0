"""`i2vda-prep inspect`: what a store holds (counts, sizes, estimator, codec, bytes) and a PNG sheet of samples."""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.flow.viz import flow_to_color
from pipeline.shards import SOURCE_KIND, TARGET_KIND, VAL_KIND, ValStore, file_sha256, open_store, read_samples
from pipeline.sources.protocols import colorize, get_protocol

TILE_WIDTH = 320  # pixels per sheet column: four columns make a sheet that fits a screen
DEFAULT_ROWS = 4
VAL_SHEET_PROTOCOL = "viper15"  # the val store holds every protocol; the sheet shows one


def describe(store: str | os.PathLike, verify: bool = False) -> list[str]:
    """Lines describing a store from its manifest; `verify` re-hashes every file against the manifest."""
    info = open_store(store)
    count = info.num_samples
    lines = [
        f"store      {info.name} ({info.kind}), {'complete' if info.complete else 'INCOMPLETE'}, "
        f"tool {info.tool_version}",
        f"samples    {count} of {info.num_planned} planned, {info.num_skipped} skipped, in {len(info.shards)} file(s)",
        f"bytes      {info.bytes / 2**20:.1f} MiB"
        + (f", {info.bytes / count / 2**20:.3f} MiB per sample" if count else ""),
        f"size       {'x'.join(str(v) for v in info.size_wh or [])} (W x H)",
    ]
    if info.estimator:
        lines.append(f"estimator  {info.estimator} {dict(info.estimator_options)}, "
                     f"checkpoint sha256 {info.checkpoint_sha256}")  # fmt: skip
        lines.append(f"codec      {info.codec}")
    if info.frames:
        lines.append(f"frames     {info.frames} PNG")
    if info.protocols:
        lines.append(f"protocol   {', '.join(info.protocols)}")
    for entry in info.skipped:
        lines.append(f"skipped    {entry['key']} ({entry['path']}): {entry['reason']}")
    if verify:
        lines.append(verify_line(mismatched_files(info.path)))
    return lines


def verify_line(bad: list[str]) -> str:
    """The `verify` line of `describe` for the names `mismatched_files` returned."""
    return f"verify     {'all files match their sha256' if not bad else 'MISMATCH: ' + ', '.join(bad)}"


def mismatched_files(store: str | os.PathLike) -> list[str]:
    """Names of the store's files that are missing or whose sha256 is not the manifest's (`inspect --verify`)."""
    return [s.path.name for s in open_store(store).shards if not s.path.is_file() or file_sha256(s.path) != s.sha256]


def _tile(image: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Resize an (H, W, 3) uint8 picture to TILE_WIDTH columns, keeping its aspect ratio."""
    height = max(1, round(image.shape[0] * TILE_WIDTH / image.shape[1]))
    return cv2.resize(image, (TILE_WIDTH, height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _flow_pair_colors(flows: list[np.ndarray]) -> list[np.ndarray]:
    """Colour flows on one magnitude scale, so that both directions of a pair compare."""
    max_flow = max(float(np.linalg.norm(f, axis=-1).max()) for f in flows) or 1.0
    return [_tile(flow_to_color(f, max_flow=max_flow)) for f in flows]


def _rows(store: Path, kind: str, rows: int) -> list[list[np.ndarray]]:
    if kind == TARGET_KIND:
        return [[_tile(s["frame0"]), _tile(s["frame1"]), *_flow_pair_colors([s["flow01"], s["flow10"]])]
                for s in islice(read_samples(store), rows)]  # fmt: skip
    if kind == SOURCE_KIND:
        out = []
        for s in islice(read_samples(store), rows):
            protocol = get_protocol(s["meta"]["protocol"])
            out.append([_tile(s["image"]), _tile(colorize(s["label"], protocol), nearest=True)])
        return out
    with ValStore(store) as val:
        out = []
        for key in val.keys()[:rows]:
            s = val.sample(key)
            label = colorize(s["labels"][VAL_SHEET_PROTOCOL], get_protocol(VAL_SHEET_PROTOCOL))
            row = [_tile(s["image"]), _tile(label, nearest=True)]
            if len(s["clip_flows"]):  # the flow leaving the annotated frame (entering it, if it ends the clip)
                row += _flow_pair_colors([s["clip_flows"][min(s["annotated_index"], len(s["clip_flows"]) - 1)]])
            out.append(row)
        return out


def contact_sheet(store: str | os.PathLike, rows: int = DEFAULT_ROWS) -> np.ndarray:
    """(H, W, 3) uint8 RGB sheet: per sample, target frames + flows in colour, source image + coloured label,
    val frame + coloured label + its forward flow."""
    store = Path(store)
    kind = open_store(store).kind
    if kind not in (TARGET_KIND, SOURCE_KIND, VAL_KIND):
        raise InputError(f"{store}: unknown store kind {kind!r}")
    tiles = _rows(store, kind, rows)
    if not tiles:
        raise InputError(f"{store}: the store holds no samples to show")
    width = max(len(r) for r in tiles) * TILE_WIDTH
    lines = []
    for row in tiles:
        height = row[0].shape[0]  # tiles of other aspect ratios are fitted to the row's first
        line = np.concatenate([cv2.resize(t, (TILE_WIDTH, height), interpolation=cv2.INTER_NEAREST)
                               if t.shape[0] != height else t for t in row], axis=1)  # fmt: skip
        lines.append(np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))))
    return np.concatenate(lines, axis=0)


def write_sheet(store: str | os.PathLike, out: str | os.PathLike, rows: int = DEFAULT_ROWS) -> Path:
    """Write the contact sheet of `store` as a PNG at `out`."""
    out = Path(out)
    sheet = contact_sheet(store, rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.ascontiguousarray(sheet[..., ::-1])):
        raise InputError(f"--out {out}: cannot write a PNG there")
    return out
