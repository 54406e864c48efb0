"""A store: a folder of shards (or the val store's HDF5 file) and the `manifest.json` that describes it.

`read_manifest` is the one reader of manifest.json: it checks the file against the schema of `schema.py` (types,
ranges, nesting, shard names inside the store folder) before anyone reads a field. `open_store` turns it into a
frozen, typed `StoreInfo`, which is what the trainer, the demo driver, the val store and the tools ask about a store
(kind, size, protocol, estimator, counts, shards, plan hash). `write_manifest` is its one writer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import MappingProxyType

from pipeline import __version__
from pipeline.atomic import write_text_atomic
from pipeline.errors import InputError
from pipeline.shards.remote import NotFound, RemotePath, read_remote, store_location
from pipeline.shards.runs import PAIR_LAYOUT, TARGET_LAYOUTS, raw_items
from pipeline.shards.samples import decode_sample
from pipeline.shards.schema import MANIFEST_FORMAT, MAX_MANIFEST_BYTES, TARGET_KIND, parse_manifest
from pipeline.shards.tar import SHARD_SUFFIX, check_shard_size, shard_name, write_shard

MANIFEST_NAME = "manifest.json"


def write_manifest(store_dir: str | os.PathLike, manifest: Mapping) -> dict:
    """Write `store_dir/manifest.json` atomically (sorted keys, fixed indent), adding format and tool version;
    -> what was written."""
    body = {"format": MANIFEST_FORMAT, "tool_version": __version__, **manifest}
    write_text_atomic(Path(store_dir) / MANIFEST_NAME, json.dumps(body, sort_keys=True, indent=1) + "\n")
    return body


def _manifest_text(path: Path | RemotePath) -> tuple[Path | RemotePath, str | bytes]:
    """(the manifest's path, its text) for a store folder or its manifest.json, local or at a URL."""
    if isinstance(path, RemotePath):
        path = path if path.name == MANIFEST_NAME else path / MANIFEST_NAME
        try:
            return path, read_remote(path, MAX_MANIFEST_BYTES)
        except NotFound as exc:
            raise InputError(f"{exc}: no store manifest at this URL; upload the whole store folder there") from None
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: no store manifest here; run `i2vda-prep` to build the store first")
    with open(path, "rb") as f:  # at most one byte past the limit is read: a huge file is refused, not loaded
        return path, f.read(MAX_MANIFEST_BYTES + 1)


def read_manifest(store: str | os.PathLike | RemotePath) -> dict:
    """The manifest of a store folder (or the manifest.json path itself), local or at a URL (`store_location`); a
    one-line InputError if absent or bad."""
    path, data = _manifest_text(store_location(store))
    return parse_manifest(data, str(path))


def _field(manifest: Mapping, name: str):
    """A manifest field: top level, else under "config" (where prep records every setting)."""
    return manifest[name] if name in manifest else manifest.get("config", {}).get(name)


def _as_json(value):
    """Tuples compare equal to the lists JSON turns them into."""
    return list(value) if isinstance(value, tuple) else value


def _check(manifest: Mapping, where: str, expected: dict) -> None:
    """Refuse an incomplete store, or one whose fields differ from `expected` (None = anything), in one line."""
    if "size_hw" in expected:
        size_hw = expected.pop("size_hw")
        expected["size_wh"] = None if size_hw is None else (size_hw[1], size_hw[0])
    if not manifest.get("complete", False):
        raise InputError(f"{where}: the store {manifest.get('name')!r} is incomplete; rerun its i2vda-prep command")
    for name, want in expected.items():
        have = _field(manifest, name)
        if want is not None and _as_json(have) != _as_json(want):
            raise InputError(f"{where}: store {manifest.get('name')!r} has {name}={have!r}, expected {want!r}")


def check_manifest(manifest: Mapping | str | os.PathLike, **expected) -> dict:
    """Refuse a store that is incomplete or does not match what the caller needs (one-line InputError).

    `expected` names manifest fields (top level, else under "config"): kind, protocol, size_wh (or size_hw),
    estimator, codec, ...; None means any."""
    where = "store manifest"
    if not isinstance(manifest, Mapping):
        where, manifest = str(manifest), read_manifest(manifest)
    _check(manifest, where, expected)
    return dict(manifest)


@dataclass(frozen=True)
class ShardEntry:
    """One file of a store as its manifest lists it, and the store's picture size its members must declare."""

    path: Path | RemotePath
    samples: int  # WebDataset samples in the tar (runs, in a target store of layout 3)
    bytes: int
    sha256: str | None
    pairs: int | None = None  # target pairs in it (None: a source store, or one sample per pair)
    size_hw: tuple[int, int] | None = None  # (H, W) of every frame, label and flow in it (the store's size_wh)

    @property
    def items(self) -> int:
        """What a reader gets from the shard: its pairs (runs expanded) or its samples."""
        return self.samples if self.pairs is None else self.pairs


@dataclass(frozen=True)
class StoreInfo:
    """What a store's manifest says, typed (`open_store`). Sizes are (W, H) as on the command line."""

    path: Path | RemotePath  # the store folder, local or at a URL
    name: str | None
    kind: str | None  # TARGET_KIND, SOURCE_KIND or VAL_KIND
    complete: bool
    size_wh: tuple[int, int] | None
    protocol: str | None  # the class protocol of a source store's labels
    protocols: tuple[str, ...]  # the protocols whose labels the val store holds
    estimator: str | None  # "dis" or "flownet2" for stores with flows
    estimator_options: Mapping  # how the flows were estimated (the trainer's online flow uses the same)
    checkpoint_sha256: str | None  # of the estimator's weights (None for DIS)
    codec: str | None
    frames: str | None  # how RGB PNGs were written ("stored" or "compressed")
    num_samples: int  # WebDataset samples over all shards (runs, in a target store of layout 3)
    num_pairs: int | None  # target pairs over all shards; None for source and val stores
    layout: int | None  # shard layout of a target store (pipeline.shards.runs): 2 = a pair per sample, 3 = runs
    num_planned: int
    num_skipped: int
    bytes: int
    shards: tuple[ShardEntry, ...]
    skipped: tuple[Mapping, ...]
    plan_sha256: str | None
    tool_version: str | None
    manifest: Mapping = field(repr=False, compare=False)  # the raw manifest, read-only

    @property
    def size_hw(self) -> tuple[int, int] | None:
        """(H, W) of the stored frames."""
        return None if self.size_wh is None else (self.size_wh[1], self.size_wh[0])

    def check(self, **expected) -> StoreInfo:
        """`self` if complete and matching `expected` (as `check_manifest`); else a one-line InputError."""
        _check(self.manifest, str(self.path), expected)
        return self

    def sample_entries(self) -> tuple[ShardEntry, ...]:
        """The shards that hold samples, each checked to exist with the manifest's size (one stat per shard, so a
        truncated or replaced shard is refused before training starts; a store at a URL is checked as it is read);
        else a one-line InputError naming it."""
        entries = tuple(s for s in self.shards if s.items > 0)
        if not entries:
            raise InputError(f"{self.path}: the store holds no samples")
        for entry in entries if isinstance(self.path, Path) else ():
            if not entry.path.is_file():
                raise InputError(f"{entry.path}: shard listed in the manifest is missing")
            check_shard_size(entry.path, entry)
        return entries

    def sample_shards(self) -> tuple[str, ...]:
        """Paths of `sample_entries()`."""
        return tuple(str(s.path) for s in self.sample_entries())

    def identity(self) -> dict:
        """What the store holds, independent of where it lies: kind, size, protocol, estimator and its options,
        codec, frames, the plan hash (which samples went into which shard), counts and the shards' sha256. A resumed
        run compares it with the one its checkpoint recorded (the same stores copied elsewhere compare equal)."""
        shards = hashlib.sha256("\n".join(f"{s.path.name}:{s.samples}:{s.sha256}" for s in self.shards).encode())
        return {
            "name": self.name,
            "kind": self.kind,
            "size_wh": list(self.size_wh or []),
            "protocol": self.protocol,
            "estimator": self.estimator,
            "estimator_options": dict(self.estimator_options),
            "checkpoint_sha256": self.checkpoint_sha256,
            "codec": self.codec,
            "frames": self.frames,
            "pairs": self.manifest.get("config", {}).get("pairs"),
            "plan_sha256": self.plan_sha256,
            "num_samples": self.num_samples,
            "num_shards": len(self.shards),
            "shards_sha256": shards.hexdigest(),
        }


def open_store(path: str | os.PathLike | RemotePath) -> StoreInfo:
    """The StoreInfo of a store folder (or its manifest.json), local or at a URL (`store_location`); a missing or
    foreign manifest: one-line InputError."""
    folder = store_location(path)
    folder = folder.parent if folder.name == MANIFEST_NAME else folder
    m = read_manifest(folder)  # checked against the schema: every field below has its type
    size_wh = _field(m, "size_wh")
    size_hw = None if size_wh is None else (size_wh[1], size_wh[0])
    layout = _field(m, "layout")
    if m.get("kind") == TARGET_KIND:
        layout = PAIR_LAYOUT if layout is None else layout  # stores written before layouts were recorded
        if layout not in TARGET_LAYOUTS:
            raise InputError(
                f"{folder}: shard layout {layout!r}, this i2vda reads {', '.join(map(str, TARGET_LAYOUTS))}; "
                f"rebuild the store with this version's i2vda-prep flows"
            )
    protocol = _field(m, "protocol")
    options = MappingProxyType(dict(_field(m, "estimator_options") or {}))
    return StoreInfo(
        path=folder,
        name=m.get("name"),
        kind=m.get("kind"),
        complete=m.get("complete", False),
        size_wh=None if size_wh is None else (size_wh[0], size_wh[1]),
        protocol=protocol,
        protocols=tuple(m.get("protocols") or ([protocol] if protocol else [])),
        estimator=_field(m, "estimator"),
        estimator_options=options,
        checkpoint_sha256=_field(m, "checkpoint_sha256"),
        codec=_field(m, "codec"),
        frames=_field(m, "frames"),
        num_samples=m.get("num_samples", 0),
        num_pairs=m.get("num_pairs", m.get("num_samples", 0)) if m.get("kind") == TARGET_KIND else None,
        layout=layout,
        num_planned=m.get("num_planned", 0),
        num_skipped=m.get("num_skipped", 0),
        bytes=m.get("bytes", 0),
        shards=tuple(
            ShardEntry(
                folder / s["name"], s.get("samples", 0), s.get("bytes", 0), s.get("sha256"), s.get("pairs"), size_hw
            )
            for s in m.get("shards", [])
        ),
        skipped=tuple(m.get("skipped", [])),
        plan_sha256=m.get("config", {}).get("plan_sha256"),
        tool_version=m.get("tool_version"),
        manifest=MappingProxyType(m),
    )


def store_shards(store: str | os.PathLike) -> list[str]:
    """Shard paths of a store folder: those its manifest lists, else every `*.tar` in it, sorted."""
    store = Path(store)
    if (store / MANIFEST_NAME).is_file():
        return [str(s.path) for s in open_store(store).shards]
    return sorted(str(p) for p in store.glob(f"*{SHARD_SUFFIX}"))


def read_samples(path: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[dict]:
    """Decoded samples of a store folder, one shard, or a list of shards, in shard order (`decode_sample`): source
    images, or target pairs (runs of layout 3 expanded into their pairs). A shard that the manifest of its folder
    lists is checked against that entry as it is read (`raw_items`: size, counts, sha256, and the store's size for
    every member); one outside a store is read with the limits of `pipeline.limits.MAX_SIDE_PX`."""
    if isinstance(path, (str, os.PathLike)):
        if not Path(path).exists():
            raise InputError(f"{path}: no such store or shard")
        shards = store_shards(path) if Path(path).is_dir() else [str(path)]
    else:
        shards = [str(p) for p in path]
    if not shards:
        raise InputError(f"{path}: no shards found")
    entries: dict[str, ShardEntry] = {}  # the manifest entries of the folders the shards lie in
    for folder in {Path(shard).parent for shard in shards}:
        if (folder / MANIFEST_NAME).is_file():
            entries |= {str(s.path): s for s in open_store(folder).shards}
    for shard in shards:
        if not Path(shard).is_file():
            raise InputError(f"{shard}: shard missing")
        entry = entries.get(str(shard))
        for sample in raw_items(shard, entry):
            yield decode_sample(sample, None if entry is None else entry.size_hw)


def write_store(
    folder: str | os.PathLike, kind: str, samples: Iterable[dict], samples_per_shard: int, **fields
) -> dict:
    """A complete store of encoded `samples` (`encode_target_sample`, `encode_source_sample`) in `folder`, as
    `i2vda-prep` leaves one: shards of `samples_per_shard` samples, then a manifest naming them, with `fields`
    (`size_wh`, `protocol`, `estimator`, `estimator_options`, ...) at its top level. For stores made without a
    dataset (tests, benchmarks); samples are written as they come. -> the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries, stream = [], iter(samples)
    while chunk := list(islice(stream, samples_per_shard)):
        entries.append({**write_shard(folder / shard_name(folder.name, len(entries)), chunk), "skipped": []})
    count = sum(entry["samples"] for entry in entries)
    manifest = {
        "name": folder.name,
        "kind": kind,
        "complete": True,
        "num_planned": count,
        "num_samples": count,
        "num_skipped": 0,
        "bytes": sum(entry["bytes"] for entry in entries),
        "shards": entries,
        "skipped": [],
        "timing": {},
        **fields,
    }
    return write_manifest(folder, manifest)
