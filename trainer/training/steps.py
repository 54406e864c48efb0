"""The stages of one training iteration of Algorithm 1: M's update (lines 3-14) and D's update (line 15).

`segmenter_step` returns a `SegmenterStep`: named losses (detached scalars, so no host sync until they are
logged), the detached predictions D's step needs, and the L_tc tensors that the monitor may draw;
`discriminator_step` returns its named loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.losses import (
    IGNORE_INDEX,
    SOURCE_LABEL_R,
    TARGET_LABEL_F,
    adversarial_loss,
    discriminator_loss,
    segmentation_loss,
    upsample_to,
)
from trainer.models import caffe_normalize
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
from trainer.training.config import AMP_DTYPES, TrainConfig
from trainer.training.networks import Nets, proxy_logits

# Seed word of the per-iteration draw of t, kept apart from the data streams' words (trainer/training/data.py).
T_STREAM = 2


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


@dataclass(frozen=True)
class Iteration:
    """What M's update needs besides the networks, batch and config: the iteration, this rank, the online flow."""

    it: int
    rank: int = 0
    estimate_flow: Callable | None = None  # F(I1, It) of Eq. 5; None: (1 - t) F_1->0 (--online-flow linear)


@dataclass(frozen=True)
class Predictions:
    """Softmax maps (B, C, H, W) of one iteration, detached, for D's step (Eq. 12)."""

    source: torch.Tensor  # P^s
    frame0: torch.Tensor | None = None  # P_0; None for source-only
    intermediate: torch.Tensor | None = None  # P_t; None without It (P_0 itself under --no-temporal-aug)

    @property
    def targets(self) -> list[torch.Tensor]:
        """The target predictions D sees: [P_0] or [P_0, P_t]."""
        return [p for p in (self.frame0, self.intermediate) if p is not None]


@dataclass(frozen=True)
class LtcTensors:
    """The tensors L_tc of one iteration was made of (Eq. 4-9), sample-batched, for the monitor's pictures."""

    i_t: torch.Tensor  # (B, 3, H, W) RGB 0..255
    prob_1w: torch.Tensor  # (B, C, H, W) P_1^W, detached
    pl: torch.Tensor  # (B, H, W) train ids, 255 = ignore
    flow_1t: torch.Tensor  # (B, 2, H, W) pixels
    flow_10: torch.Tensor  # (B, 2, H, W) pixels
    not_occluded: torch.Tensor | None  # (B, H, W) bool, None with --no-occlusion

    def views(self) -> dict[str, torch.Tensor]:
        """The first sample's maps, named as the pictures show them."""
        views = {
            "It": self.i_t[0],
            "P1W": self.prob_1w[0].argmax(0),
            "PL": self.pl[0],
            "F_1t": self.flow_1t[0],
            "F_10": self.flow_10[0],
        }
        if self.not_occluded is not None:
            views["O"] = self.not_occluded[0]
        return views


@dataclass(frozen=True)
class SegmenterStep:
    """What M's update returns: named losses, D's inputs, and the L_tc tensors (None before ITER_LAUNCH)."""

    losses: dict[str, torch.Tensor]
    predictions: Predictions
    ltc: LtcTensors | None


def _probabilities(logits: torch.Tensor, size_hw) -> torch.Tensor:
    """Softmax over the classes of logits upsampled to the input size (B, C, H, W), float32."""
    return F.softmax(upsample_to(logits, size_hw).float(), dim=1)


def segmenter_step(nets: Nets, batch: dict, config: TrainConfig, step: Iteration) -> SegmenterStep:
    """Update M with L_seg + 0.01 L_adv (+ L_tc from iter_launch on): Algorithm 1 lines 3-14."""
    src, tgt = batch["source"], batch["target"]
    i0, i1, flow_01, flow_10 = tgt["frame0"], tgt["frame1"], tgt["flow_01"], tgt["flow_10"]
    losses, ltc = {}, None
    # What M sees (a train-mode forward moves BN's running statistics even when no loss reads its output):
    # source-only I^s; adversarial-only I^s, I0; I2VDA I^s, I0, It (It = I0 under --no-temporal-aug).
    inputs, i_t, t = [src["image"]], i0, None
    if config.uses_target:
        inputs.append(i0)
    if config.uses_intermediate and not config.no_temporal_aug:
        t = draw_t(config, step.rank, step.it)
        i_t = synthesize_intermediate(i0, i1, flow_01, flow_10, t, config.alpha)  # Eq. 1-3
        inputs.append(i_t)
        losses["t"] = torch.tensor(t)
    track = (config.bn_stats == "all",) + (True,) * (len(inputs) - 1)  # --bn-stats target: not from I^s
    with autocast(config, i0.device):
        logits = nets.model_wrapped(*[_network_input(x, config) for x in inputs], track=track)
        loss_seg = segmentation_loss(logits[0], src["label"])  # Eq. 10
        prob_s = _probabilities(logits[0], src["label"].shape[-2:])
        prob_0 = _probabilities(logits[1], i0.shape[-2:]) if config.uses_target else None
        prob_t = None
        if config.uses_intermediate:  # --no-temporal-aug: It = I0, so Pt = P0
            prob_t = _probabilities(logits[2], i0.shape[-2:]) if len(logits) > 2 else prob_0
        total = loss_seg
        losses["loss_seg"] = loss_seg.detach()
        if config.uses_disc:
            with frozen(nets.disc):
                target_scores = [nets.disc(p) for p in (prob_0, prob_t) if p is not None]
            loss_adv = adversarial_loss(target_scores, SOURCE_LABEL_R)  # Eq. 11
            total = total + config.lambda_adv * loss_adv
            losses["loss_adv"] = loss_adv.detach()
        if config.uses_tc and step.it >= config.iter_launch:
            flow_1t = _flow_1t(config, tgt, i_t, t, step.estimate_flow)
            loss_tc, ltc = _temporal_consistency(nets.proxy, config, tgt, i_t, prob_t, flow_1t)
            total = total + loss_tc
            losses |= {"loss_tc": loss_tc.detach(), "pl_coverage": (ltc.pl != IGNORE_INDEX).float().mean()}
    nets.opt_seg.zero_grad(set_to_none=True)
    nets.scaler_seg.scale(total).backward()
    nets.scaler_seg.step(nets.opt_seg)
    nets.scaler_seg.update()
    detached = [None if p is None else p.detach() for p in (prob_s, prob_0, prob_t)]
    return SegmenterStep(losses, Predictions(*detached), ltc)


@torch.no_grad()
def _flow_1t(
    config: TrainConfig, tgt: dict, i_t: torch.Tensor, t: float | None, estimate_flow: Callable | None
) -> torch.Tensor:
    """F_1->t (B, 2, H, W): F(I1, It) online (Eq. 5), (1 - t) F_1->0 (linear), or F_1->0 itself when It = I0."""
    if config.no_temporal_aug:
        return tgt["flow_10"]  # It = I0: the precomputed F_1->0
    if estimate_flow is None:
        return linear_flow_1t(tgt["flow_10"], t)
    with torch.autocast(i_t.device.type, enabled=False):
        return estimate_flow(tgt["frame1"], i_t).float()  # Eq. 5: F(I1, It)


def _temporal_consistency(
    proxy: nn.Module, config: TrainConfig, tgt: dict, i_t: torch.Tensor, prob_t: torch.Tensor, flow_1t: torch.Tensor
) -> tuple[torch.Tensor, LtcTensors]:
    """L_tc (Eq. 4-9): PL from M'(I1) on I1's grid, P_t carried to I1 with F_1->t; -> (loss, its tensors)."""
    i1, flow_01, flow_10 = tgt["frame1"], tgt["flow_01"], tgt["flow_10"]
    with torch.no_grad():
        prob_1 = _probabilities(proxy_logits(proxy, _network_input(i1, config), config.proxy_bn), i1.shape[-2:])
        entropy = None if config.no_entropy else normalized_entropy(prob_1)  # Eq. 6
        # Eq. 7
        not_occluded = (
            None if config.no_occlusion else occlusion_mask(flow_01, flow_10, config.eta, config.occlusion_grid)
        )
        if config.pl_select == "class-balanced" and entropy is not None:
            entropy = class_balanced_entropy(prob_1, entropy, config.delta, config.pl_portion)
        pl = pseudo_label(prob_1, entropy, not_occluded, config.delta)  # Eq. 8
    prob_1w = propagate_prediction(prob_t, flow_1t)  # Eq. 4
    loss_tc = temporal_consistency_loss(prob_1w, pl)  # Eq. 9
    return loss_tc, LtcTensors(i_t, prob_1w.detach(), pl, flow_1t, flow_10, not_occluded)


def discriminator_step(nets: Nets, predictions: Predictions, config: TrainConfig) -> dict:
    """Update D with L_d (Eq. 12) on the detached predictions: Algorithm 1 line 15."""
    with autocast(config, predictions.source.device):
        scores = nets.disc_wrapped(predictions.source, *predictions.targets)
        loss_d = discriminator_loss(
            scores[0], scores[1], scores[2] if len(scores) > 2 else None, SOURCE_LABEL_R, TARGET_LABEL_F
        )
    nets.opt_disc.zero_grad(set_to_none=True)
    nets.scaler_disc.scale(loss_d).backward()
    nets.scaler_disc.step(nets.opt_disc)
    nets.scaler_disc.update()
    return {"loss_d": loss_d.detach()}
