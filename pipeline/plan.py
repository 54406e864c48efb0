"""The deterministic plan of a prep job: what a store holds, which samples go into which shard, and the
manifest bookkeeping that lets a rerun skip verified shards and redo the rest."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.errors import InputError
from pipeline.flow.codec import FLOW_CODEC
from pipeline.flow.estimators import ESTIMATORS
from pipeline.shards import (
    FRAME_MODES,
    MANIFEST_NAME,
    PARTIAL_SUFFIX,
    RUN_LAYOUT,
    SOURCE_KIND,
    TARGET_KIND,
    TARGET_LAYOUTS,
    VAL_KIND,
    file_sha256,
    read_manifest,
    shard_name,
)

# Smallest side of stored frames: OpenCV's DIS fails on frames under 16 pixels.
MIN_SIZE_PX = 16
# The target's input size (W, H) in the paper (§4.2); each source dataset's is in its registry entry. `--size WxH`
# overrides them.
TARGET_SIZE_WH = (1024, 512)
TARGET_STORE, VAL_STORE = "cityscapes_seq", "cityscapes_val"
# 128 pairs at 1024x512 make shards of a few hundred MB: big enough for sequential reads (WebDataset's advice),
# small enough that a crash loses minutes of flow estimation and that DDP ranks x loader workers get many shards.
DEFAULT_SAMPLES_PER_SHARD = 128
DEFAULT_FLOW_BATCH_SIZE = 4  # pairs per estimator call (8 flows: both directions); FlowNet2 on a GPU likes batches
DEFAULT_TC_WINDOW = 30  # a whole Cityscapes snippet: the ETC protocol's 30 frames, 29 consecutive pairs
ON_ERROR = ("fail", "skip")
LOCK_NAME = ".lock"  # the prep run writing a store holds an flock on STORE/.lock
# Config fields repeated at the manifest's top level, where readers (`check_manifest`, the trainer) look for them.
TOP_LEVEL_FIELDS = ("size_wh", "protocol", "estimator", "estimator_options", "checkpoint_sha256", "codec")


@dataclass(frozen=True)
class PrepConfig:
    """Everything one `i2vda-prep flows|source|val` run needs, built once from the command line."""

    kind: str  # TARGET_KIND, SOURCE_KIND or VAL_KIND
    src: str  # "cityscapes_seq", "viper", "synthia" or "cityscapes_val"
    root: str  # dataset root, absolute
    out: str  # the stores/ folder
    size_wh: tuple[int, int]  # (W, H) of the stored frames
    split: str = "train"
    pairs: str = "all"  # Cityscapes-Seq: "all" consecutive pairs or the "annotated" ones
    protocol: str | None = None  # source stores and labels: a class protocol name
    flow: str | None = "dis"  # a registered estimator's name; None for source stores
    flow_ckpt: str | None = None
    flow_options: dict = field(default_factory=dict)  # the estimator's options by name; missing ones: their default
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    workers: int | None = None  # None: one per GPU when the estimator uses one, else one per CPU
    batch_size: int = DEFAULT_FLOW_BATCH_SIZE
    on_error: str = "fail"
    tc_window: int = DEFAULT_TC_WINDOW
    frames: str = "stored"  # frame PNGs: "stored" (fast to decode) or "compressed" (about half the bytes)
    layout: int = RUN_LAYOUT  # target shards: runs of consecutive frames (3) or one pair per sample (2, the old one)
    checkpoint_sha256: str | None = field(default=None, compare=False)  # filled by `resolve`

    @property
    def store_dir(self) -> Path:
        """stores/<name>/"""
        return Path(self.out) / self.src

    @property
    def estimator_options(self) -> dict:
        """The options given to `load_estimator` besides name and checkpoint: those that decide the flow (the
        store records them), given or default."""
        return ESTIMATORS.get(self.flow).recorded_options(self.flow_options)

    def identity(self) -> dict:
        """The fields that decide a store's content (a rerun with other values is refused)."""
        return {
            "src": self.src,
            "split": self.split,
            "size_wh": list(self.size_wh),
            "protocol": self.protocol,
            "pairs": self.pairs if self.kind == TARGET_KIND else None,
            "estimator": self.flow if self.kind != SOURCE_KIND else None,
            "estimator_options": self.estimator_options if self.kind != SOURCE_KIND else {},
            "checkpoint_sha256": self.checkpoint_sha256 if self.kind != SOURCE_KIND else None,
            "codec": FLOW_CODEC if self.kind != SOURCE_KIND else None,
            "samples_per_shard": self.samples_per_shard if self.kind != VAL_KIND else None,
            "tc_window": self.tc_window if self.kind == VAL_KIND else None,
            "frames": self.frames,
            **({"layout": self.layout} if self.kind == TARGET_KIND else {}),
        }


def resolve(config: PrepConfig) -> PrepConfig:
    """Check the options, make paths absolute and fill in the checkpoint's sha256; bad values raise InputError
    naming the flag."""
    if config.on_error not in ON_ERROR:
        raise InputError(f"--on-error: expected one of {', '.join(ON_ERROR)}, got {config.on_error!r}")
    if config.frames not in FRAME_MODES:
        raise InputError(f"--frames: expected one of {', '.join(FRAME_MODES)}, got {config.frames!r}")
    if config.layout not in TARGET_LAYOUTS:
        raise InputError(f"shard layout {config.layout}: expected one of {', '.join(map(str, TARGET_LAYOUTS))}")
    for flag, value in (
        ("--samples-per-shard", config.samples_per_shard),
        ("--batch-size", config.batch_size),
        ("--workers", config.workers if config.workers is not None else 1),
        ("--tc-window", config.tc_window),
    ):
        if value < 1:
            raise InputError(f"{flag}: expected a positive number, got {value}")
    if config.kind != SOURCE_KIND:
        estimator = ESTIMATORS.get(config.flow)
        estimator.check_weights(config.flow_ckpt)
        estimator.check_options(config.flow_options)
    if not Path(config.root).is_dir():
        raise InputError(f"--root {config.root}: no such directory")
    # Absolute paths: actors on other nodes (or in other working directories) must find the same files.
    config = replace(config, root=os.path.abspath(config.root), out=os.path.abspath(config.out))
    if config.flow_ckpt is not None:
        if not Path(config.flow_ckpt).is_file():
            raise InputError(f"--flow-ckpt {config.flow_ckpt}: no such file")
        ckpt = os.path.abspath(config.flow_ckpt)
        return replace(config, flow_ckpt=ckpt, checkpoint_sha256=file_sha256(ckpt))
    return config


@dataclass(frozen=True)
class ShardTask:
    """One unit of work: shard `index` of a store, holding `records` (sorted by key)."""

    index: int
    name: str
    records: tuple


def plan_shards(records: Sequence, store: str, samples_per_shard: int) -> list[ShardTask]:
    """Records sorted by key, cut into consecutive shards of `samples_per_shard` (the last may be shorter)."""
    ordered = sorted(records, key=lambda r: r.key)
    keys = [r.key for r in ordered]
    if len(set(keys)) != len(keys):
        raise InputError(f"{store}: the dataset lists a sample key twice (e.g. {keys[0]}); keys must be unique")
    return [
        ShardTask(i, shard_name(store, i), tuple(ordered[start : start + samples_per_shard]))
        for i, start in enumerate(range(0, len(ordered), samples_per_shard))
    ]


def plan_sha256(tasks: Sequence[ShardTask]) -> str:
    """sha256 of the plan: shard names and the keys in each, so a changed dataset is noticed on rerun."""
    text = "\n".join(f"{t.name}:{','.join(r.key for r in t.records)}" for t in tasks)
    return hashlib.sha256(text.encode()).hexdigest()


def previous_manifest(config: PrepConfig, plan_digest: str) -> dict | None:
    """The manifest a former run left in the store folder, if any; one for another config raises InputError."""
    store_dir = config.store_dir
    if not (store_dir / MANIFEST_NAME).is_file():
        return None
    manifest = read_manifest(store_dir)
    if not manifest.get("complete") and not manifest.get("shards"):
        return None  # a run that stopped before its first shard: nothing to keep
    wanted = {**config.identity(), "plan_sha256": plan_digest}
    have = manifest.get("config", {})
    differs = sorted(k for k in wanted if have.get(k) != wanted[k])
    if differs:
        shown = ", ".join(f"{k}={have.get(k)!r} (now {wanted[k]!r})" for k in differs[:3])
        raise InputError(f"{store_dir}: holds a store built with {shown}; use another --out or delete the folder")
    return manifest


def finished_shards(store_dir: Path, manifest: dict | None, tasks: Sequence[ShardTask]) -> dict[str, dict]:
    """Shard entries of the previous manifest whose file exists with the recorded sha256 (verified by reading)."""
    if manifest is None:
        return {}
    planned = {t.name for t in tasks}
    done = {}
    for entry in manifest.get("shards", []):
        path = store_dir / entry["name"]
        if entry["name"] in planned and path.is_file() and file_sha256(path) == entry["sha256"]:
            done[entry["name"]] = entry
    return done


@contextmanager
def store_lock(store_dir: Path) -> Iterator[None]:
    """Hold the store's lock (`STORE/.lock`, flock) while a prep run writes it; a second run on the same store is
    refused with one line naming the holder, rather than sharing its shards and temporary files."""
    path = Path(store_dir) / LOCK_NAME
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise InputError(
                f"{store_dir}: another i2vda-prep (pid {holder}) is writing this store; let it finish, "
                f"or use another --out"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def remove_partials(store_dir: Path) -> None:
    """Delete temporary files a killed run left behind (they never have a shard's final name)."""
    for path in store_dir.glob(f"*{PARTIAL_SUFFIX}"):
        path.unlink(missing_ok=True)


def store_manifest(
    config: PrepConfig,
    plan_digest: str,
    planned: int,
    shards: dict[str, dict],
    complete: bool,
    timing: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """The manifest body: deterministic except `timing`; shards sorted by name, skipped samples sorted by key."""
    entries = [shards[name] for name in sorted(shards)]
    skipped = sorted((s for e in entries for s in e.get("skipped", [])), key=lambda s: s["key"])
    return {
        "name": config.src,
        "kind": config.kind,
        **{k: config.identity()[k] for k in TOP_LEVEL_FIELDS},
        "config": {**config.identity(), "plan_sha256": plan_digest},
        "run": {"root": config.root, "on_error": config.on_error},
        "complete": complete,
        "num_planned": planned,
        "num_samples": sum(e["samples"] for e in entries),
        **(
            {"layout": config.layout, "num_pairs": sum(e.get("pairs", e["samples"]) for e in entries)}
            if config.kind == TARGET_KIND
            else {}
        ),
        "num_skipped": len(skipped),
        "bytes": sum(e["bytes"] for e in entries),
        "shards": entries,
        "skipped": skipped,
        "timing": timing or {},
        **(extra or {}),
    }
