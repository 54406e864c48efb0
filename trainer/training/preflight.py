"""`i2vda-train --check`: every problem a run would stop on, found in one pass without training anything.

The settings are resolved as a run resolves them (defaults, then `--config`, then the flags); then every store is
opened and every file the run needs is read, and each problem is collected instead of stopping the check: the
settings' types and ranges, each store's manifest against the settings (complete, kind, class protocol, size, flow
estimator) and every shard's size on disk, the val store's labels, the `--init` weights (loaded into the network),
`--proxy-ckpt`, the weights of the online flow (FlowNet2 stores), the run folder against `--resume`, the device.
A setting found bad is replaced by its default for the checks after it, so one bad value does not hide the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import click
import torch

from pipeline.errors import EXIT_BAD_INPUT, InputError
from pipeline.flow import load_estimator
from pipeline.shards import SOURCE_KIND, TARGET_KIND, StoreInfo, ValStore, open_store, store_location
from pipeline.sources import get_protocol
from trainer.models import build_segmenter
from trainer.training.checkpoint import (
    check_resumable,
    latest_checkpoint,
    load_segmenter_weights,
    read_checkpoint,
    resolve_resume,
)
from trainer.training.config import SettingsError, TrainConfig
from trainer.training.networks import INIT_LOADERS

SETTLE_TRIES = 4  # bad settings are dropped and the config rebuilt; a few rounds reach the defaults


class Findings:
    """Problems (the run would stop) and warnings (it would go on), each once, in the order found."""

    def __init__(self, problems: list[str] | None = None):
        self.problems: list[str] = list(dict.fromkeys(problems or []))
        self.warnings: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    def collect(self, check: Callable[[], object]) -> object | None:
        """`check()`'s result, or None after noting its InputError."""
        try:
            return check()
        except InputError as exc:
            self.add(" ".join(str(exc).split()))
            return None


def settle(values: dict, where: str, found: Findings) -> TrainConfig:
    """The TrainConfig of `values`; each bad setting is noted and left to its default (`out` is always given)."""
    values = dict(values)
    for _ in range(SETTLE_TRIES):
        try:
            return TrainConfig.from_dict(values, where=where)
        except SettingsError as exc:
            for name, message in exc.problems:
                found.add(message)
                values.pop(name, None)
    return TrainConfig(out=values["out"])


def _store(config: TrainConfig, name: str, flag: str, kind: str, found: Findings, **expected) -> StoreInfo | None:
    """Open SHARDS/NAME (a folder or a URL) and check its manifest field by field and every shard's size (a local
    store's: a store at a URL is checked as it is read); None if it cannot be opened."""
    path = found.collect(lambda: store_location(config.shards) / name)
    if path is None:
        return None
    if isinstance(path, Path) and not path.is_dir():
        found.add(f"{flag} {name}: no store at {path}; build it with i2vda-prep (or pass --shards)")
        return None
    store = found.collect(lambda: open_store(path))
    if store is None:
        return None
    for field, want in {"kind": kind, **expected}.items():
        found.collect(lambda field=field, want=want: store.check(**{field: want}))
    entries = [entry for entry in store.shards if entry.items > 0]
    if not entries:
        found.add(f"{store.path}: the store holds no samples")
    for entry in entries:  # one shard at a time, so that each missing or resized shard is named
        found.collect(lambda entry=entry: dataclasses.replace(store, shards=(entry,)).sample_entries())
    return store


def _resolved(config: TrainConfig, source: StoreInfo | None, target: StoreInfo | None, found: Findings):
    """The config with what the stores decide filled in, as `trainer.training.data.open_stores` fills it."""
    changes = {}
    if source is not None:
        if source.protocol is None:
            found.add(f"{source.path}: the manifest records no class protocol")
        changes["protocol"] = config.protocol or source.protocol
        changes["source_size_hw"] = config.source_size_hw or source.size_hw
    if target is not None:
        changes["target_size_hw"] = config.target_size_hw or target.size_hw
        changes["flow_estimator"] = config.flow_estimator or target.estimator
    for store in (source, target):
        if store is not None and store.size_hw is None:
            found.add(f"{store.path}: the manifest records no size_wh; rebuild the store with i2vda-prep")
    return dataclasses.replace(config, **changes)


def _online_flow(config: TrainConfig, target: StoreInfo | None, found: Findings) -> None:
    """The estimator of Eq. 5's online flow loads (with its weights), and its weights are those the store used."""
    if not config.uses_tc or config.no_temporal_aug or config.online_flow == "linear" or target is None:
        return
    if config.flow_estimator is None:
        found.add(f"{target.path}: the manifest names no flow estimator; pass --online-flow linear")
        return
    # The store's options belong to its own estimator; another one (a mismatch noted above) still has its file checked.
    options = dict(target.estimator_options) if target.estimator == config.flow_estimator else {}
    estimator = found.collect(
        lambda: load_estimator(config.flow_estimator, checkpoint=config.flow_ckpt, device="cpu", **options)
    )
    have, want = getattr(estimator, "checkpoint_sha256", None), target.checkpoint_sha256
    if estimator is not None and target.estimator == config.flow_estimator and want is not None and have != want:
        found.warnings.append(
            f"--flow-ckpt {config.flow_ckpt}: sha256 {have} differs from the weights the target store's flows were "
            f"made with ({want}); the online flow would come from other weights than the stored flows"
        )


def _weights(config: TrainConfig, found: Findings) -> None:
    """--init and --proxy-ckpt load into the run's network."""
    if config.protocol is None or (config.init is None and config.proxy_ckpt is None):
        return
    model = build_segmenter(config.arch, get_protocol(config.protocol).num_classes)
    if config.init is not None:
        found.collect(lambda: INIT_LOADERS[config.init_format](model, config.init))
    if config.proxy_ckpt is not None:
        found.collect(lambda: load_segmenter_weights(model, config.proxy_ckpt))


def _run_folder(config: TrainConfig, stores: dict | None, found: Findings) -> None:
    """--out can take the run: a folder, without checkpoints unless --resume continues one that matches."""
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        found.add(f"--out {out}: is a file, expected a folder")
        return
    resume = found.collect(lambda: resolve_resume(config.resume, config.out))
    if resume is None and config.resume is None and latest_checkpoint(config.out) is not None:
        found.add(f"--out {config.out}: the run already has checkpoints; pass --resume or another --out")
    if resume is not None:
        state = found.collect(lambda: read_checkpoint(resume))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if state is not None:
            found.collect(lambda: check_resumable(state, config, world, resume, stores))


def _device(config: TrainConfig, found: Findings) -> None:
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        found.add("--device cuda: no CUDA device is visible")
    if config.amp != "off" and not cuda:
        found.add(f"--amp {config.amp}: autocast is used on CUDA only and no CUDA device is in use")


def check_run(values: dict, where: str, problems: list[str] | None = None) -> tuple[TrainConfig, Findings]:
    """(the resolved settings, every problem and warning) of a run of `values`; `problems` are those found before
    (a config file's). Nothing is written."""
    found = Findings(problems)
    config = settle(values, where, found)
    source = _store(
        config, config.source, "--source", SOURCE_KIND, found, protocol=config.protocol, size_hw=config.source_size_hw
    )
    target = _store(
        config,
        config.target,
        "--target",
        TARGET_KIND,
        found,
        size_hw=config.target_size_hw,
        estimator=config.flow_estimator,
    )
    config = _resolved(config, source, target, found)
    if config.val is not None:
        val = found.collect(lambda: ValStore(config.val))
        if val is not None:
            if config.protocol not in val.protocols:
                held = ", ".join(val.protocols) or "none"
                found.add(f"--val {config.val}: no {config.protocol} labels in the val store; it holds {held}")
            val.close()
    _online_flow(config, target, found)
    _weights(config, found)
    stores = None if source is None or target is None else {"source": source.identity(), "target": target.identity()}
    _run_folder(config, stores, found)
    _device(config, found)
    return config, found


def report(config: TrainConfig, found: Findings) -> int:
    """Print the resolved settings on stdout (as YAML: a valid --config), each warning as a `warning:` line and each
    problem as an `error:` line on stderr; -> the exit status (0: no problem, 2: problems)."""
    click.echo("# i2vda-train --check: the resolved settings (the stores fill what they decide)")
    for name, value in config.to_dict().items():
        click.echo(f"{name}: {json.dumps(value)}")
    for message in found.warnings:
        click.echo(f"warning: {message}", err=True)
    for message in found.problems:
        click.echo(f"error: {message}", err=True)
    verdict = f"{len(found.problems)} problem(s)" if found.problems else "no problem found"
    click.echo(f"# --check: {verdict}; nothing was trained or written")
    return EXIT_BAD_INPUT if found.problems else 0
