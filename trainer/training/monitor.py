"""What rank 0 shows and keeps of a run: the tqdm bar, RUN/log.jsonl, TensorBoard scalars and pictures.

Other ranks get a Monitor that does nothing. A resumed run drops log lines and events from iterations it redoes,
so the records read as if the run had never stopped. The bar is drawn on a terminal only; elsewhere (a batch job's
log file) a plain timestamped line goes to stdout every log_interval instead. Each log.jsonl line carries the
wall-clock `time` and the `elapsed_s` of this process; its first line also names the `device` and `world_size`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.flow import flow_to_color
from pipeline.shards import ValStore
from pipeline.sources import colorize, get_protocol
from trainer.training.config import TrainConfig

LOG_NAME = "log.jsonl"
EVENTS_DIR = "tensorboard"


def _truncate_log(path: Path, start: int) -> None:
    """Keep only the log lines of iterations before `start` (those a resumed run does not redo)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["iteration"] < start]
    path.write_text("".join(line + "\n" for line in kept))


def best_val_iteration(run: str | Path) -> int | None:
    """The iterations done at the best `val_miou` in RUN/log.jsonl (the earliest on a tie; a checkpoint of that many
    iterations is the best by --val), or None when nothing was scored."""
    path = Path(run) / LOG_NAME
    if not path.is_file():
        return None
    scores = [json.loads(line) for line in path.read_text().splitlines() if '"val_miou"' in line]
    scored = [(entry["val_miou"], -entry["iteration"]) for entry in scores if entry.get("val_miou") is not None]
    return -max(scored)[1] + 1 if scored else None


def on_terminal() -> bool:
    """Whether the bar has a terminal to redraw on (and TQDM_DISABLE does not turn it off)."""
    return sys.stderr.isatty() and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


class Monitor:
    """Per-iteration bookkeeping; on rank 0 a bar, a JSON line and TensorBoard scalars every log_interval."""

    def __init__(self, config: TrainConfig, start: int, enabled: bool, device: str | None = None, world: int = 1):
        self.config, self.enabled = config, enabled
        self.window_start, self.window_iters, self.window_wait = time.perf_counter(), 0, 0.0
        self.run_start = self.window_start
        self.last: dict = {}
        self.once = {"device": device, "world_size": world}  # said in the first log line of this process
        self.device = device or "cpu"
        self.val_store = None
        if not enabled:
            return
        if config.val is not None:  # opened and checked now, not after the first val_interval iterations
            self.val_store = ValStore(config.val)
            if config.protocol not in self.val_store.protocols:
                raise InputError(
                    f"--val {config.val}: no {config.protocol} labels in the val store; it holds "
                    f"{', '.join(self.val_store.protocols) or 'none'}"
                )
        run = Path(config.out)
        run.mkdir(parents=True, exist_ok=True)
        self.log_path = run / LOG_NAME
        _truncate_log(self.log_path, start)
        from torch.utils.tensorboard import SummaryWriter  # imported on rank 0 only: it loads TensorBoard

        self.writer = SummaryWriter(log_dir=str(run / EVENTS_DIR), purge_step=start)
        # A bar on a terminal; off one, its carriage-return updates would pile up in one line of the log file.
        self.bar = tqdm(
            total=config.max_iter,
            initial=start,
            desc=f"{config.method} {run.name}",
            unit="it",
            dynamic_ncols=True,
            disable=not on_terminal(),
        )
        self.protocol = get_protocol(config.protocol)

    def wants_views(self, it: int) -> bool:
        """Whether this iteration's pictures will be written (so the step keeps them)."""
        return self.enabled and it % self.config.image_interval == 0

    def record(self, it: int, stats: dict, lrs: dict, data_wait_s: float) -> dict | None:
        """Account one iteration; every log_interval (and at the end) write and return the log entry."""
        self.window_iters += 1
        self.window_wait += data_wait_s
        if not self.enabled:
            return None
        self.bar.update(1)
        if (it + 1) % self.config.log_interval != 0 and it + 1 != self.config.max_iter:
            return None
        now = time.perf_counter()
        elapsed = now - self.window_start
        entry = {
            "iteration": it,
            **{k: float(v) for k, v in stats.items()},
            **lrs,
            "it_per_s": self.window_iters / max(elapsed, 1e-9),
            "data_wait_frac": self.window_wait / max(elapsed, 1e-9),
        }
        stamp = self._write_line(entry)
        for name, value in entry.items():
            if name != "iteration":
                self.writer.add_scalar(f"train/{name}", value, it)
        losses = {k: f"{v:.3g}" for k, v in entry.items() if k.startswith("loss_")}
        self.bar.set_postfix(losses, refresh=False)
        if self.bar.disable:
            print(
                f"{stamp['time']} {self.config.method} {Path(self.config.out).name}: iteration {it + 1}/"
                f"{self.config.max_iter}, {' '.join(f'{k} {v}' for k, v in losses.items())}, "
                f"{entry['it_per_s']:.2f} it/s",
                flush=True,
            )
        self.window_start, self.window_iters, self.window_wait = time.perf_counter(), 0, 0.0
        self.last = entry
        return entry

    def _write_line(self, entry: dict) -> dict:
        """Append `entry` to log.jsonl with the time stamp (and, in the first line, device and world size)."""
        stamp = {
            "time": datetime.now().astimezone().isoformat(timespec="seconds"),
            "elapsed_s": round(time.perf_counter() - self.run_start, 3),
        }
        with self.log_path.open("a") as f:  # allow_nan=False: a bare NaN would make the line invalid JSON
            f.write(json.dumps({**entry, **stamp, **self.once}, allow_nan=False) + "\n")
        self.once = {}
        return stamp

    def validate(self, it: int, model: torch.nn.Module) -> dict | None:
        """With --val, every val_interval iterations and at the end: M's mIoU and per-class IoU (percent, no TC) on
        the val store, as a log.jsonl line (`val_miou`, `val_per_class`: null for a class absent from the store)
        and TensorBoard scalars; -> that line, or None when not due. `evaluate` runs M in eval mode, so its BN
        statistics do not move; every module's train/eval mode is put back as it was."""
        done = it + 1
        interval = self.config.val_interval
        if self.val_store is None or not (done == self.config.max_iter or (interval and done % interval == 0)):
            return None
        from trainer.evaluation.evaluate import evaluate  # imported when first due: it loads the prediction code

        modes = [(module, module.training) for module in model.modules()]  # parents before children
        try:
            result = evaluate(model, self.val_store, self.protocol, self.device, with_tc=False)
        finally:
            for module, training in modes:
                module.train(training)
        per_class = {name: None if np.isnan(v) else v for name, v in result["per_class"].items()}
        entry = {
            "iteration": it,
            "val_miou": None if np.isnan(result["miou"]) else result["miou"],
            "val_per_class": per_class,
        }
        self._write_line(entry)
        self.writer.add_scalar("val/miou", result["miou"], it)
        for name, value in result["per_class"].items():
            self.writer.add_scalar(f"val/iou/{name}", value, it)
        line = (
            f"{Path(self.config.out).name}: val mIoU {result['miou']:.2f} after {done} iterations "
            f"({result['num_frames']} frames of {self.config.val})"
        )
        if self.bar.disable:
            print(line, flush=True)
        else:
            self.bar.write(line)
        return entry

    def pictures(self, it: int, views: dict) -> None:
        """It, P1W and PL in the protocol's colours, O in grey, F_1->t and F_1->0 in the flow colour wheel."""
        if not self.enabled or not views:
            return
        for name, value in views.items():
            array = value.detach().float().cpu().numpy()
            if name == "It":  # (3, H, W) RGB 0..255
                picture = array.transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8)
            elif name in ("P1W", "PL"):  # (H, W) train ids
                picture = colorize(array.astype(np.int64), self.protocol)
            elif name == "O":  # (H, W) 1 = not occluded
                picture = np.repeat((array * 255).astype(np.uint8)[..., None], 3, axis=2)
            else:  # (2, H, W) flow in pixels
                picture = flow_to_color(array)
            self.writer.add_image(f"views/{name}", torch.from_numpy(picture), it, dataformats="HWC")

    def close(self) -> None:
        """Flush the events and close the bar."""
        if self.enabled:
            self.writer.close()
            self.bar.close()
        if self.val_store is not None:
            self.val_store.close()
