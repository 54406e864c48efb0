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
    class_balanced_entropy,
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

    def forward(self, *inputs: torch.Tensor, track: tuple[bool, ...] | None = None) -> tuple[torch.Tensor, ...]:
        """net(x) for each input, in order; where track[i] is False, BatchNorm's running statistics stay as they are."""
        track = track or (True,) * len(inputs)
        outputs = []
        for x, keep_stats in zip(inputs, track, strict=True):
            with contextlib.nullcontext() if keep_stats else frozen_running_stats(self.net):
                outputs.append(self.net(x))
        return tuple(outputs)


@contextlib.contextmanager
def frozen_running_stats(net: nn.Module):
    """Train-mode BatchNorm still normalises with the batch's statistics, but does not fold them into its running ones.

    `--bn-stats target`: M's running statistics (what eval and the eval-mode proxy M' use) are estimated on target
    frames only, as the target branch of domain-specific BN (DSBN, Chang et al., CVPR 2019)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running <- (1 - 0) running + 0 batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


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
    if proxy is not None and config.proxy_bn == "target":
        for bn in _batchnorms(proxy):
            bn.momentum = None  # a cumulative average over the target batches since the last copy (or the load)
            bn.reset_running_stats()
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


def _batchnorms(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def copy_proxy(nets: Nets, proxy_bn: str = "running") -> None:
    """Algorithm 1 line 6: theta_M' <- theta_M, from the unwrapped M; under DDP every rank takes rank 0's copy.

    With proxy_bn "target" the copy's BN running statistics are then reset, to be re-estimated on target frames."""
    nets.proxy.load_state_dict(nets.model.state_dict())
    if torch.distributed.is_initialized():  # BN running statistics differ between ranks; M' must not
        for tensor in nets.proxy.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    if proxy_bn == "target":
        for bn in _batchnorms(nets.proxy):
            bn.reset_running_stats()


@torch.no_grad()
def proxy_logits(proxy: nn.Module, x: torch.Tensor, proxy_bn: str) -> torch.Tensor:
    """M'(x) with no gradient, its BatchNorm normalising by (`--proxy-bn`):

    - "running": M's running statistics, M' in eval mode: what the paper says (§3.4 "in an evaluation mode");
    - "batch": the statistics of this I1 batch (train-mode BN), running statistics untouched;
    - "target": running statistics re-estimated on the target I1 batches seen since the last copy (this one
      included), a cumulative average."""
    if proxy_bn == "running":
        return proxy(x)
    bns = _batchnorms(proxy)
    for bn in bns:
        bn.train()
    try:
        if proxy_bn == "batch":
            with frozen_running_stats(proxy):
                return proxy(x)
        proxy(x)  # "target": fold this batch into the running statistics, then label with them
    finally:
        for bn in bns:
            bn.eval()
    return proxy(x)


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
    # What M sees (a train-mode forward moves BN's running statistics even when no loss reads its output):
    # source-only I^s; adversarial-only I^s, I0; I2VDA I^s, I0, It (It = I0 under --no-temporal-aug).
    inputs, i_t, t = [src["image"]], i0, None
    if config.uses_target:
        inputs.append(i0)
    if config.uses_intermediate and not config.no_temporal_aug:
        t = draw_t(config, rank, it)
        i_t = synthesize_intermediate(i0, i1, flow_01, flow_10, t, config.alpha)  # Eq. 1-3
        inputs.append(i_t)
        stats["t"] = torch.tensor(t)
    track = (config.bn_stats == "all",) + (True,) * (len(inputs) - 1)  # --bn-stats target: not from I^s
    with autocast(config, device):
        logits = nets.segment(*[_network_input(x, config) for x in inputs], track=track)
        loss_seg = segmentation_loss(logits[0], src["label"])  # Eq. 10
        probs = {"s": _probabilities(logits[0], src["label"].shape[-2:])}
        if config.uses_target:
            probs["0"] = _probabilities(logits[1], i0.shape[-2:])
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
        prob_1 = _probabilities(proxy_logits(nets.proxy, _network_input(i1, config), config.proxy_bn), i1.shape[-2:])
        entropy = None if config.no_entropy else normalized_entropy(prob_1)  # Eq. 6
        not_occluded = None if config.no_occlusion else occlusion_mask(flow_01, flow_10, config.eta,
                                                                       config.occlusion_grid)  # Eq. 7
        if config.pl_select == "class-balanced" and entropy is not None:
            entropy = class_balanced_entropy(prob_1, entropy, config.delta, config.pl_portion)
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
