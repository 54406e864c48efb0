"""Where an I2VDA training step spends its time on this CPU, and how close DeepLab-v2 R101 gets to the matmul rate.

    .venv/bin/python bench/bench_train_step.py [--iters 30] [--repeats 5] [--r101-repeats 2] [--threads N]
                                              [--stores DIR] [--out bench/out/bench_train_step.json]

Part 1, the demo size (target 256x128, source 224x128, deeplab_tiny, batch 1, method i2vda with L_tc from the first
iteration, online flow by DIS): the real `train()` loop runs `--iters` iterations with 2 DataLoader workers and
logs its step time and the fraction of it spent waiting for data; then each stage is timed alone on one batch
(medians over `--repeats`): the synthesis of It, M forward/backward on (Is, I0, It) with the SGD update, M' forward
on I1, DIS F(I1, It), D's update. Without `--stores` it streams synthetic stores (smooth random pictures, smooth
flow) written to a temporary folder; `--stores DIR` reads DIR/src and DIR/tgt instead.
Part 2: one step of DeepLab-v2 R101 on one 512x256 image (forward, L_seg, backward, SGD update; I2VDA's step runs
three of these passes and one M' forward), its peak resident memory, its FLOPs (torch.utils.flop_counter) and its
FLOP rate against a 4096^2 float32 matmul measured in the same process.
`--threads N` sets torch's intra-op threads (default: torch's own choice); the JSON records it and the load average
before and after, since other processes on the machine change every number here.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.flow import load_estimator
from pipeline.shards import SOURCE_KIND, TARGET_KIND, encode_source_sample, encode_target_sample, write_store
from trainer.losses import segmentation_loss
from trainer.models import build_segmenter, caffe_normalize
from trainer.temporal import synthesize_intermediate
from trainer.training.config import TrainConfig
from trainer.training.data import iteration_batches, open_stores
from trainer.training.loop import to_device, train
from trainer.training.monitor import LOG_NAME
from trainer.training.networks import build_nets, set_learning_rates
from trainer.training.steps import Iteration, discriminator_step, segmenter_step

TARGET_HW, SOURCE_HW = (128, 256), (128, 224)  # the demo's training sizes
R101_HW = (256, 512)
MATMUL_N = 4096  # large enough for the BLAS to reach its steady rate
SAMPLES_PER_SHARD, SHARDS = 16, 2
WARMUP_ITERS = 5  # first iterations of the loop: worker start-up, allocator warm-up
NUM_CLASSES = 15  # viper15
KIB = 1024


def _smooth(rng: np.random.Generator, hw, channels: int, cells=(8, 16), scale=255.0) -> np.ndarray:
    """Random low-frequency field (bicubic upsampling of a coarse grid): picture-like content that compresses."""
    coarse = rng.random((*cells, channels)).astype(np.float32) * scale
    return cv2.resize(coarse, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC).reshape(*hw, channels)


def synthetic_stores(root: Path, seed: int = 0) -> Path:
    """root/src (viper15 labels, 224x128) and root/tgt (pairs with smooth flows, 256x128)."""
    rng = np.random.default_rng(seed)
    source, target = [], []
    for s in range(SHARDS):
        for j in range(SAMPLES_PER_SHARD):
            image = _smooth(rng, SOURCE_HW, 3).clip(0, 255).astype(np.uint8)
            label = (_smooth(rng, SOURCE_HW, 1, scale=NUM_CLASSES)[..., 0]).astype(np.uint8).clip(0, NUM_CLASSES - 1)
            source.append(encode_source_sample(f"s{s}_{j}", image, label, {}))
            frame0 = _smooth(rng, TARGET_HW, 3).clip(0, 255).astype(np.uint8)
            flow_01 = (_smooth(rng, TARGET_HW, 2, scale=8.0) - 4.0).transpose(2, 0, 1)  # (2, H, W), within +-4 px
            xs, ys = np.meshgrid(np.arange(TARGET_HW[1], dtype=np.float32), np.arange(TARGET_HW[0], dtype=np.float32))
            # frame 1 = W(frame 0, F_1->0) with F_1->0 ~ -F_0->1 (smooth flow)
            frame1 = cv2.remap(
                frame0, xs - flow_01[0], ys - flow_01[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            target.append(encode_target_sample(f"t{s}_{j}", frame0, frame1, flow_01, -flow_01, {}))
    write_store(
        root / "src", SOURCE_KIND, source, SAMPLES_PER_SHARD, protocol="viper15", size_wh=[SOURCE_HW[1], SOURCE_HW[0]]
    )
    write_store(
        root / "tgt",
        TARGET_KIND,
        target,
        SAMPLES_PER_SHARD,
        estimator="dis",
        estimator_options={"preset": "medium"},
        size_wh=[TARGET_HW[1], TARGET_HW[0]],
    )
    return root


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of fn() over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def demo_breakdown(stores: Path, run: Path, iters: int, repeats: int) -> dict:
    """Part 1: the real loop's step time and data wait, then each stage alone on one batch."""
    config = TrainConfig(
        out=str(run),
        shards=str(stores),
        source="src",
        target="tgt",
        arch="deeplab_tiny",
        device="cpu",
        max_iter=iters,
        iter_launch=0,
        iter_copy=10,
        num_workers=2,
        log_interval=1,
        checkpoint_interval=iters,
        shuffle_buffer=8,
    )
    train(config)
    log = [json.loads(line) for line in (run / LOG_NAME).read_text().splitlines()][WARMUP_ITERS:]
    step_s = statistics.median(1.0 / e["it_per_s"] for e in log)
    wait = statistics.median(e["data_wait_frac"] for e in log)

    config, plan = open_stores(replace(config, out=str(run / "stages"), num_workers=0))
    nets = build_nets(config, torch.device("cpu"), distributed=False)
    nets.proxy.load_state_dict(nets.model.state_dict())
    set_learning_rates(nets, config, 0)
    batch = to_device(next(iteration_batches(config, plan, 0, 1, 0)), torch.device("cpu"), 0)
    src, tgt = batch["source"], batch["target"]
    i_t = synthesize_intermediate(tgt["frame0"], tgt["frame1"], tgt["flow_01"], tgt["flow_10"], 0.5)
    estimator = load_estimator("dis", **plan.estimator_options)

    def m_forward_backward():  # the three passes of M, L_seg on the source, one backward, the SGD update
        logits = nets.model_wrapped(*(caffe_normalize(x) for x in (src["image"], tgt["frame0"], i_t)))
        loss = segmentation_loss(logits[0], src["label"]) + sum(x.float().mean() for x in logits[1:])
        nets.opt_seg.zero_grad()
        loss.backward()
        nets.opt_seg.step()

    def proxy_forward():
        with torch.no_grad():
            nets.proxy(caffe_normalize(tgt["frame1"]))

    def full_step():  # the real stages of one iteration, without the data
        step = segmenter_step(nets, batch, config, Iteration(0, 0, estimator.estimate_torch))
        discriminator_step(nets, step.predictions, config)

    predictions = segmenter_step(nets, batch, config, Iteration(0, 0, estimator.estimate_torch)).predictions  # warm-up
    full = median_seconds(full_step, repeats)
    stages = {
        "synthesize_It": median_seconds(
            lambda: synthesize_intermediate(tgt["frame0"], tgt["frame1"], tgt["flow_01"], tgt["flow_10"], 0.5), repeats
        ),
        "M_forward_backward": median_seconds(m_forward_backward, repeats),
        "M_proxy_forward": median_seconds(proxy_forward, repeats),
        "online_flow_dis": median_seconds(lambda: estimator.estimate_torch(tgt["frame1"], i_t), repeats),
        "D_update": median_seconds(lambda: discriminator_step(nets, predictions, config), repeats),
    }
    return {
        "loop_step_s_median": step_s,
        "loop_data_wait_frac_median": wait,
        "loop_iters": iters,
        "loop_warmup_iters_dropped": WARMUP_ITERS,
        "isolated_full_step_s": full,
        "stages_s": stages,
    }


def matmul_gflops(repeats: int) -> float:
    """float32 GFLOP/s of a MATMUL_N^2 matmul (2 N^3 FLOPs), median over `repeats`."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    a @ b  # warm-up
    return 2 * MATMUL_N**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def r101_step(repeats: int) -> dict:
    """Part 2: one R101 step (forward, L_seg, backward, SGD) at 512x256; FLOPs counted on the first (warm-up) run."""
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_segmenter("deeplab_r101", NUM_CLASSES).train()
    groups = model.optim_parameters(2.5e-4, TrainConfig.classifier_lr_mult)
    opt = torch.optim.SGD(groups, lr=2.5e-4, momentum=0.9, weight_decay=5e-4)
    image = torch.rand(1, 3, *R101_HW) * 255
    label = torch.randint(0, NUM_CLASSES, (1, *R101_HW))

    def step():
        loss = segmentation_loss(model(caffe_normalize(image)), label)
        opt.zero_grad()
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    seconds = median_seconds(step, repeats)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return {
        "size_wh": [R101_HW[1], R101_HW[0]],
        "step_s_median": seconds,
        "repeats": repeats,
        "flops": flops,
        "gflop_per_s": flops / seconds / 1e9,
        "peak_rss_mib": peak_kib / KIB,
        "peak_rss_increase_mib": (peak_kib - rss_before_kib) / KIB,
    }


@click.command()
@click.option("--iters", default=30, show_default=True, help="Iterations of the real loop at the demo size.")
@click.option("--repeats", default=5, show_default=True, help="Runs per isolated stage (median).")
@click.option("--r101-repeats", default=2, show_default=True, help="Timed R101 steps after the counted one.")
@click.option("--threads", default=0, show_default=True, help="torch intra-op threads; 0 = torch's default.")
@click.option("--stores", type=click.Path(path_type=Path), default=None, help="Use DIR/src and DIR/tgt.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bench/out/bench_train_step.json"), show_default=True
)
def main(iters: int, repeats: int, r101_repeats: int, threads: int, stores: Path | None, out: Path) -> None:
    """Time the training step (see the module docstring) and write the numbers as JSON."""
    if threads > 0:
        torch.set_num_threads(threads)
    result = {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min_before": os.getloadavg()[0],
    }
    result["matmul_fp32_gflop_per_s"] = matmul_gflops(repeats)
    result["r101"] = r101_step(r101_repeats)
    result["r101"]["fraction_of_matmul_rate"] = result["r101"]["gflop_per_s"] / result["matmul_fp32_gflop_per_s"]
    with tempfile.TemporaryDirectory() as tmp:
        root = stores if stores is not None else synthetic_stores(Path(tmp) / "stores")
        result["demo"] = demo_breakdown(root, Path(tmp) / "run", iters, repeats)
    result["load_avg_1min_after"] = os.getloadavg()[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    click.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
