"""Source and target batches streamed from the WebDataset stores, one batch per iteration, reproducible for resume.

The batch of iteration i on rank r is a pure function of (seed, r, i): iterations are grouped in blocks of
`block_iters`; block b of a store is the sample sequence of a generator seeded with (seed, store, r, b) that draws
shards with replacement from the rank's share of the store (WebDataset's "resampled" mode, split by node) and passes
their samples through a shuffle buffer (target pairs: a shard of layout 3 holds runs of consecutive frames, expanded
into the same pairs in the same order as a layout-2 shard of the same plan, before the buffer, so the buffer mixes
pairs, not runs); iteration i takes samples [(i mod K) B, (i mod K + 1) B) of block i // K.
A resumed run opens block i // K and skips (i mod K) B raw samples without decoding them, so it sees exactly the
data the uninterrupted run saw. DataLoader workers split the decoding, not the shards: worker w of n produces
iterations start + w, start + w + n, ... (the DataLoader hands their batches back round-robin, in order) and skips
the others' samples undecoded; the stream is therefore the same for any number of workers.

`--shards` is a folder or a URL (http://, https://, pipe:COMMAND; `pipeline.shards.remote`): the manifests are read
first, then every shard is streamed as it is drawn, with no local copy. Every shard is checked against its manifest
entry: its size when the stores are opened (a URL's when the server sends it), every member's declared size before
it is read or decoded (the store's size bounds them), its size read, sample count and sha256 whenever the stream
reads it to the end (`pipeline.shards.raw_items`); a source label's ids must be train ids of the protocol (or 255).
A bad shard in a DataLoader worker comes back to the training process as the worker's one-line error, not as its
flattened traceback. Workers ignore SIGTERM, SIGUSR1 and SIGINT: the training process handles them
(`trainer/training/preemption.py`) and stops its workers itself.

Batches (torch, CPU): target frames `frame0`, `frame1` float RGB 0..255 (B, 3, H, W), flows `flow_01`, `flow_10`
float32 (B, 2, H, W) pixels (x, y) on the first frame's grid (the shards' members `flow01`, `flow10`); source
`image` float RGB 0..255 (B, 3, H, W), `label` long (B, H, W) train ids, 255 = ignore; `keys` the sample keys.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.errors import InputError
from pipeline.shards import (
    SOURCE_KIND,
    TARGET_KIND,
    ShardEntry,
    StoreInfo,
    decode_sample,
    open_store,
    raw_items,
    store_location,
)
from pipeline.sources import IGNORE_ID, id_outside
from trainer.training.config import TrainConfig

# Seed words that keep the source and target streams of one rank independent.
SOURCE_STREAM, TARGET_STREAM = 0, 1
# Batches each DataLoader worker keeps ready (PyTorch's default).
PREFETCH_FACTOR = 2


@dataclass(frozen=True)
class StorePlan:
    """The shard files of the two stores, as their manifests list them (only shards holding samples)."""

    source_shards: tuple[ShardEntry, ...]
    target_shards: tuple[ShardEntry, ...]
    estimator_options: dict  # how the target store's flows were estimated (the online F(I1, It) uses the same)
    stores: dict = dataclasses.field(default_factory=dict)  # {"source", "target"}: StoreInfo.identity(), for resume


def _store(config: TrainConfig, name: str, flag: str, command: str) -> StoreInfo:
    """The store `name` in the --shards folder, local or at a URL (its manifest is fetched first)."""
    path = store_location(config.shards) / name
    if isinstance(path, Path) and not path.is_dir():
        raise InputError(f"{flag} {name}: no store at {path}; build it with `{command}` (or pass --shards)")
    return open_store(path)


def _size_hw(store: StoreInfo) -> tuple[int, int]:
    if store.size_hw is None:
        raise InputError(f"{store.path}: the manifest records no size_wh; rebuild the store with i2vda-prep")
    return store.size_hw


def open_stores(config: TrainConfig) -> tuple[TrainConfig, StorePlan]:
    """Check both stores' manifests against `config` (one-line InputError on a mismatch); -> the config with the
    stores' protocol, sizes and flow estimator filled in where it left them None, and the shard lists."""
    source = _store(config, config.source, "--source", "i2vda-prep source")
    target = _store(config, config.target, "--target", "i2vda-prep flows")
    source.check(kind=SOURCE_KIND, protocol=config.protocol, size_hw=config.source_size_hw)
    target.check(kind=TARGET_KIND, size_hw=config.target_size_hw, estimator=config.flow_estimator)
    if source.protocol is None:
        raise InputError(f"{source.path}: the manifest records no class protocol")
    resolved = dataclasses.replace(
        config,
        protocol=source.protocol,
        source_size_hw=_size_hw(source),
        target_size_hw=_size_hw(target),
        flow_estimator=target.estimator,
    )
    if resolved.online_flow == "estimator" and resolved.flow_estimator is None:
        raise InputError(f"{target.path}: the manifest names no flow estimator; pass --online-flow linear")
    options = dict(target.estimator_options)
    stores = {"source": source.identity(), "target": target.identity()}
    return resolved, StorePlan(source.sample_entries(), target.sample_entries(), options, stores)


def rank_shards(shards: tuple, rank: int, world: int) -> tuple:
    """This rank's share of a store (split by node); every rank reads all shards when there are fewer than ranks."""
    return shards[rank::world] if len(shards) >= world else shards


def _shuffled(samples: Iterator[dict], buffer_size: int, rng: np.random.Generator) -> Iterator[dict]:
    """A shuffle buffer over an endless stream: once full, emit a random slot and refill it with the next sample."""
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        slot = int(rng.integers(buffer_size))
        yield buffer[slot]
        buffer[slot] = sample


def block_samples(shards: tuple[ShardEntry, ...], seed_words: tuple[int, ...], buffer_size: int) -> Iterator[dict]:
    """The endless raw (undecoded) sample sequence seeded by seed_words: shards drawn with replacement, shuffled;
    each shard checked against its manifest entry as it is read."""
    rng = np.random.default_rng(seed_words)

    def resampled() -> Iterator[dict]:
        while True:
            entry = shards[int(rng.integers(len(shards)))]
            yield from raw_items(entry.path, entry)

    return _shuffled(resampled(), buffer_size, rng)


class _BlockCursor:
    """Reads one store's stream for one rank and returns the raw samples of any (increasing) iteration."""

    def __init__(self, shards, seed_words: tuple[int, ...], block_iters: int, batch_size: int, buffer_size: int):
        self.shards, self.seed_words = shards, seed_words
        self.block_iters, self.batch_size, self.buffer_size = block_iters, batch_size, buffer_size
        self.block, self.position, self.samples = None, 0, iter(())

    def batch(self, iteration: int) -> list[dict]:
        """The batch_size raw samples of `iteration`, skipping (not decoding) those of earlier iterations."""
        block, offset = divmod(iteration, self.block_iters)
        first = offset * self.batch_size
        if block != self.block or first < self.position:
            self.samples = block_samples(self.shards, (*self.seed_words, block), self.buffer_size)
            self.block, self.position = block, 0
        for _ in range(first - self.position):
            next(self.samples)
        self.position = first + self.batch_size
        return [next(self.samples) for _ in range(self.batch_size)]


def _image_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB arrays -> float (B, 3, H, W), 0..255."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().contiguous()


def _flow_tensor(flows: list[np.ndarray]) -> torch.Tensor:
    """(2, H, W) float32 pixel flows -> (B, 2, H, W)."""
    return torch.from_numpy(np.stack(flows)).float()


# Members whose pixels are (2, H, W) (flows), not (H, W, ...) (pictures and labels).
FLOW_MEMBERS = ("flow01", "flow10")


def _decoded(raw: dict, fields: tuple[str, ...], size_hw: tuple[int, int]) -> dict:
    """decode_sample(raw, size_hw), refused in one line if a field is missing or not of the size the manifest says
    (the pictures' headers are checked against `size_hw` before they are decoded)."""
    sample = decode_sample(raw, size_hw)
    where = f"{raw.get('__url__', 'shard')}: {raw.get('__key__', '?')}"
    for field in fields:
        if field not in sample:
            raise InputError(f"{where}: sample lacks {field}")
        found_hw = sample[field].shape[1:] if field in FLOW_MEMBERS else sample[field].shape[:2]
        if tuple(found_hw) != tuple(size_hw):
            raise InputError(f"{where}.{field}: size {tuple(found_hw)}, the manifest says {size_hw} (H, W)")
    return sample


def collate_target(raws: list[dict], size_hw: tuple[int, int]) -> dict:
    """Raw target pairs -> {frame0, frame1 (B, 3, H, W) float 0..255; flow_01, flow_10 (B, 2, H, W) px; keys}."""
    samples = [_decoded(r, ("frame0", "frame1", *FLOW_MEMBERS), size_hw) for r in raws]
    return {
        "frame0": _image_tensor([s["frame0"] for s in samples]),
        "frame1": _image_tensor([s["frame1"] for s in samples]),
        "flow_01": _flow_tensor([s["flow01"] for s in samples]),
        "flow_10": _flow_tensor([s["flow10"] for s in samples]),
        "keys": [s["__key__"] for s in samples],
    }


def check_label_ids(label: np.ndarray, num_classes: int, where: str) -> None:
    """Refuse a label holding an id that is neither a train id 0..num_classes-1 nor IGNORE_ID (`id_outside`: one
    vectorised max in the loader, so the loss never meets it on the GPU)."""
    bad = id_outside(label, num_classes)
    if bad is not None:
        raise InputError(
            f"{where}.label.png: holds label id {bad}, outside the protocol's train ids 0..{num_classes - 1} "
            f"({IGNORE_ID} = ignore); the store's labels are of another protocol or damaged"
        )


def collate_source(raws: list[dict], size_hw: tuple[int, int], num_classes: int) -> dict:
    """Raw source samples -> {image (B, 3, H, W) float 0..255; label (B, H, W) long train ids; keys}."""
    samples = [_decoded(r, ("image", "label"), size_hw) for r in raws]
    for raw, sample in zip(raws, samples):
        check_label_ids(sample["label"], num_classes, f"{raw.get('__url__', 'shard')}: {sample['__key__']}")
    label = torch.from_numpy(np.stack([s["label"] for s in samples])).long()
    return {
        "image": _image_tensor([s["image"] for s in samples]),
        "label": label,
        "keys": [s["__key__"] for s in samples],
    }


class IterationBatches(IterableDataset):
    """{"iteration": i, "source": ..., "target": ...} for i = start, start + 1, ... on one rank (module docstring)."""

    def __init__(self, config: TrainConfig, plan: StorePlan, rank: int, world: int, start: int):
        super().__init__()
        self.config, self.plan, self.rank, self.world, self.start = config, plan, rank, world, start

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        c = self.config
        cursors = {
            name: _BlockCursor(
                rank_shards(shards, self.rank, self.world),
                (c.seed, stream, self.rank),
                c.block_iters,
                c.batch_size,
                c.shuffle_buffer,
            )
            for name, shards, stream in (
                ("source", self.plan.source_shards, SOURCE_STREAM),
                ("target", self.plan.target_shards, TARGET_STREAM),
            )
        }
        for iteration in itertools.count(self.start + worker, workers):
            try:
                yield {
                    "iteration": iteration,
                    "source": collate_source(cursors["source"].batch(iteration), c.source_size_hw, c.num_classes),
                    "target": collate_target(cursors["target"].batch(iteration), c.target_size_hw),
                }
            except InputError as exc:
                if info is None:
                    raise
                # A worker's exception reaches the training process with its traceback folded into the message:
                # hand the one line over as data instead (`_raise_worker_errors`).
                yield {"iteration": iteration, "error": str(exc)}
                return


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader worker's start: SIGTERM, SIGUSR1 and SIGINT (a batch system's stop, sent to every process of the
    job; Ctrl-C, sent to every process of the terminal's group) are the training process's to handle, which stops
    its workers itself; a worker killed by one would abort the checkpoint being written."""
    for signum in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


WORKER_DIED = "DataLoader worker"  # how PyTorch's RuntimeError starts when a worker process died (OOM kill, signal)


def worker_death_line(exc: BaseException) -> str | None:
    """The one line for a DataLoader worker that died without a Python error (e.g. killed for memory): PyTorch's
    RuntimeError, or the ConnectionError or EOFError of reading from its queue as it died; else None."""
    if isinstance(exc, (ConnectionError, EOFError)):  # its end of the queue closed under the reader
        reason = f"its queue: {getattr(exc, 'strerror', None) or type(exc).__name__}"
    elif isinstance(exc, RuntimeError) and WORKER_DIED in str(exc):
        reason = next((line for line in str(exc).splitlines() if WORKER_DIED in line), "").strip()
    else:
        return None
    return (
        f"a data-loading worker process died ({reason}); the node may be out of memory: lower --num-workers or "
        f"--shuffle-buffer, or rerun with --num-workers 0 to see the error in the training process"
    )


def _raise_worker_errors(batches: Iterator[dict]) -> Iterator[dict]:
    """Re-raise a DataLoader worker's InputError, handed over as {"error": line}, in the training process; a worker
    that died is one line too."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (RuntimeError, ConnectionError, EOFError) as exc:
            line = worker_death_line(exc)
            if line is None:
                raise
            raise InputError(line) from None
        if "error" in batch:
            raise InputError(batch["error"])
        yield batch


def iteration_batches(
    config: TrainConfig, plan: StorePlan, rank: int, world: int, start: int, pin_memory: bool = False
) -> Iterator[dict]:
    """The batches of iterations start, start + 1, ... for this rank, decoded by config.num_workers workers."""
    dataset = IterationBatches(config, plan, rank, world, start)
    if config.num_workers == 0:
        return iter(dataset)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=config.num_workers,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH_FACTOR,
        worker_init_fn=ignore_stop_signals,
    )
    return _raise_worker_errors(iter(loader))


def data_position(iteration: int, config: TrainConfig, world: int) -> dict:
    """What a checkpoint records to restart the streams at `iteration` (the rest is in the config)."""
    return {
        "iteration": iteration,
        "world_size": world,
        "seed": config.seed,
        "block_iters": config.block_iters,
        "batch_size": config.batch_size,
        "shuffle_buffer": config.shuffle_buffer,
    }
