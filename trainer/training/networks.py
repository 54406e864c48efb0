"""The networks of one training run and what acts on them as wholes: M, M', D and their optimisers (`Nets`,
`build_nets`), the poly learning rates, the proxy's copy and its BatchNorm modes (`--proxy-bn`), and the switch that
keeps a forward out of BN's running statistics (`--bn-stats target`)."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from trainer.losses import poly_lr
from trainer.models import FCDiscriminator, build_segmenter, load_deeplab_imagenet, load_torchvision_resnet
from trainer.training.checkpoint import load_segmenter_weights
from trainer.training.config import TrainConfig

# "segmenter": a whole M from one of our checkpoints (e.g. a source-only warm-up), backbone and classifier.
INIT_LOADERS = {
    "deeplab": load_deeplab_imagenet,
    "torchvision": load_torchvision_resnet,
    "segmenter": load_segmenter_weights,
}


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
    """M, M', D and their optimisers. `model`/`disc` are the networks themselves (what checkpoints hold);
    `model_wrapped`/`disc_wrapped` are the same networks inside MultiInput (and DDP when distributed): the callers
    of the training forward passes."""

    model: nn.Module  # M: what checkpoints hold and M' copies
    model_wrapped: nn.Module  # M as MultiInput(+DDP): M on several inputs in one call
    proxy: nn.Module | None  # M', eval mode, no grad
    disc: nn.Module | None  # D: the generator side calls it directly, with its weights frozen
    disc_wrapped: nn.Module | None  # D as MultiInput(+DDP): D's own update
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
    opt_seg = torch.optim.SGD(
        model.optim_parameters(config.lr, config.classifier_lr_mult),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    opt_disc = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=config.betas_d) if disc else None

    def wrap(net: nn.Module | None) -> nn.Module | None:  # MultiInput, inside DDP when distributed
        if net is None:
            return None
        multi = MultiInput(net)
        if not distributed:
            return multi
        return DistributedDataParallel(multi, device_ids=[device.index] if device.type == "cuda" else None)

    fp16 = config.amp == "fp16"  # bf16 has float32's range and needs no loss scaling
    return Nets(
        model,
        wrap(model),
        proxy,
        disc,
        wrap(disc),
        opt_seg,
        opt_disc,
        torch.amp.GradScaler(device.type, enabled=fp16),
        torch.amp.GradScaler(device.type, enabled=fp16),
    )


def set_learning_rates(nets: Nets, config: TrainConfig, it: int) -> dict:
    """Poly decay (power 0.9 over max_iter) of both optimisers; each of M's groups at its lr_mult (classifier 10x)."""
    lr = poly_lr(config.lr, it, config.max_iter, config.poly_power)
    for group in nets.opt_seg.param_groups:
        group["lr"] = lr * group["lr_mult"]
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
