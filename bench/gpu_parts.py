"""The timed parts of `bench/bench_gpu.py`: the online FlowNet2, M, M' and D alone, and the whole I2VDA iteration.

Every case is a dict of its settings, completed by `timed` (median wall seconds between two synchronizations, and on
CUDA the GPU seconds between CUDA events and the peak allocated MiB) or by the error that stopped it. Batches follow
trainer/training/data.py's layout on the device: target `frame0`, `frame1` float RGB 0..255 (B, 3, H, W), `flow_01`,
`flow_10` (B, 2, H, W) pixels (x, y); source `image` (B, 3, H, W) and `label` long (B, H, W).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time

import numpy as np
import torch
from gpu_stream import synthetic_pair, synthetic_source

from pipeline.flow.flownet2 import FlowNet2, FlowNet2Estimator
from trainer.losses import segmentation_loss
from trainer.models import caffe_normalize
from trainer.temporal import synthesize_intermediate
from trainer.training.config import AMP_DTYPES, TrainConfig
from trainer.training.networks import Nets
from trainer.training.steps import Iteration, autocast, discriminator_step, segmenter_step

MIB = 2**20
FLOW_CHUNK = 4  # FlowNet2Estimator's default batch_size, the one the loop's online flow runs with
T_FIXED = 0.5  # t of Eq. 2 for the It of the isolated stages (the iteration draws its own)
M_ALONE = "M alone (3x f+b+SGD, M' forward)"  # the yardstick of the 1.3x goal


def precisions(cuda: bool) -> tuple[str, ...]:
    """fp32 ("off") everywhere, bf16 autocast on CUDA only (the trainer refuses --amp on the CPU)."""
    return ("off", "bf16") if cuda else ("off",)


def flownet2_cases(batches: tuple[int, ...], cuda: bool) -> list[dict]:
    """Batch x precision x weight layout; channels_last on CUDA only (the trainer ignores it on the CPU)."""
    layouts = (False, True) if cuda else (False,)
    return [{"batch": b, "amp": a, "channels_last": c} for c in layouts for b in batches for a in precisions(cuda)]


def iteration_cases(batches: tuple[int, ...], cuda: bool) -> list[dict]:
    """Batch x precision x online flow: FlowNet2 F(I1, It) (Eq. 5), or linear (1 - t) F_1->0."""
    return [
        {"batch": b, "amp": a, "online_flow": f}
        for b in batches
        for a in precisions(cuda)
        for f in ("flownet2", "linear")
    ]


def amp_context(amp: str, device: torch.device):
    """Autocast for a bare network call (the steps take theirs from TrainConfig.amp)."""
    if amp == "off":
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ValueError(f"--amp {amp} is measured on CUDA only")
    return torch.autocast("cuda", dtype=AMP_DTYPES[amp])


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (a no-op on the CPU, where every call returns when its work is done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, repeats: int) -> dict:
    """fn() `warmup` times, then `repeats` timed calls -> median wall seconds and the runs; on CUDA also the median
    GPU seconds between CUDA events and the peak allocated MiB over all the calls."""
    cuda = device.type == "cuda"
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        fn()
    walls, gpus = [], []
    for _ in range(repeats):
        events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else []
        synchronize(device)
        start = time.perf_counter()
        if events:
            events[0].record()
        fn()
        if events:
            events[1].record()
        synchronize(device)
        walls.append(time.perf_counter() - start)
        if events:
            gpus.append(events[0].elapsed_time(events[1]) / 1e3)
    return {
        "median_s": statistics.median(walls),
        "runs_s": walls,
        "gpu_median_s": statistics.median(gpus) if gpus else None,
        "peak_mib": torch.cuda.max_memory_allocated(device) / MIB if cuda else None,
    }


def guarded(case: dict, measure, device: torch.device) -> dict:
    """case | measure(), or case | {"error": first line}: a failing case (out of memory) must not cost the others."""
    try:
        return case | measure()
    except Exception as exc:  # recorded in the JSON and the table; the tiny test fails on any
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return case | {"error": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"}


class PrebuiltFlowNet2(FlowNet2Estimator):
    """The loop's FlowNet2 estimator around a network built here (random weights: no checkpoint to read)."""

    def __init__(self, model: FlowNet2, device: torch.device):  # not super().__init__, which reads a checkpoint
        self.model, self.device, self.batch_size = model, device, FLOW_CHUNK
        self.checkpoint_sha256, self.options = None, {"batch_size": FLOW_CHUNK}


def make_batch(target_hw, source_hw, batch: int, device: torch.device, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """A loop batch of synthetic pairs and source images on the device, and its It at t = T_FIXED (Eq. 1-3)."""
    rng = np.random.default_rng(seed)
    pairs = [synthetic_pair(rng, target_hw) for _ in range(batch)]
    sources = [synthetic_source(rng, source_hw) for _ in range(batch)]

    def stack(arrays) -> torch.Tensor:  # (H, W, C) arrays -> (B, C, H, W) float32 on the device
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().contiguous().to(device)

    def stack_flows(flows) -> torch.Tensor:  # (2, H, W) flows -> (B, 2, H, W) float32 on the device
        return torch.from_numpy(np.stack(flows)).float().to(device)

    target = {
        "frame0": stack([p[0] for p in pairs]),
        "frame1": stack([p[1] for p in pairs]),
        "flow_01": stack_flows([p[2] for p in pairs]),
        "flow_10": stack_flows([-p[2] for p in pairs]),
    }
    source = {
        "image": stack([s[0] for s in sources]),
        "label": torch.from_numpy(np.stack([s[1] for s in sources])).long().to(device),
    }
    i_t = synthesize_intermediate(target["frame0"], target["frame1"], target["flow_01"], target["flow_10"], T_FIXED)
    return {"source": source, "target": target}, i_t


def bench_flownet2(
    estimator: PrebuiltFlowNet2, batches: dict, device: torch.device, warmup: int, repeats: int
) -> list[dict]:
    """estimate_torch(I1, It) per flownet2_cases; channels_last cases convert the network's weights first."""
    results = []
    for case in flownet2_cases(tuple(batches), device.type == "cuda"):
        estimator.model.to(memory_format=torch.channels_last if case["channels_last"] else torch.contiguous_format)
        batch, i_t = batches[case["batch"]]

        def forward(amp=case["amp"], i1=batch["target"]["frame1"], i_t=i_t):
            with amp_context(amp, device):
                estimator.estimate_torch(i1, i_t)

        results.append(guarded(case, lambda f=forward: timed(f, device, warmup, repeats), device))
    estimator.model.to(memory_format=torch.contiguous_format)
    return results


def _stages(nets: Nets, config: TrainConfig, batch: dict, i_t: torch.Tensor, device: torch.device) -> dict:
    """{name: callable} of M, M' and D alone on one batch, in the precision of config.amp."""
    src, tgt = batch["source"], batch["target"]

    def m_update(images: tuple) -> None:
        """M on each image, a cross-entropy on each output (the source label stands in for the target images'
        losses: bounded, unlike a bare mean of the logits, whose descent drives M's weights into denormals and
        infinities), one backward, the SGD step."""
        with autocast(config, device):
            logits = nets.model_wrapped(*(caffe_normalize(x) for x in images))
            loss = sum(segmentation_loss(x, src["label"]) for x in logits)
        nets.opt_seg.zero_grad(set_to_none=True)
        loss.backward()
        nets.opt_seg.step()

    def proxy_forward() -> None:
        with torch.no_grad(), autocast(config, device):
            nets.proxy(caffe_normalize(tgt["frame1"]))

    def m_alone() -> None:
        m_update((src["image"], tgt["frame0"], i_t))
        proxy_forward()

    linear = dataclasses.replace(config, online_flow="linear")
    predictions = segmenter_step(nets, batch, linear, Iteration(0)).predictions
    return {
        "M f+b+SGD, source image": lambda: m_update((src["image"],)),
        "M 3x f+b+SGD (Is, I0, It)": lambda: m_update((src["image"], tgt["frame0"], i_t)),
        "M' forward (I1)": proxy_forward,
        M_ALONE: m_alone,
        "D update (Eq. 12)": lambda: discriminator_step(nets, predictions, config),
    }


def bench_deeplab(
    nets: Nets, base: TrainConfig, batches: dict, device: torch.device, warmup: int, repeats: int
) -> list[dict]:
    """Every stage of _stages per batch size and precision."""
    results = []
    for b, (batch, i_t) in batches.items():
        for amp in precisions(device.type == "cuda"):
            stages = _stages(nets, dataclasses.replace(base, amp=amp, batch_size=b), batch, i_t, device)
            for stage, fn in stages.items():
                case = {"stage": stage, "batch": b, "amp": amp}
                results.append(guarded(case, lambda fn=fn: timed(fn, device, warmup, repeats), device))
    return results


def bench_iteration(
    nets: Nets,
    base: TrainConfig,
    estimator: PrebuiltFlowNet2,
    batches: dict,
    device: torch.device,
    warmup: int,
    repeats: int,
) -> list[dict]:
    """segmenter_step + discriminator_step with L_tc on, per iteration_cases: the loop's iteration without its data."""
    results = []
    for case in iteration_cases(tuple(batches), device.type == "cuda"):
        online = case["online_flow"] == "flownet2"
        config = dataclasses.replace(
            base, amp=case["amp"], batch_size=case["batch"], online_flow="estimator" if online else "linear"
        )
        estimate = estimator.estimate_torch if online else None  # what trainer.training.loop.online_flow hands the step

        def iteration(batch=batches[case["batch"]][0], config=config, estimate=estimate):
            step = segmenter_step(nets, batch, config, Iteration(0, 0, estimate))
            discriminator_step(nets, step.predictions, config)

        results.append(guarded(case, lambda f=iteration: timed(f, device, warmup, repeats), device))
    return results
