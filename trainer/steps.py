"""The stages of one training iteration of Algorithm 1: the networks, the learning rates, M's update, D's update.

Each step returns a dict of named scalars (detached tensors, so no host sync until they are logged).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from trainer.config import TrainConfig
from trainer.losses import (
    IGNORE_INDEX,
    SOURCE_LABEL_R,
    TARGET_LABEL_F,
    adversarial_loss,
    discriminator_loss,
    poly_lr,
    segmentation_loss,
    upsample_to,
)
from trainer.models import (
    FCDiscriminator,
    build_segmenter,
    caffe_normalize,
    load_deeplab_imagenet,
    load_segmenter_weights,
    load_torchvision_resnet,
)
from trainer.temporal import (
    linear_flow_1t,
    normalized_entropy,
    occlusion_mask,
    propagate_prediction,
    pseudo_label,
    synthesize_intermediate,
    temporal_consistency_loss,
)

# Seed word of the per-iteration draw of t, kept apart from the data streams' words (trainer/data.py).
T_STREAM = 2
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# "segmenter": a whole M from one of our checkpoints (e.g. a source-only warm-up), backbone and classifier.
INIT_LOADERS = {"deeplab": load_deeplab_imagenet, "torchvision": load_torchvision_resnet,
                "segmenter": load_segmenter_weights}


class MultiInput(nn.Module):
    """Runs one network on several inputs in a single forward call, so DDP sees one forward per backward."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """net(x) for each input, in order."""
        return tuple(self.net(x) for x in inputs)


@dataclass
class Nets:
    """M, M', D and their optimisers; `segment`/`discriminate` are the (DDP-wrapped) MultiInput callers."""

    model: nn.Module  # M, unwrapped: what checkpoints hold and M' copies
    segment: nn.Module
    proxy: nn.Module | None  # M', eval mode, no grad
    disc: nn.Module | None  # D, unwrapped: the generator side calls it with its weights frozen
    discriminate: nn.Module | None
    opt_seg: torch.optim.Optimizer
    opt_disc: torch.optim.Optimizer | None
    scaler_seg: torch.amp.GradScaler
    scaler_disc: torch.amp.GradScaler


def build_nets(config: TrainConfig, device: torch.device, distributed: bool) -> Nets:
    """M (with the ImageNet init), M', D, SGD for M (backbone lr, classifier 10x) and Adam for D."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_segmenter(config.arch, config.num_classes)
    if config.init is not None:
        INIT_LOADERS[config.init_format](model, config.init)
    memory_format = torch.channels_last if config.channels_last and device.type == "cuda" else torch.preserve_format
    model = model.to(device, memory_format=memory_format)
    proxy = copy.deepcopy(model).eval().requires_grad_(False) if config.uses_tc else None
    if config.proxy_ckpt is not None:  # a fixed teacher: loaded once, never copied from M
        load_segmenter_weights(proxy, config.proxy_ckpt)
    disc = None
    if config.uses_disc:
        disc = FCDiscriminator(config.num_classes, ndf=config.disc_width).to(device, memory_format=memory_format)
    opt_seg = torch.optim.SGD(model.optim_parameters(config.lr), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)  # fmt: skip
    opt_disc = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=config.betas_d) if disc else None

    def wrap(net: nn.Module | None) -> nn.Module | None:
        if net is None:
            return None
        multi = MultiInput(net)
        if not distributed:
            return multi
        return DistributedDataParallel(multi, device_ids=[device.index] if device.type == "cuda" else None)

    fp16 = config.amp == "fp16"  # bf16 has float32's range and needs no loss scaling
    return Nets(model, wrap(model), proxy, disc, wrap(disc), opt_seg, opt_disc,
                torch.amp.GradScaler(device.type, enabled=fp16), torch.amp.GradScaler(device.type, enabled=fp16))


def set_learning_rates(nets: Nets, config: TrainConfig, it: int) -> dict:
    """Poly decay (power 0.9 over max_iter) of both optimisers; the classifier group runs at 10x M's lr."""
    lr = poly_lr(config.lr, it, config.max_iter, config.poly_power)
    for group, mult in zip(nets.opt_seg.param_groups, (1.0, config.classifier_lr_mult)):
        group["lr"] = lr * mult
    lr_d = poly_lr(config.lr_d, it, config.max_iter, config.poly_power)
    if nets.opt_disc is not None:
        for group in nets.opt_disc.param_groups:
            group["lr"] = lr_d
    return {"lr": lr, "lr_d": lr_d}


@torch.no_grad()
def copy_proxy(nets: Nets) -> None:
    """Algorithm 1 line 6: theta_M' <- theta_M, from the unwrapped M; under DDP every rank takes rank 0's copy."""
    nets.proxy.load_state_dict(nets.model.state_dict())
    if torch.distributed.is_initialized():  # BN running statistics differ between ranks; M' must not
        for tensor in nets.proxy.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)


def draw_t(config: TrainConfig, rank: int, it: int) -> float:
    """t of Eq. 2 for this iteration: config.t if fixed, else U(0, 1) from a generator seeded by (seed, rank, it)."""
    if config.t is not None:
        return config.t
    return float(np.random.default_rng((config.seed, T_STREAM, rank, it)).random())


def autocast(config: TrainConfig, device: torch.device):
    """bf16/fp16 autocast on CUDA when --amp asks for it, else a no-op context."""
    if config.amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AMP_DTYPES[config.amp])


@contextlib.contextmanager
def frozen(net: nn.Module):
    """D's parameters get no gradient while M's loss flows through D (Eq. 11, AdaptSegNet)."""
    net.requires_grad_(False)
    try:
        yield
    finally:
        net.requires_grad_(True)


def _network_input(rgb: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Float RGB 0..255 (B, 3, H, W) -> the Caffe-normalised input of M (channels_last on CUDA if asked)."""
    x = caffe_normalize(rgb)
    if config.channels_last and x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _probabilities(logits: torch.Tensor, size_hw) -> torch.Tensor:
    """Softmax over the classes of logits upsampled to the input size (B, C, H, W), float32."""
    return F.softmax(upsample_to(logits, size_hw).float(), dim=1)


def segmenter_step(nets: Nets, batch: dict, config: TrainConfig, it: int, rank: int,
                   estimate_flow: Callable | None, want_views: bool = False) -> tuple[dict, dict, dict]:
    """Update M with L_seg + 0.01 L_adv (+ L_tc from iter_launch on): Algorithm 1 lines 3-14.

    -> (named scalars, detached probabilities {"s", "0", "t"} for D's step, views for the pictures)."""
    src, tgt = batch["source"], batch["target"]
    i0, i1, flow_01, flow_10 = tgt["frame0"], tgt["frame1"], tgt["flow01"], tgt["flow10"]
    device = i0.device
    stats, views = {}, {}
    inputs, i_t, t = [src["image"], i0], i0, None  # --no-temporal-aug: It = I0
    if config.uses_intermediate and not config.no_temporal_aug:
        t = draw_t(config, rank, it)
        i_t = synthesize_intermediate(i0, i1, flow_01, flow_10, t, config.alpha)  # Eq. 1-3
        inputs.append(i_t)
        stats["t"] = torch.tensor(t)
    with autocast(config, device):
        logits = nets.segment(*[_network_input(x, config) for x in inputs])
        loss_seg = segmentation_loss(logits[0], src["label"])  # Eq. 10
        probs = {"s": _probabilities(logits[0], src["label"].shape[-2:]),
                 "0": _probabilities(logits[1], i0.shape[-2:])}  # fmt: skip
        if config.uses_intermediate:  # --no-temporal-aug: It = I0, so Pt = P0
            probs["t"] = _probabilities(logits[2], i0.shape[-2:]) if len(logits) > 2 else probs["0"]
        total = loss_seg
        stats["loss_seg"] = loss_seg.detach()
        if config.uses_disc:
            with frozen(nets.disc):
                target_scores = [nets.disc(probs[k]) for k in ("0", "t") if k in probs]
            loss_adv = adversarial_loss(target_scores, SOURCE_LABEL_R)  # Eq. 11
            total = total + config.lambda_adv * loss_adv
            stats["loss_adv"] = loss_adv.detach()
        if config.uses_tc and it >= config.iter_launch:
            loss_tc, pl_stats, views = _temporal_consistency(nets, config, tgt, i_t, probs["t"], t, estimate_flow,
                                                             want_views)  # fmt: skip
            total = total + loss_tc
            stats |= pl_stats
    nets.opt_seg.zero_grad(set_to_none=True)
    nets.scaler_seg.scale(total).backward()
    nets.scaler_seg.step(nets.opt_seg)
    nets.scaler_seg.update()
    return stats, {k: p.detach() for k, p in probs.items()}, views


def _temporal_consistency(nets: Nets, config: TrainConfig, tgt: dict, i_t: torch.Tensor, prob_t: torch.Tensor,
                          t: float | None, estimate_flow: Callable | None, want_views: bool) -> tuple:
    """L_tc (Eq. 4-9): PL from M'(I1) on I1's grid, P_t carried to I1 with F_1->t; -> (loss, stats, views)."""
    i1, flow_01, flow_10 = tgt["frame1"], tgt["flow01"], tgt["flow10"]
    with torch.no_grad():
        prob_1 = _probabilities(nets.proxy(_network_input(i1, config)), i1.shape[-2:])
        entropy = None if config.no_entropy else normalized_entropy(prob_1)  # Eq. 6
        not_occluded = None if config.no_occlusion else occlusion_mask(flow_01, flow_10, config.eta,
                                                                       config.occlusion_grid)  # Eq. 7
        pl = pseudo_label(prob_1, entropy, not_occluded, config.delta)  # Eq. 8
        if config.no_temporal_aug:
            flow_1t = flow_10  # It = I0: the precomputed F_1->0
        elif estimate_flow is None:
            flow_1t = linear_flow_1t(flow_10, t)
        else:
            with torch.autocast(i1.device.type, enabled=False):
                flow_1t = estimate_flow(i1, i_t)  # Eq. 5: F(I1, It)
    prob_1w = propagate_prediction(prob_t, flow_1t.float())  # Eq. 4
    loss_tc = temporal_consistency_loss(prob_1w, pl)  # Eq. 9
    stats = {"loss_tc": loss_tc.detach(), "pl_coverage": (pl != IGNORE_INDEX).float().mean()}
    views = {}
    if want_views:
        views = {"It": i_t[0], "P1W": prob_1w[0].detach().argmax(0), "PL": pl[0], "F_1t": flow_1t[0],
                 "F_10": flow_10[0]}  # fmt: skip
        if not_occluded is not None:
            views["O"] = not_occluded[0]
    return loss_tc, stats, views


def discriminator_step(nets: Nets, probs: dict, config: TrainConfig) -> dict:
    """Update D with L_d (Eq. 12) on the detached predictions: Algorithm 1 line 15."""
    targets = [probs[k] for k in ("0", "t") if k in probs]
    with autocast(config, probs["s"].device):
        scores = nets.discriminate(probs["s"], *targets)
        loss_d = discriminator_loss(scores[0], scores[1], scores[2] if len(scores) > 2 else None,
                                    SOURCE_LABEL_R, TARGET_LABEL_F)  # fmt: skip
    nets.opt_disc.zero_grad(set_to_none=True)
    nets.scaler_disc.scale(loss_d).backward()
    nets.scaler_disc.step(nets.opt_disc)
    nets.scaler_disc.update()
    return {"loss_d": loss_d.detach()}
