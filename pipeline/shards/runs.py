"""Shard layout 3 of target stores: a sample is a run of consecutive frames of one snippet, each frame stored once.

Layouts 1 and 2 store one sample per pair (`frame0.png`, `frame1.png`, both flows, `meta.json`), so with `--pairs
all` every inner frame of a snippet is on disk twice. A run of n pairs holds n + 1 frames and the 2n flows:

    <key>.frame000000.png ... <key>.frame<n>.png             frame i at the store size
    <key>.flow01_000000.zflow ... <key>.flow01_<n-1>.zflow    F(i -> i+1) on frame i's grid (the pair's flow01)
    <key>.flow10_000000.zflow ... <key>.flow10_<n-1>.zflow    F(i+1 -> i) on frame i+1's grid (the pair's flow10)
    <key>.run.json                                            {"keys", "shared", "pairs"}: the pairs' meta.json

where `<key>` is the key of the run's first pair. `expand_run` turns a run back into the raw samples of its pairs,
member for member and byte for byte what layout 2 stores for them (meta.json = the run's shared fields and the
pair's own ones, serialised as layout 2 does), so everything downstream of the tar reader sees pairs, as before.

A prep shard holds the same pairs in either layout (`--samples-per-shard` counts pairs), cut into runs where the
next pair does not start at the previous pair's second frame (a new snippet, a skipped pair) and at shard ends: a
snippet that crosses a shard boundary stores its boundary frame in both shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from pipeline.errors import InputError
from pipeline.flow.codec import FLOW_EXT, encode_flow
from pipeline.shards.samples import check_key, json_bytes, png_bytes, target_meta
from pipeline.shards.tar import damaged_shard, raw_samples

PAIR_LAYOUT = 2  # one sample per pair; layout 1 is the same with older frame and flow encodings
RUN_LAYOUT = 3  # one sample per run of consecutive frames (this module); what `i2vda-prep flows` writes
TARGET_LAYOUTS = (PAIR_LAYOUT, RUN_LAYOUT)
RUN_META = "run.json"
INDEX_DIGITS = 6  # frame and pair indices in member names, so that the tar's sorted members stay in order


def _frame(i: int) -> str:
    return f"frame{i:0{INDEX_DIGITS}d}.png"


def _flow(direction: str, i: int) -> str:
    return f"flow{direction}_{i:0{INDEX_DIGITS}d}.{FLOW_EXT}"


def _meta_text(value) -> str:
    return json.dumps(value, sort_keys=True)


class RunEncoder:
    """The members of one run, encoded as its pairs come: `add` pair 0 (frame 0 -> frame 1), pair 1, ...; `sample`.

    Only encoded bytes are kept (a 30-frame snippet at 1024x512 holds about 75 MB), so a shard of long runs does not
    hold its flows as float arrays."""

    def __init__(self, frame0: np.ndarray, frames: str = "stored"):
        self.frames, self.size_hw = frames, frame0.shape[:2]
        self.members = {_frame(0): png_bytes(frame0, frames)}
        self.keys: list[str] = []
        self.metas: list[dict] = []

    def __len__(self) -> int:
        """Pairs added so far."""
        return len(self.keys)

    def add(self, key: str, frame1: np.ndarray, flow_01: np.ndarray, flow_10: np.ndarray, meta: Mapping) -> None:
        """Append the pair (last frame -> frame1): frame1 (H, W, 3) uint8 RGB, flows (2, H, W) float32 px (x, y)."""
        i = len(self.keys)
        size_hw = self.size_hw
        if frame1.shape != (*size_hw, 3) or flow_01.shape != (2, *size_hw) or flow_10.shape != (2, *size_hw):
            raise ValueError(f"{key}: frame {frame1.shape}, flows {flow_01.shape} {flow_10.shape}; run size {size_hw}")
        self.keys.append(check_key(key))
        self.members[_frame(i + 1)] = png_bytes(frame1, self.frames)
        self.members[_flow("01", i)] = encode_flow(np.asarray(flow_01, np.float32))
        self.members[_flow("10", i)] = encode_flow(np.asarray(flow_10, np.float32))
        self.metas.append(target_meta(meta, size_hw))

    def sample(self) -> dict:
        """The run as WebDataset members: {"__key__": its first pair's key, "<member>": bytes}."""
        if not self.keys:
            raise ValueError("a run needs at least one pair")
        first = self.metas[0]
        shared = {
            k: v for k, v in first.items() if all(k in m and _meta_text(m[k]) == _meta_text(v) for m in self.metas)
        }
        pairs = [{k: v for k, v in m.items() if k not in shared} for m in self.metas]
        description = {"keys": self.keys, "shared": shared, "pairs": pairs}
        return {"__key__": self.keys[0], **self.members, RUN_META: json_bytes(description)}


def _description(raw: Mapping, where: str) -> tuple[list, dict, list]:
    """(keys, shared, pairs) of a run's run.json, checked for shape: a damaged one is refused in one line."""
    try:
        run = json.loads(raw[RUN_META])
        keys, shared, pairs = run["keys"], run["shared"], run["pairs"]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested 100k deep
        raise InputError(f"{where}.{RUN_META}: not a run description of layout {RUN_LAYOUT}") from None
    valid = (
        isinstance(keys, list)
        and keys
        and all(isinstance(k, str) for k in keys)
        and isinstance(shared, dict)
        and isinstance(pairs, list)
        and len(pairs) == len(keys)
        and all(isinstance(p, dict) for p in pairs)
    )
    if not valid:
        raise InputError(f"{where}.{RUN_META}: not a run description of layout {RUN_LAYOUT}")
    return keys, shared, pairs


def expand_run(raw: Mapping) -> list[dict]:
    """The raw samples of a run's pairs, in order, as layout 2 stores them: {"__key__", ["__url__",] "frame0.png",
    "frame1.png", "flow01.zflow", "flow10.zflow", "meta.json"} (the bytes are the run's, not copies). A run whose
    members disagree with its run.json raises a one-line InputError."""
    where = f"{raw.get('__url__', 'shard')}: {raw.get('__key__', '?')}"
    keys, shared, pairs = _description(raw, where)
    expected = 1 + (len(keys) + 1) + 2 * len(keys)  # run.json, frames, flows
    if len(raw) - sum(name.startswith("__") for name in raw) != expected:
        raise InputError(f"{where}: a run of {len(keys)} pairs has {expected} members, this one has another count")
    extra = {"__url__": raw["__url__"]} if "__url__" in raw else {}
    out = []
    for i, key in enumerate(keys):
        try:
            members = {
                "frame0.png": raw[_frame(i)],
                "frame1.png": raw[_frame(i + 1)],
                f"flow01.{FLOW_EXT}": raw[_flow("01", i)],
                f"flow10.{FLOW_EXT}": raw[_flow("10", i)],
            }
        except KeyError as exc:
            raise InputError(f"{where}: the run lacks its member {exc.args[0]}") from None
        out.append({"__key__": key, **extra, **members, "meta.json": json_bytes({**shared, **pairs[i]})})
    return out


def expand_runs(samples: Iterable[Mapping]) -> Iterator[dict]:
    """Raw samples with every run replaced by its pairs (`expand_run`); pairs and source samples pass unchanged."""
    for sample in samples:
        if RUN_META in sample:
            yield from expand_run(sample)
        else:
            yield sample


def raw_items(shard: str | os.PathLike, expected=None) -> Iterator[dict]:
    """The undecoded items a reader trains on, in order: source samples, or target pairs with runs expanded.

    `expected` (the manifest's ShardEntry) adds `raw_samples`' checks, and, once the shard is read to its end, the
    count of items against the entry's `items` (the pairs of a target shard)."""
    count = 0
    for item in expand_runs(raw_samples(shard, expected)):
        count += 1
        yield item
    if expected is not None and count != expected.items:
        raise damaged_shard(str(shard), f"holds {count} items, the manifest says {expected.items}")
