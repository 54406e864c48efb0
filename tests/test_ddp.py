"""DDP on the CPU: two gloo processes train in step (same weights), on different data, and only rank 0 writes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from test_train_loop import load, make_stores, read_log, tiny_config

from trainer.training.loop import train

WORLD = 2
MAX_ITER = 3
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")  # BN buffers: each rank updates its own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, stores: str, run: str, out: str) -> None:
    """One torchrun-like process: the environment torchrun would set, then train() and keep this rank's M."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD)
    )
    torch.set_num_threads(1)
    result = train(
        tiny_config(
            Path(stores),
            Path(run),
            max_iter=MAX_ITER,
            iter_copy=1,
            iter_launch=1,
            checkpoint_interval=2,
            online_flow="linear",
            delta=1.0,
        )
    )
    torch.save(result["model"].state_dict(), Path(out) / f"rank{rank}.pt")


def test_two_gloo_ranks_stay_in_step_and_only_rank_0_writes(tmp_path):
    stores = make_stores(tmp_path / "stores", shards=2, per_shard=3)
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    mp.spawn(_rank_main, args=(_free_port(), str(stores), str(run), str(out)), nprocs=WORLD, join=True)
    models = [load(out / f"rank{r}.pt") for r in range(WORLD)]
    params = [k for k in models[0] if not k.endswith(RUNNING_STATS)]
    assert all(torch.equal(models[0][k], models[1][k]) for k in params)  # gradients were averaged across ranks
    # The last forward left each rank's own batch statistics: the ranks saw different data.
    assert any(not torch.equal(models[0][k], models[1][k]) for k in models[0] if k.endswith("running_mean"))
    # Rank 0 alone wrote: one events file, one log line per iteration, its checkpoints, no partial files.
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "log.jsonl", "tensorboard"]
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert [e["iteration"] for e in read_log(run)] == list(range(MAX_ITER))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_0000002.pt", "iter_0000003.pt"]
    final = load(run / "checkpoints" / "iter_0000003.pt")
    assert all(torch.equal(final["model"][k], models[0][k]) for k in models[0])
    assert final["data"]["world_size"] == WORLD and len(final["rng"]) == WORLD
