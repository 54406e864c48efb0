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
from pathlib import Path
from types import MappingProxyType

from pipeline import __version__
from pipeline.atomic import write_text_atomic
from pipeline.errors import InputError
from pipeline.shards.samples import decode_sample
from pipeline.shards.schema import MANIFEST_FORMAT, MAX_MANIFEST_BYTES, parse_manifest
from pipeline.shards.tar import SHARD_SUFFIX, check_shard_size, raw_samples

MANIFEST_NAME = "manifest.json"


def write_manifest(store_dir: str | os.PathLike, manifest: Mapping) -> dict:
    """Write `store_dir/manifest.json` atomically (sorted keys, fixed indent), adding format and tool version;
    -> what was written."""
    body = {"format": MANIFEST_FORMAT, "tool_version": __version__, **manifest}
    write_text_atomic(Path(store_dir) / MANIFEST_NAME, json.dumps(body, sort_keys=True, indent=1) + "\n")
    return body


def read_manifest(store: str | os.PathLike) -> dict:
    """The manifest of a store folder (or the manifest.json path itself); a one-line InputError if absent or bad."""
    path = Path(store)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: no store manifest here; run `i2vda-prep` to build the store first")
    with open(path, "rb") as f:  # at most one byte past the limit is read: a huge file is refused, not loaded
        data = f.read(MAX_MANIFEST_BYTES + 1)
    return parse_manifest(data, str(path))


def _field(manifest: Mapping, name: str):
    """A manifest field: top level, else under "config" (where prep records every setting)."""
    return manifest[name] if name in manifest else manifest.get("config", {}).get(name)


def _as_json(value):
    """Tuples compare equal to the lists JSON turns them into."""
    return list(value) if isinstance(value, tuple) else value


def _check(manifest: Mapping, where: str, expected: dict) -> None:
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

    path: Path
    samples: int
    bytes: int
    sha256: str | None
    size_hw: tuple[int, int] | None = None  # (H, W) of every frame, label and flow in it (the store's size_wh)


@dataclass(frozen=True)
class StoreInfo:
    """What a store's manifest says, typed (`open_store`). Sizes are (W, H) as on the command line."""

    path: Path  # the store folder
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
    num_samples: int
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
        truncated or replaced shard is refused before training starts); else a one-line InputError naming it."""
        entries = tuple(s for s in self.shards if s.samples > 0)
        if not entries:
            raise InputError(f"{self.path}: the store holds no samples")
        for entry in entries:
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


def open_store(path: str | os.PathLike) -> StoreInfo:
    """The StoreInfo of a store folder (or its manifest.json); a missing or foreign manifest: one-line InputError."""
    folder = Path(path)
    folder = folder.parent if folder.name == MANIFEST_NAME else folder
    m = read_manifest(folder)  # checked against the schema: every field below has its type
    size_wh = _field(m, "size_wh")
    size_hw = None if size_wh is None else (size_wh[1], size_wh[0])
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
        num_planned=m.get("num_planned", 0),
        num_skipped=m.get("num_skipped", 0),
        bytes=m.get("bytes", 0),
        shards=tuple(
            ShardEntry(folder / s["name"], s.get("samples", 0), s.get("bytes", 0), s.get("sha256"), size_hw)
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
    """Decoded samples of a store folder, one shard, or a list of shards, in shard order (`decode_sample`). A shard
    that the manifest of its folder lists is checked against that entry as it is read (`raw_samples`: size, sample
    count, sha256, and the store's size for every member); one outside a store is read with the limits of
    `pipeline.limits.MAX_SIDE_PX`."""
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
        for sample in raw_samples(shard, entry):
            yield decode_sample(sample, None if entry is None else entry.size_hw)
