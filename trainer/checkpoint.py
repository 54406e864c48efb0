"""Resumable checkpoints: M, M', D, both optimisers, the iteration, every RNG, the data position and the config.

Files are `RUN/checkpoints/iter_NNNNNNN.pt` (NNNNNNN = iterations done, 7 digits), written under a temporary name and
renamed, so a crash never leaves a half file under the final name. Everything inside is a tensor, a number, a
string, a list, a tuple or a dict, so `torch.load(weights_only=True)` reads it without running pickled code.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import InputError
from trainer.config import TrainConfig, resume_mismatch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d{7})\.pt$")


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    """RUN/checkpoints/iter_NNNNNNN.pt for a checkpoint taken after `iteration` iterations."""
    return Path(run_dir) / CHECKPOINT_DIR / f"iter_{iteration:07d}.pt"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the most iterations in RUN/checkpoints, or None."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("iter_*.pt") if (m := _NAME.match(p.name))]
    return max(found)[1] if found else None


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


def save_atomic(state: dict, path: str | Path) -> Path:
    """torch.save to a temporary name in the same folder, then os.replace onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        torch.save(state, partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint read with weights_only=True; an unreadable or foreign file is a one-line InputError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is bad input, whatever the reason
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable weights-only checkpoint ({first})") from None
    needed = ("model", "iteration", "config", "rng", "data")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise InputError(f"{path}: not an i2vda-train checkpoint (expected keys {', '.join(needed)})")
    return state


def check_resumable(state: dict, config: TrainConfig, world: int, path: str | Path) -> None:
    """Refuse to resume a checkpoint whose run differs from this one (other than RESUMABLE_FIELDS)."""
    mismatch = resume_mismatch(state["config"], config)
    if mismatch is not None:
        raise InputError(f"--resume {path}: the checkpoint was trained with another setting ({mismatch})")
    saved_world = state["data"]["world_size"]
    if saved_world != world:
        raise InputError(f"--resume {path}: written by {saved_world} process(es), this run has {world}; the data "
                         f"streams are per rank, so resume with the same number of processes")  # fmt: skip


def capture_rng(device: torch.device) -> dict:
    """This process's RNG states (torch CPU and CUDA, numpy, python) in weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},  # fmt: skip
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }


def restore_rng(rng: dict) -> None:
    """Set every RNG back to a capture_rng() state."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))  # fmt: skip
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def _state_or_none(obj):
    return None if obj is None else obj.state_dict()


def gather_rng(device: torch.device) -> list[dict]:
    """Every rank's RNG states, indexed by rank (a collective under DDP: all ranks must call it)."""
    mine = capture_rng(device)
    if not torch.distributed.is_initialized():
        return [mine]
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, mine)
    return everyone


def training_state(nets, config: TrainConfig, iterations: int, rng: list[dict], data: dict) -> dict:
    """The checkpoint dict of docs/DEVELOPING.md ("Checkpoint files") after `iterations` iterations."""
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
    }


def restore_training_state(nets, state: dict, rank: int) -> int:
    """Load a training_state() into the networks, optimisers and this rank's RNGs; -> iterations done."""
    nets.model.load_state_dict(state["model"])
    for name, target in (("proxy", nets.proxy), ("disc", nets.disc), ("opt_seg", nets.opt_seg),
                         ("opt_disc", nets.opt_disc), ("scaler_seg", nets.scaler_seg),
                         ("scaler_disc", nets.scaler_disc)):  # fmt: skip
        if target is not None and state.get(name) is not None:
            target.load_state_dict(state[name])
    restore_rng(state["rng"][rank])
    return int(state["iteration"])
