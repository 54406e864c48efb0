"""Every random number generator of one process, captured and restored, so a resumed run draws what it would have.

The states are tensors, numbers, strings, lists and dicts only, so they travel in a checkpoint that
`torch.load(weights_only=True)` reads (trainer/training/checkpoint.py).
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng(device: torch.device) -> dict:
    """This process's RNG states (torch CPU and CUDA, numpy, python) in weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }


def restore_rng(rng: dict) -> None:
    """Set every RNG back to a capture_rng() state."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def gather_rng(device: torch.device) -> list[dict]:
    """Every rank's RNG states, indexed by rank (a collective under DDP: all ranks must call it)."""
    mine = capture_rng(device)
    if not torch.distributed.is_initialized():
        return [mine]
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, mine)
    return everyone
