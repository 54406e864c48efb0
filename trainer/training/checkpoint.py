"""Our checkpoint format, in one place: where files go and their names, how they are written and read, and the
networks and settings they give back.

Files are `RUN/checkpoints/iter_NNNNNNN.pt` (NNNNNNN = iterations done, written with 7 digits), written under a
temporary name and renamed (`pipeline.shards.atomic_path`), so a crash never leaves a half file under the final
name; a write that fails (a full disk, a quota) is one line naming the checkpoint and the cause, and leaves the earlier
checkpoints as they were. `prune_checkpoints` keeps the newest `--keep-checkpoints` (and the best by `--val`).
Everything inside is a tensor, a number, a string, a list, a tuple or a dict, read by the trainer's one `torch.load`
(`trainer.models.weights.load_torch_file`, `weights_only=True`), so no pickled code runs; a file that pickles anything
else is refused, and nothing in it runs. Resume (`read_checkpoint`), eval, predict and the demo's figure
(`load_segmenter`), `--init-format segmenter` and `--proxy-ckpt` (`load_segmenter_weights`) all read through here.
The dict is `training_state`'s (docs/DEVELOPING.md, "Checkpoint files").
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.errors import InputError
from pipeline.shards import atomic_path
from trainer.models import AUX_HEAD_PREFIX, build_segmenter
from trainer.models.weights import (
    check_finite,
    check_fit,
    load_torch_file,
    load_weights,
    nonfinite_tensor,
    read_state_dict,
)
from trainer.training.config import TrainConfig, resume_mismatch
from trainer.training.rng import restore_rng

CHECKPOINT_DIR = "checkpoints"
# iter_<iterations>.pt: written with 7 digits (sorted names = sorted iterations below 10^7), read with any number.
CHECKPOINT_NAME = re.compile(r"^iter_(\d+)\.pt$")
CHECKPOINT_GLOB = "iter_*.pt"
RESUME_KEYS = ("model", "iteration", "config", "rng", "data")  # what resuming a run needs
MODEL_KEYS = ("model", "config")  # what rebuilding M for eval needs
# What a checkpoint's config must name to rebuild M (`load_segmenter`).
MODEL_CONFIG_FIELDS = ("arch", "num_classes", "protocol", "target_size_hw")
# Parts of a training state that must be finite to be written or read: the networks and the optimiser states.
NONFINITE_CHECKED = ("model", "proxy", "disc", "opt_seg", "opt_disc")


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    """RUN/checkpoints/iter_NNNNNNN.pt for a checkpoint taken after `iteration` iterations."""
    return Path(run_dir) / CHECKPOINT_DIR / f"iter_{iteration:07d}.pt"


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The iter_<N>.pt files of one folder, in increasing N."""
    found = [(int(m[1]), p) for p in Path(folder).glob(CHECKPOINT_GLOB) if (m := CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the most iterations in RUN/checkpoints, or None."""
    found = checkpoints_in(Path(run_dir) / CHECKPOINT_DIR)
    return found[-1] if found else None


def checkpoint_files(path: Path, flag: str = "--ckpt") -> list[Path]:
    """[path] for a file; for `RUN/` or `RUN/checkpoints/` every iter_<N>.pt, in increasing N."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{flag} {path}: no such checkpoint file or run folder")
    for folder in (path / CHECKPOINT_DIR, path):
        found = checkpoints_in(folder)
        if found:
            return found
    raise InputError(f"{flag} {path}: no iter_<N>.pt checkpoints in {path}/{CHECKPOINT_DIR}/ or {path}/")


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """`--resume`: "latest" -> the newest checkpoint of the run (None if there is none yet), else the named file."""
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not path.is_file():
        raise InputError(f"--resume {resume}: no such checkpoint file")
    return path


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """torch.save to a temporary name in the same folder, then rename onto `path`. Non-finite weights of a
    training state (`NONFINITE_CHECKED`) are refused (ValueError): no checkpoint of a diverged run is written."""
    path = Path(path)
    bad = nonfinite_tensor({k: state[k] for k in NONFINITE_CHECKED if state.get(k) is not None})
    if bad is not None:
        raise ValueError(f"{path}: not written, {bad} holds NaN or inf")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as partial, open(partial, "wb") as raw:
            writer = _WriteErrors(raw)
            try:
                torch.save(state, writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: torch's writer failed on its own (inline_container.cc)
        raise InputError(f"{path}: checkpoint not written ({_cause(exc)}); {_newest_left(path)}") from None
    return path


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror or exc}" + (f", {errno.errorcode[exc.errno]}" if exc.errno in errno.errorcode else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _newest_left(path: Path) -> str:
    """What a failed save leaves: the checkpoints before it, untouched."""
    earlier = [p for p in checkpoints_in(path.parent) if p != path]
    return f"the newest checkpoint is still {earlier[-1]}" if earlier else "no earlier checkpoint exists"


class _WriteErrors:
    """A file torch.save writes through: torch turns the OSError of a failed write (ENOSPC, EDQUOT, EFBIG) into a
    RuntimeError that names no cause, so the first one is kept here and raised instead."""

    def __init__(self, raw):
        self.raw, self.error = raw, None

    def write(self, data) -> int:
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name):  # tell, seek, fileno: the file's own
        return getattr(self.raw, name)


def read_checkpoint(
    path: str | Path,
    needs: tuple[str, ...] = RESUME_KEYS,
    config_fields: tuple[str, ...] = (),
    where: str | None = None,
) -> dict:
    """One of our checkpoints: a dict holding at least `needs`, whose config names `config_fields`; anything else is
    a one-line InputError starting with `where` (default: the path). Its weights are checked where they are loaded
    (`load_weights`, `check_resumable`), once."""
    where = where or str(path)
    state = load_torch_file(path, "i2vda-train", where)
    if not isinstance(state, dict) or any(k not in state for k in needs) or not isinstance(state["model"], Mapping):
        raise InputError(f"{where}: not an i2vda-train checkpoint (expected a dict with keys {', '.join(needs)})")
    if config_fields:
        absent = [name for name in config_fields if name not in state.get("config", {})]
        if absent:
            raise InputError(f"{where}: its config lacks {', '.join(absent)}; expected an i2vda training checkpoint")
    return state


def saved_config(values: Mapping, where: str) -> TrainConfig:
    """The TrainConfig of a checkpoint's config dict. Settings this version does not know (a checkpoint of an older
    or a newer version) are left out, and the ones it lacks take their defaults: eval and predict only rebuild M
    (`MODEL_CONFIG_FIELDS`), and `out`, the folder the run was written to, is "" where a config does not say it."""
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig.from_dict({"out": "", **{k: v for k, v in values.items() if k in names}}, where=where)
    if "num_classes" in values and int(values["num_classes"]) != config.num_classes:
        raise InputError(
            f"{where}: its config says {values['num_classes']} classes, but protocol {config.protocol} has "
            f"{config.num_classes}"
        )
    return config


def load_segmenter(path: str | os.PathLike, device="cpu", weights: str = "model") -> tuple[nn.Module, TrainConfig, int]:
    """(M in eval mode on `device`, the run's TrainConfig, iterations done) from one of our checkpoints; with
    weights="proxy", its M' instead. A file that is not a torch checkpoint, not ours or of another network raises
    InputError naming it."""
    where = f"--ckpt {path}"
    ckpt = read_checkpoint(path, tuple(dict.fromkeys((*MODEL_KEYS, weights))), MODEL_CONFIG_FIELDS, where)
    config, state = saved_config(ckpt["config"], where), ckpt[weights]
    if not isinstance(state, Mapping):
        raise InputError(f"{where}: holds no {weights} weights (its '{weights}' entry is {type(state).__name__})")
    # The aux head (layer5) is in the file only when the network was built multi-level (trainer/models/deeplab.py).
    multi_level = any(k.startswith(AUX_HEAD_PREFIX) for k in state)
    model = build_segmenter(config.arch, config.num_classes, multi_level=multi_level)
    load_weights(model, state, where, "segmenter", f"a {config.arch} with {config.num_classes} classes")
    return model.to(device).eval(), config, int(ckpt.get("iteration", -1))


def load_segmenter_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load our own checkpoint's M (`--init-format segmenter`, `--proxy-ckpt`) or a bare state dict (e.g. an ADVENT or
    DA-VSN snapshot) into `model`, strictly."""
    what = "segmenter"
    state = read_state_dict(path, what)
    if "model" in state:
        state = state["model"]
        if not isinstance(state, Mapping):
            raise InputError(f"{path}: its 'model' entry is a {type(state).__name__}, expected a state dict")
    return load_weights(model, state, str(path), what)


def check_resumable(state: dict, config: TrainConfig, world: int, path: str | Path, stores: dict | None = None) -> None:
    """Refuse to resume a checkpoint whose run differs from this one (other than RESUMABLE_FIELDS), or, given this
    run's `stores` (`StoreInfo.identity()` of "source" and "target"), whose stores held other data (unless
    `config.resume_other_stores`: then one warning line on stderr per such store). Stores are compared by content,
    not by path: the same stores copied to another folder resume."""
    check_finite(state["model"], f"--resume {path}", "segmenter")
    mismatch = resume_mismatch(state["config"], config)
    if mismatch is not None:
        raise InputError(f"--resume {path}: the checkpoint was trained with another setting ({mismatch})")
    for role, saved in (state.get("stores") or {}).items():  # checkpoints older than the record: not checked
        current = (stores or {}).get(role)
        if current is None:
            continue
        differs = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
        if not differs:
            continue
        if config.resume_other_stores:
            if os.environ.get("RANK", "0") == "0":  # torchrun's rank: one warning per run, not one per process
                print(
                    f"warning: --resume-other-stores: the --{role} store {current.get('name')!r} differs from "
                    f"the one {path} was trained on in {', '.join(differs)}; resuming on it",
                    file=sys.stderr,
                )
            continue
        k = differs[0]
        raise InputError(
            f"--resume {path}: the --{role} store {current.get('name')!r} holds other data than the "
            f"checkpoint was trained on ({k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}); "
            f"resume on the same stores, pass --resume-other-stores to resume on them knowingly, or "
            f"start a new run with another --out"
        )
    saved_world = state["data"]["world_size"]
    if saved_world != world:
        raise InputError(
            f"--resume {path}: written by {saved_world} process(es), this run has {world}; the data "
            f"streams are per rank, so resume with the same number of processes"
        )


def _state_or_none(obj):
    return None if obj is None else obj.state_dict()


def training_state(
    nets, config: TrainConfig, iterations: int, rng: list[dict], data: dict, stores: dict | None = None
) -> dict:
    """The checkpoint dict of docs/DEVELOPING.md ("Checkpoint files") after `iterations` iterations; `stores` (the
    stores' `StoreInfo.identity()` by role) is what `check_resumable` compares on resume."""
    return {
        "model": nets.model.state_dict(),
        "proxy": _state_or_none(nets.proxy),
        "disc": _state_or_none(nets.disc),
        "opt_seg": nets.opt_seg.state_dict(),
        "opt_disc": _state_or_none(nets.opt_disc),
        "scaler_seg": nets.scaler_seg.state_dict(),
        "scaler_disc": nets.scaler_disc.state_dict(),
        "iteration": iterations,
        "rng": rng,
        "data": data,
        "config": config.to_dict(),
        "stores": stores or {},
    }


def restore_training_state(nets, state: dict, rank: int, where: str | Path = "--resume") -> int:
    """Load a training_state() into the networks, optimisers and this rank's RNGs; -> iterations done. Every network's
    weights are fitted first (`check_fit`), so a checkpoint whose weights are not this config's networks (a config
    edited by hand, another arch) is one InputError line, not a size-mismatch traceback."""
    where = f"--resume {where}"
    network = f"the {state['config'].get('arch')} its config names"
    check_fit(nets.model.state_dict(), state["model"], where, "segmenter", network)
    for name in ("proxy", "disc"):
        target = getattr(nets, name)
        if target is not None and state.get(name) is not None:
            check_fit(target.state_dict(), state[name], where, name, network if name == "proxy" else "this run's D")
    nets.model.load_state_dict(state["model"])
    # Each of M's groups carries its lr factor (the config's, which a resume may not change); checkpoints written before
    # the groups carried it hold no such key, and loading an optimiser state replaces the groups' settings.
    lr_mults = [group["lr_mult"] for group in nets.opt_seg.param_groups]
    for name, target in (
        ("proxy", nets.proxy),
        ("disc", nets.disc),
        ("opt_seg", nets.opt_seg),
        ("opt_disc", nets.opt_disc),
        ("scaler_seg", nets.scaler_seg),
        ("scaler_disc", nets.scaler_disc),
    ):
        if target is not None and state.get(name) is not None:
            try:
                target.load_state_dict(state[name])
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # an optimiser state of other groups
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(f"{where}: its {name} state does not fit this run ({first})") from None
    for group, lr_mult in zip(nets.opt_seg.param_groups, lr_mults):
        group["lr_mult"] = lr_mult
    rng = state["rng"]
    if not isinstance(rng, list) or not 0 <= rank < len(rng):
        raise InputError(f"{where}: it holds no random state for rank {rank}")
    restore_rng(rng[rank])
    return int(state["iteration"])


def prune_checkpoints(run_dir: str | Path, keep: int, protect: int | None = None) -> list[Path]:
    """With keep > 0, delete all but the newest `keep` checkpoints of the run, never the newest and never the one
    after `protect` iterations (the best by --val); keep = 0 keeps every one; -> the files deleted."""
    if keep <= 0:
        return []
    found = checkpoints_in(Path(run_dir) / CHECKPOINT_DIR)
    removed = [p for p in found[:-keep] if int(CHECKPOINT_NAME.match(p.name)[1]) != protect]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
