"""`i2vda-prep inspect`: what a store holds (counts, sizes, estimator, codec, bytes) and a PNG sheet of samples."""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.flow.viz import flow_key, flow_to_color
from pipeline.shards import (
    SOURCE_KIND,
    TARGET_KIND,
    VAL_KIND,
    ValStore,
    decode_sample,
    file_sha256,
    open_store,
    raw_items,
)
from pipeline.sources import (
    class_legend,
    colorize,
    get_protocol,
    legend_classes,
    stack_rows,
    tile,
    title_strip,
    write_png,
)

TILE_WIDTH = 320  # pixels per sheet column: four columns make a sheet that fits a screen
DEFAULT_ROWS = 4
VAL_SHEET_PROTOCOL = "viper15"  # the val store holds every protocol; the sheet shows one
FLOW_SCALE = "printed on each flow tile"  # the flow key's full-colour length: each pair has its own scale
SCALE_FONT = cv2.FONT_HERSHEY_SIMPLEX


def describe(store: str | os.PathLike, verify: bool = False) -> list[str]:
    """Lines describing a store from its manifest; `verify` re-hashes every file against the manifest."""
    info = open_store(store)
    count = info.num_samples if info.num_pairs is None else info.num_pairs
    lines = [
        f"store      {info.name} ({info.kind}), {'complete' if info.complete else 'INCOMPLETE'}, "
        f"tool {info.tool_version}",
        f"samples    {count} of {info.num_planned} planned, {info.num_skipped} skipped, in {len(info.shards)} file(s)"
        + (f", shard layout {info.layout}" if info.layout is not None else ""),
        f"bytes      {info.bytes / 2**20:.1f} MiB"
        + (f", {info.bytes / count / 2**20:.3f} MiB per sample" if count else ""),
        f"size       {'x'.join(str(v) for v in info.size_wh or [])} (W x H)",
    ]
    if info.estimator:
        lines.append(
            f"estimator  {info.estimator} {dict(info.estimator_options)}, checkpoint sha256 {info.checkpoint_sha256}"
        )
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
    return tile(image, width=TILE_WIDTH, nearest=nearest)


def _flow_pair_colors(flows: list[np.ndarray]) -> list[np.ndarray]:
    """Colour flows on one magnitude scale, so that both directions of a pair compare; each tile says the length
    drawn in full colour."""
    max_flow = max(float(np.linalg.norm(f, axis=0).max()) for f in flows) or 1.0  # (2, H, W) flows
    tiles = [_tile(flow_to_color(f, max_flow=max_flow)) for f in flows]
    for picture in tiles:
        text = f"full colour: {max_flow:.1f} px"
        (text_w, text_h), _ = cv2.getTextSize(text, SCALE_FONT, 0.4, 1)
        cv2.rectangle(picture, (0, 0), (text_w + 6, text_h + 8), (255, 255, 255), thickness=-1)
        cv2.putText(picture, text, (3, text_h + 4), SCALE_FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return tiles


def spread_indices(count: int, rows: int) -> list[int]:
    """`rows` sample indices out of `count`, evenly spread (the middle of `rows` equal parts): samples are sorted by
    key, so the sheet shows pairs of clips far apart rather than consecutive pairs of one clip."""
    rows = min(rows, count)
    return [(2 * k + 1) * count // (2 * rows) for k in range(rows)]


# The members each kind of store's sheet shows (stores/README.md): a sample without one is refused, naming it.
SHEET_FIELDS = {TARGET_KIND: ("frame0", "frame1", "flow01", "flow10"), SOURCE_KIND: ("image", "label")}


def sheet_samples(store: str | os.PathLike, rows: int = DEFAULT_ROWS) -> list[dict]:
    """The decoded samples the sheet of a shard store shows (`spread_indices`); only the shards holding them are
    read, each up to its last chosen sample, with the store's member limits and size checks (`raw_items`)."""
    info = open_store(store)
    entries = info.sample_entries()
    wanted = spread_indices(sum(e.items for e in entries), rows)
    samples, first = [], 0
    for entry in entries:
        local = [i - first for i in wanted if first <= i < first + entry.items]
        first += entry.items
        for i, raw in enumerate(islice(raw_items(entry.path, entry), local[-1] + 1 if local else 0)):
            if i in local:
                samples.append(_with_fields(decode_sample(raw, entry.size_hw), SHEET_FIELDS.get(info.kind, ())))
    return samples


def _with_fields(sample: dict, fields: tuple[str, ...]) -> dict:
    missing = [field for field in fields if field not in sample]
    if missing:
        raise InputError(
            f"{sample.get('__url__', 'shard')}: sample {sample.get('__key__')!r} lacks {', '.join(missing)}; the "
            f"shard is damaged, rebuild the store with i2vda-prep"
        )
    return sample


def _rows(store: Path, kind: str, rows: int) -> tuple[list[str], list[list[np.ndarray]], object, list, bool]:
    """Column titles, rows of tiles, the protocol whose colours the labels use (None: no labels), the label maps
    shown (for the legend) and whether flows are shown (for the flow key)."""
    if kind == TARGET_KIND:
        tiles = [
            [_tile(s["frame0"]), _tile(s["frame1"]), *_flow_pair_colors([s["flow01"], s["flow10"]])]
            for s in sheet_samples(store, rows)
        ]
        return ["I0 (frame f-1)", "I1 (frame f)", "flow 0->1", "flow 1->0"], tiles, None, [], True
    if kind == SOURCE_KIND:
        samples = sheet_samples(store, rows)
        name = open_store(store).protocol or samples[0]["meta"].get("protocol")
        if not isinstance(name, str):
            raise InputError(f"{store}: neither the manifest nor the samples' meta.json name a class protocol")
        protocol = get_protocol(name)
        tiles = [[_tile(s["image"]), _tile(colorize(s["label"], protocol), nearest=True)] for s in samples]
        return ["image", f"label ({protocol.name})"], tiles, protocol, [s["label"] for s in samples], False
    with ValStore(store) as val:
        tiles, labels = [], []
        keys = val.keys()
        held = val.protocols
        protocol = get_protocol(VAL_SHEET_PROTOCOL if VAL_SHEET_PROTOCOL in held or not held else held[0])
        for index in spread_indices(len(keys), rows):
            s = val.sample(keys[index])
            labels.append(val.label(keys[index], protocol.name))
            row = [_tile(s["image"]), _tile(colorize(labels[-1], protocol), nearest=True)]
            if len(s["clip_flows"]):  # the flow leaving the annotated frame (entering it, if it ends the clip)
                row += _flow_pair_colors([s["clip_flows"][min(s["annotated_index"], len(s["clip_flows"]) - 1)]])
            tiles.append(row)
    flows = any(len(row) > 2 for row in tiles)
    return ["annotated frame", f"label ({protocol.name})", "flow leaving it"], tiles, protocol, labels, flows


def contact_sheet(store: str | os.PathLike, rows: int = DEFAULT_ROWS) -> np.ndarray:
    """(H, W, 3) uint8 RGB sheet of `rows` samples spread over the store, under column titles: target frames + flows
    in colour, source image + coloured label, val frame + coloured label + its forward flow; below, where labels are
    drawn, the legend of the classes they show, and where flows are drawn, the key of the flow colours."""
    store = Path(store)
    kind = open_store(store).kind
    if kind not in (TARGET_KIND, SOURCE_KIND, VAL_KIND):
        raise InputError(f"{store}: unknown store kind {kind!r}")
    titles, tiles, protocol, labels, flows = _rows(store, kind, rows)
    if not tiles:
        raise InputError(f"{store}: the store holds no samples to show")
    columns = max(len(r) for r in tiles)
    lines = [np.concatenate([title_strip(title, TILE_WIDTH) for title in titles[:columns]], axis=1)]
    for row in tiles:
        height = row[0].shape[0]  # tiles of other aspect ratios are fitted to the row's first
        fitted = [
            cv2.resize(t, (TILE_WIDTH, height), interpolation=cv2.INTER_NEAREST) if t.shape[0] != height else t
            for t in row
        ]
        lines.append(np.concatenate(fitted, axis=1))
    if protocol is not None:
        lines.append(class_legend(protocol, columns * TILE_WIDTH, legend_classes(protocol, *labels)))
    if flows:
        lines.append(flow_key(columns * TILE_WIDTH, FLOW_SCALE))
    return stack_rows(lines)


def default_sheet_path(store: str | os.PathLike) -> Path:
    """`./<store name>_sheet.png` in the current folder: the sheet never goes into the data."""
    return Path(f"{Path(store).resolve().name}_sheet.png")


def write_sheet(store: str | os.PathLike, out: str | os.PathLike | None = None, rows: int = DEFAULT_ROWS) -> Path:
    """Write the contact sheet of `store` as a PNG at `out` (default `default_sheet_path`); a path inside the
    store is refused, since the store's folder holds only what its manifest lists."""
    out = default_sheet_path(store) if out is None else Path(out)
    if out.resolve().is_relative_to(Path(store).resolve()):
        raise InputError(
            f"--sheet {out}: inside the store {store}; write the sheet elsewhere "
            f"(default ./{default_sheet_path(store)})"
        )
    return write_png(out, contact_sheet(store, rows))
