"""The Ray job behind `i2vda-prep flows|source|val`.

The driver plans deterministic shards, verifies and skips those a former run finished, and hands the rest to a pool
of actors; each actor loads the estimator once and builds whole shards (`pipeline.build.Builder`), writing each under
a temporary name and renaming it. After every shard the driver rewrites the manifest (complete: false); the last
write marks it complete. Locally `ray.init()` starts Ray on this machine; with RAY_ADDRESS set it joins that cluster,
whose nodes must see --root and --out at the same paths.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import ray
from ray.util import ActorPool
from tqdm import tqdm

from pipeline.build import Builder, pin_threads
from pipeline.errors import InputError, os_error_line
from pipeline.flow.estimators import ESTIMATORS
from pipeline.plan import (
    VAL_STORE,
    PrepConfig,
    ShardTask,
    finished_shards,
    plan_sha256,
    plan_shards,
    previous_manifest,
    remove_partials,
    resolve,
    store_lock,
    store_manifest,
)
from pipeline.ray_watchdog import stop_watchdog, watch_local_ray
from pipeline.shards import SOURCE_KIND, TARGET_KIND, VAL_FILE, VAL_KIND, ValWriter, file_sha256, write_manifest
from pipeline.sources import SOURCES, list_source, protocol_names
from pipeline.sources.cityscapes import list_annotated, list_pairs

THREADS_PER_WORKER = 1  # OpenCV and torch threads per actor: N actors use N cores
ACTOR_RETRIES = 1  # a crashed actor (e.g. killed for memory) is restarted once and its shard redone
UNIT = {TARGET_KIND: "pair", SOURCE_KIND: "image", VAL_KIND: "frame"}


def registered() -> tuple:
    """The estimators and datasets this process has registered, for an actor to adopt (plugins included)."""
    return ESTIMATORS.entries(), SOURCES.entries()


def adopt(entries: tuple) -> None:
    """Register in this process what `registered` gave in the driver's."""
    estimators, sources = entries
    ESTIMATORS.adopt(estimators)
    SOURCES.adopt(sources)


@ray.remote
class PrepActor:
    """A Ray actor around one Builder: the estimator is loaded once, then whole shards or val items are built."""

    def __init__(self, config: PrepConfig, device: str, entries: tuple = ((), ())):
        pin_threads(THREADS_PER_WORKER)
        # The driver's registrations, a plugin's too. Through a module function: Ray ships this class by value, with
        # copies of the globals it names, so `ESTIMATORS` here would not be the registry the Builder reads.
        adopt(entries)
        self.builder, self.error = None, None
        try:
            self.builder = Builder(config, device=device)
        except InputError as exc:  # e.g. a checkpoint of the wrong network: reported by `ready`
            self.error = " ".join(str(exc).split())

    def shard(self, task: ShardTask) -> dict:
        """builder.shard(task), or {"error": one line} for the driver to raise."""
        return _one_line_errors(self.builder.shard, task)

    def val_item(self, record) -> dict:
        """builder.val_item(record), or {"error": one line} for the driver to raise."""
        return _one_line_errors(self.builder.val_item, record)

    @ray.method(max_task_retries=0)  # also asked to learn that a killed actor is gone
    def ready(self) -> str | None:
        """None once the estimator is loaded, else the one-line error that stopped it."""
        return self.error


def _one_line_errors(build: Callable, work) -> dict:
    """build(work); bad input and the environment's errors come back as {"error": one line}: an exception raised in
    an actor would reach the driver with the worker's traceback folded into it."""
    try:
        return build(work)
    except InputError as exc:
        return {"error": " ".join(str(exc).split())}
    except OSError as exc:  # the environment: a full disk, a read-only or vanished --out
        return {"error": os_error_line(exc)}


@contextmanager
def ray_session():
    """Use the Ray instance already set up in this process, else `ray.init()` (RAY_ADDRESS or local) and shut down.
    A local Ray is watched by `pipeline.ray_watchdog`, so it dies with this process even if it is killed."""
    if ray.is_initialized():
        yield
        return
    address = os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    watchdog = watch_local_ray() if address is None else None
    try:
        yield
    finally:
        ray.shutdown()
        if watchdog is not None:
            stop_watchdog(watchdog)


def _start_actors(config: PrepConfig, num_tasks: int) -> list:
    """One actor per GPU when FlowNet2 can use the cluster's GPUs, else one per CPU; --workers caps it."""
    resources = ray.cluster_resources()
    on_gpu = config.kind != SOURCE_KIND and ESTIMATORS.get(config.flow).uses_gpu and resources.get("GPU", 0) >= 1
    capacity = int(resources.get("GPU" if on_gpu else "CPU", 1))
    count = max(1, min(config.workers or capacity, capacity, num_tasks))
    if config.workers is not None and config.workers > capacity:
        print(
            f"--workers {config.workers}: the cluster has {capacity} {'GPU' if on_gpu else 'CPU'}s; using {count}",
            file=sys.stderr,
        )
    options = {
        "num_cpus": 1,
        "num_gpus": 1 if on_gpu else 0,
        "max_restarts": ACTOR_RETRIES,
        "max_task_retries": ACTOR_RETRIES,
    }
    device, entries = "cuda" if on_gpu else "cpu", registered()
    return [PrepActor.options(**options).remote(config, device, entries) for _ in range(count)]


def _stop_actors(actors: list) -> None:
    """Kill the actors and wait until each is gone, so none writes a temporary file after the driver cleans up."""
    for actor in actors:
        ray.kill(actor, no_restart=True)
    for actor in actors:
        try:
            ray.get(actor.ready.remote())
        except ray.exceptions.RayActorError:
            pass


def _run_pool(
    config: PrepConfig, submit: Callable, work: list, on_result: Callable, progress: tqdm, ordered: bool
) -> float:
    """Feed `work` to the actors, each item by submit(actor, item) (e.g. `_submit_shard`); `on_result` takes each
    result (as it comes, or in work order if `ordered`) and returns how many samples it settled; a bad input stops
    the job with its error line. -> the time the actors were ready (perf_counter)."""
    if not work:
        return time.perf_counter()
    with ray_session():
        return _feed_actors(config, submit, work, on_result, progress, ordered)


def _submit_shard(actor, task: ShardTask):
    return actor.shard.remote(task)


def _submit_val_item(actor, record):
    return actor.val_item.remote(record)


def _feed_actors(
    config: PrepConfig, submit: Callable, work: list, on_result: Callable, progress: tqdm, ordered: bool
) -> float:
    """`_run_pool` inside a Ray session: start the actors, wait until each is ready, feed them, stop them."""
    actors = _start_actors(config, len(work))
    pool = None
    try:
        errors = [e for e in ray.get([a.ready.remote() for a in actors]) if e]
        if errors:
            raise InputError(errors[0])
        ready_at = time.perf_counter()
        pool = ActorPool(actors)
        mapper = pool.map if ordered else pool.map_unordered
        for result in mapper(submit, work):
            if "error" in result:
                raise InputError(result["error"])
            progress.update(on_result(result))
        return ready_at
    finally:
        if pool is not None:  # cancel what is in flight: a killed actor's tasks would be announced as retried
            for ref in list(pool._future_to_actor):  # ActorPool keeps its in-flight refs here (ray/util/actor_pool.py)
                ray.cancel(ref)
        _stop_actors(actors)


def _records(config: PrepConfig) -> list:
    if config.kind == TARGET_KIND:
        return list_pairs(config.root, config.split, config.pairs)
    if config.kind == SOURCE_KIND:
        return list_source(config.src, config.root)
    return list_annotated(config.root, config.split)


def _progress(config: PrepConfig, total: int, initial: int) -> tqdm:
    # disable=None: a bar on a terminal only, so logs and captured stderr hold just the summary or the error line.
    return tqdm(
        total=total,
        initial=initial,
        unit=UNIT[config.kind],
        desc=config.src,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None,
    )


def _timing(start: float, ready_at: float, samples: int) -> dict:
    """Wall time of the run, the part spent starting Ray and the actors, and the rate once they were up."""
    end = time.perf_counter()
    work = end - ready_at
    return {
        "elapsed_s": round(end - start, 3),
        "startup_s": round(ready_at - start, 3),
        "samples_per_s": round(samples / work, 3) if samples and work > 0 else None,
    }


def run_shards(config: PrepConfig) -> dict:
    """Build (or finish) a shard store, `i2vda-prep flows` or `source`; -> the final manifest. A store already
    complete is verified and left untouched (it may be read-only); otherwise the run holds the store's lock."""
    config = resolve(config)
    tasks = plan_shards(_records(config), config.src, config.samples_per_shard)
    digest = plan_sha256(tasks)
    previous = previous_manifest(config, digest)
    if previous is not None and previous.get("complete"):
        done = finished_shards(config.store_dir, previous, tasks)
        if set(done) == {t.name for t in tasks}:
            return {**previous, "timing": {}, "resumed_shards": len(done)}
    config.store_dir.mkdir(parents=True, exist_ok=True)
    with store_lock(config.store_dir):
        return _build_shards(config, tasks, digest)


def _units(entry: dict) -> int:
    """What a shard entry holds in the progress bar's units: pairs of a target store (its tar samples may be runs
    of several pairs), else samples."""
    return entry.get("pairs", entry["samples"])


def _build_shards(config: PrepConfig, tasks: list[ShardTask], digest: str) -> dict:
    """Build the shards a former run did not finish, rewriting the manifest after each one (complete: false)."""
    done = finished_shards(config.store_dir, previous_manifest(config, digest), tasks)
    remove_partials(config.store_dir)
    planned = sum(len(t.records) for t in tasks)

    def record(entry: dict) -> int:
        done[entry["name"]] = entry
        write_manifest(config.store_dir, store_manifest(config, digest, planned, done, complete=False))
        return _units(entry) + len(entry["skipped"])

    start = time.perf_counter()
    todo = [t for t in tasks if t.name not in done]
    resumed = len(done)
    write_manifest(config.store_dir, store_manifest(config, digest, planned, done, complete=False))
    initial = sum(_units(e) + len(e["skipped"]) for e in done.values())
    try:
        with _progress(config, planned, initial) as progress:
            ready_at = _run_pool(config, _submit_shard, todo, record, progress, ordered=False)
    finally:
        remove_partials(config.store_dir)
    done_now = sum(_units(done[t.name]) for t in todo)
    manifest = store_manifest(config, digest, planned, done, complete=True, timing=_timing(start, ready_at, done_now))
    return {**write_manifest(config.store_dir, manifest), "resumed_shards": resumed}


def run_val(config: PrepConfig) -> dict:
    """Build the Cityscapes-val HDF5 store, `i2vda-prep val` (rebuilt whole unless already complete)."""
    config = resolve(config)
    records = sorted(_records(config), key=lambda r: r.key)
    digest = plan_sha256(plan_shards(records, VAL_STORE, max(len(records), 1)))
    config.store_dir.mkdir(parents=True, exist_ok=True)
    previous = previous_manifest(config, digest)
    done = finished_shards(config.store_dir, previous, [ShardTask(0, VAL_FILE, ())])
    if previous is not None and previous.get("complete") and VAL_FILE in done:
        return {**previous, "resumed_shards": 1}
    with store_lock(config.store_dir):
        return _build_val(config, records, digest)


def _build_val(config: PrepConfig, records: list, digest: str) -> dict:
    """Write val.h5 from the actors' items in record order (the same file bytes on every run), then its manifest."""
    remove_partials(config.store_dir)
    skipped: list = []
    start = time.perf_counter()
    with ValWriter(config.store_dir / VAL_FILE) as writer:

        def add(result: dict) -> int:
            if "key" in result:
                writer.add(result)
            else:
                skipped.extend(result["skipped"])
            return 1

        with _progress(config, len(records), 0) as progress:
            ready_at = _run_pool(config, _submit_val_item, records, add, progress, ordered=True)  # same file bytes
        count = writer.count
        path = writer.commit()
    entry = {
        "name": VAL_FILE,
        "samples": count,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "skipped": skipped,
    }
    timing = _timing(start, ready_at, count)
    manifest = store_manifest(
        config,
        digest,
        len(records),
        {VAL_FILE: entry},
        complete=True,
        timing=timing,
        extra={"protocols": list(protocol_names())},
    )
    return {**write_manifest(config.store_dir, manifest), "resumed_shards": 0}


def summary_lines(manifest: dict) -> Iterable[str]:
    """The closing summary: samples, shards, skipped with reasons, bytes and time."""
    unit = UNIT[manifest["kind"]]
    timing = manifest.get("timing") or {}
    rate = timing.get("samples_per_s")
    count = manifest.get("num_pairs", manifest["num_samples"])  # a target store's runs hold several pairs
    yield (
        f"{manifest['name']}: {count} {unit}s of {manifest['num_planned']} in "
        f"{len(manifest['shards'])} file(s) ({manifest.get('resumed_shards', 0)} verified from a previous run), "
        f"{manifest['num_skipped']} skipped, {manifest['bytes'] / 2**20:.1f} MiB, "
        f"{timing.get('elapsed_s', 0):.1f} s"
        + (f" ({timing['startup_s']:.1f} s starting Ray and workers, then {rate:.2f} {unit}s/s)" if rate else "")
    )
    for entry in manifest["skipped"]:
        yield f"  skipped {entry['key']} ({entry['path']}): {entry['reason']}"
