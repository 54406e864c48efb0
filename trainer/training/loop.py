"""Algorithm 1 of I2VDA (and the source-only and adversarial baselines) as one loop, on one process or under torchrun.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) every rank streams its own share of the shards,
M and D are wrapped in DistributedDataParallel (gloo on the CPU, nccl on GPUs), and only rank 0 logs and writes.
On SIGTERM or SIGUSR1 every rank finishes the iteration, a checkpoint is written and `Preempted` is raised
(`trainer/training/preemption.py`). Lines for people count iterations from 1 ("iteration 8/12" is the eighth), as
the checkpoint names count iterations done; log.jsonl's `iteration` field is the 0-based index.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.errors import InputError
from pipeline.flow import load_estimator
from pipeline.shards import remove_stale_partials, write_text_atomic
from trainer.models.weights import nonfinite_tensor
from trainer.training.checkpoint import (
    NONFINITE_CHECKED,
    check_resumable,
    checkpoint_path,
    latest_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    resolve_resume,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from trainer.training.config import TrainConfig, require_init
from trainer.training.data import StorePlan, data_position, iteration_batches, open_stores, worker_death_line
from trainer.training.monitor import Monitor, best_val_iteration
from trainer.training.networks import build_nets, copy_proxy, set_learning_rates
from trainer.training.preemption import Preempted, StopRequest
from trainer.training.rng import gather_rng
from trainer.training.steps import Iteration, discriminator_step, segmenter_step

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its rank among `world` processes and its device."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this process started the process group (and ends it)

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows the bar and writes checkpoints."""
        return self.rank == 0


def start_runtime(config: TrainConfig) -> Runtime:
    """Pick the device and, under torchrun, join the process group (nccl on GPUs, gloo on the CPU)."""
    cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible")
    if config.amp != "off" and not cuda:
        raise InputError(f"--amp {config.amp}: autocast is used on CUDA only and no CUDA device is in use")
    if cuda:
        torch.backends.cudnn.benchmark = True  # input sizes never change, so cuDNN's autotuning pays off
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Runtime(0, 1, torch.device("cuda" if cuda else "cpu"), False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if cuda else "gloo")
    return Runtime(dist.get_rank(), dist.get_world_size(), device, owns_group)


def online_flow(config: TrainConfig, plan: StorePlan, device: torch.device):
    """F(I1, It) of Eq. 5 with the target store's estimator family, or None where no estimator is called."""
    if not config.uses_tc or config.no_temporal_aug or config.online_flow == "linear":
        return None
    estimator = load_estimator(
        config.flow_estimator, checkpoint=config.flow_ckpt, device=str(device), **plan.estimator_options
    )
    return estimator.estimate_torch


def to_device(batch: dict, device: torch.device, it: int) -> dict:
    """Move a batch's tensors to the device; the stream must hand over iteration `it`'s batch."""
    if batch["iteration"] != it:
        raise RuntimeError(f"data stream out of step: got the batch of iteration {batch['iteration']}, not {it}")
    return {
        part: {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch[part].items()}
        for part in ("source", "target")
    }


def _diverged(what: str, it: int, saved: Path | None) -> InputError:
    last = f"the last good checkpoint is {saved}" if saved is not None else "no checkpoint was written"
    return InputError(f"iteration {it + 1}: {what}: the run diverged (try a lower --lr); {last}")


def checks_divergence(config: TrainConfig, it: int) -> bool:
    """Whether iteration `it` checks its losses: where the loop reads them back anyway (a log line, a checkpoint, the
    end), so the check adds no host sync to the other iterations. Diverged weights stay non-finite, and every save
    checks the weights themselves, so a divergence between two checks is caught at the next one."""
    done = it + 1
    return done % config.log_interval == 0 or done % config.checkpoint_interval == 0 or done == config.max_iter


def stop_if_diverged(stats: dict, it: int, saved: Path | None, rt: Runtime) -> None:
    """Stop every rank with one line when a loss of iteration `it` is NaN or infinite on any rank (one all-reduce
    under DDP so that the ranks stop together)."""
    losses = {k: v for k, v in stats.items() if k.startswith("loss_")}
    if not losses:
        return
    bad = torch.stack([~torch.isfinite(torch.as_tensor(v)).all() for v in losses.values()]).to(torch.int32)
    if rt.world > 1:
        dist.all_reduce(bad)
    names = [name for name, flag in zip(losses, bad.tolist()) if flag]
    if names:
        value = float(losses[names[0]])
        shown = f"{names[0]} is {value}" if not math.isfinite(value) else f"{names[0]} is not finite on another rank"
        raise _diverged(shown, it, saved)


def stop_if_weights_diverged(nets, it: int, saved: Path | None) -> None:
    """Refuse to checkpoint non-finite weights or optimiser states."""
    for name in NONFINITE_CHECKED:
        part = getattr(nets, name, None)
        bad = None if part is None else nonfinite_tensor(part.state_dict())
        if bad is not None:
            raise _diverged(f"{name} {bad} holds NaN or inf after the step", it, saved)


def write_config(config: TrainConfig) -> None:
    """RUN/config.json: the resolved settings of this run (rewritten on resume, e.g. with a new max_iter)."""
    path = Path(config.out) / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n")


def save_state(nets, config: TrainConfig, rt: Runtime, plan: StorePlan, done: int, saved: Path | None) -> Path | None:
    """Checkpoint the run after `done` iterations (every rank takes part, rank 0 writes, then drops checkpoints beyond
    --keep-checkpoints); -> the newest checkpoint on this rank (None on the others)."""
    stop_if_weights_diverged(nets, done - 1, saved)  # on every rank: DDP's ranks hold the same weights
    rng = gather_rng(rt.device)  # every rank takes part; rank 0 writes
    if not rt.is_main:
        return saved
    state = training_state(nets, config, done, rng, data_position(done, config, rt.world), plan.stores)
    path = save_checkpoint(state, checkpoint_path(config.out, done))
    prune_checkpoints(config.out, config.keep_checkpoints, protect=best_val_iteration(config.out))
    return path


def train(config: TrainConfig) -> dict:
    """Train M by Algorithm 1 (method "i2vda") or a baseline; -> {"iterations", "checkpoint", "last_log", "model"}.
    Raises `Preempted` after the checkpoint of a stop signal."""
    require_init(config)
    runtime = start_runtime(config)
    try:
        with StopRequest(runtime.world) as stop:
            return _train(config, runtime, stop)
    except RuntimeError as exc:
        line = worker_death_line(exc)  # PyTorch's many-line report of a worker killed (e.g. for memory)
        if line is None:
            raise
        raise InputError(line) from None
    finally:
        if runtime.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, rt: Runtime, stop: StopRequest) -> dict:
    # Setup: stores, resume point, networks, online flow, data stream, records.
    config, plan = open_stores(config)
    resume_path = resolve_resume(config.resume, config.out)
    if resume_path is None and latest_checkpoint(config.out) is not None:
        raise InputError(f"--out {config.out}: the run already has checkpoints; pass --resume or another --out")
    state = read_checkpoint(resume_path) if resume_path is not None else None
    if state is not None:
        check_resumable(state, config, rt.world, resume_path, plan.stores)
    nets = build_nets(config, rt.device, distributed=rt.world > 1)
    start = restore_training_state(nets, state, rt.rank, resume_path) if state is not None else 0
    del state
    if resume_path is not None and rt.is_main:
        print(
            f"resuming {config.out} from {resume_path} ({start} iterations done) at iteration {start + 1}", flush=True
        )
    estimate_flow = online_flow(config, plan, rt.device)
    batches = iteration_batches(config, plan, rt.rank, rt.world, start, pin_memory=rt.device.type == "cuda")
    if rt.is_main:  # a save killed mid-write left its temporary file behind
        remove_stale_partials(checkpoint_path(config.out, 0).parent)
    monitor = Monitor(config, start, enabled=rt.is_main, device=str(rt.device), world=rt.world)
    if rt.is_main:
        write_config(config)
    saved = resume_path if rt.is_main else None  # the newest checkpoint of this run so far
    try:
        for it in range(start, config.max_iter):
            lrs = set_learning_rates(nets, config, it)
            wait_start = time.perf_counter()
            batch = to_device(next(batches), rt.device, it)
            data_wait_s = time.perf_counter() - wait_start
            if config.copies_proxy(it):  # Alg. 1 lines 5-7
                copy_proxy(nets, config.proxy_bn)
            step = segmenter_step(nets, batch, config, Iteration(it, rt.rank, estimate_flow))
            losses = step.losses
            if nets.disc is not None:
                losses |= discriminator_step(nets, step.predictions, config)
            if checks_divergence(config, it):
                stop_if_diverged(losses, it, saved, rt)
            monitor.record(it, losses, lrs, data_wait_s)
            if step.ltc is not None and monitor.wants_views(it):
                monitor.pictures(it, step.ltc.views())
            monitor.validate(it, nets.model)  # with --val, when due: eval mode, then M's modes as they were
            done = it + 1
            due = done % config.checkpoint_interval == 0 or done == config.max_iter
            if due:
                saved = save_state(nets, config, rt, plan, done, saved)
            signum = stop.agreed() if done < config.max_iter else 0  # the same answer on every rank
            if signum:
                saved = saved if due else save_state(nets, config, rt, plan, done, saved)
                stop.stopped_together()
                raise Preempted(done, saved, signum, config.out)
    finally:  # also on a crash: flush the events, stop the DataLoader workers
        monitor.close()
        del batches
    return {
        "iterations": max(start, config.max_iter),
        "checkpoint": None if saved is None else str(saved),
        "last_log": monitor.last,
        "model": nets.model,
    }
