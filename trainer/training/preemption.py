"""Stopping a run cleanly when asked: SIGTERM (Slurm, Kubernetes), SIGUSR1 (Slurm's `--signal`) and Ctrl-C (SIGINT).

Slurm and Kubernetes send SIGTERM, then SIGKILL after a grace period. On SIGTERM or SIGUSR1 `i2vda-train` finishes the
iteration it is in, writes a checkpoint of the iterations done, prints one line naming it and the command that
resumes the run, and exits with EXIT_PREEMPTED (75, sysexits' EX_TEMPFAIL: "try again later"), which a batch script
tells apart from success (0), a crash (1), bad input (2), Ctrl-C (130) and a kill (137, 143). Ctrl-C does the same
and exits with EXIT_INTERRUPTED (130, the shell's status for SIGINT); a second Ctrl-C stops at once, and the line then
names the newest checkpoint on disk. The handlers only note the signal (an exception raised anywhere, say inside
TensorBoard's writer, could leave a lock or a queue behind); the loop asks `StopRequest.agreed()` after every
iteration. Under DDP that is one all-reduce (max) of the signal number over a gloo group on the CPU, so every rank
learns of a signal that reached any of them after the same iteration, and no GPU synchronisation is added; after the
checkpoint the ranks leave together, and a process that is stopping ignores further SIGTERM and SIGUSR1 instead of
dying of them.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist

EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: stopped on request, resume to continue
EXIT_INTERRUPTED = 130  # the shell's status for a process stopped by SIGINT (Ctrl-C)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def resume_command(run: str | Path) -> str:
    """The command that continues a run from its newest checkpoint with its own config.json."""
    return f"i2vda-train --out {run} --resume latest"


class Preempted(Exception):
    """The loop stopped on a signal after `iteration` iterations and wrote `checkpoint` (rank 0; None elsewhere)."""

    def __init__(self, iteration: int, checkpoint: Path | None, signum: int, run: str | Path):
        self.iteration, self.checkpoint, self.signum, self.run = iteration, checkpoint, signum, run
        super().__init__(self.line())

    @property
    def exit_status(self) -> int:
        return EXIT_INTERRUPTED if self.signum == signal.SIGINT else EXIT_PREEMPTED

    def line(self) -> str:
        name = signal.Signals(self.signum).name
        return (
            f"stopped on {name} after {self.iteration} iterations; checkpoint {self.checkpoint}; "
            f"resume with: {resume_command(self.run)}"
        )


class StopRequest:
    """While entered (`with`), SIGTERM, SIGUSR1 and a first SIGINT are noted instead of ending the process (a second
    SIGINT raises KeyboardInterrupt at once); `agreed()` says, the same on every rank, whether to stop after the
    current iteration."""

    def __init__(self, world: int):
        self.world, self.received = world, 0
        self._previous: dict[int, object] = {}
        # A group of its own on the CPU (gloo) whatever the training backend: the flag never touches the GPU.
        self._group = dist.new_group(backend="gloo") if world > 1 else None

    def _note(self, signum: int, frame) -> None:
        self.received = self.received or signum
        if signum == signal.SIGINT:  # the next Ctrl-C is not a request: it stops at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is Preempted:  # the process is on its way out: a later stop signal (torchrun sends SIGTERM to the
            for signum in (signal.SIGTERM, signal.SIGUSR1):  # other ranks once one exits) must not kill it before its
                if signum in self._previous:  # line and its exit status; SIG_IGN, unlike a Python handler, outlasts
                    signal.signal(signum, signal.SIG_IGN)  # the interpreter's shutdown
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()  # the gloo group ends with the default group (`trainer.training.loop.train`)

    def stopped_together(self) -> None:
        """Wait until every rank is here (after rank 0 wrote the stop's checkpoint): no rank exits earlier, so a
        launcher that stops the others when one exits (torchrun) never interrupts the save."""
        if self.world > 1:
            dist.barrier(group=self._group)

    def agreed(self) -> int:
        """The stop signal's number if any rank has received one (0: go on); a collective under DDP."""
        if self.world == 1:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())
