"""Temporal augmentation (Eq. 1-3) and temporal-augmented consistency learning (Eq. 4-9) of I2VDA.

Every map is (B, C, H, W) at the input size; flows are (B, 2, H, W) in pixels, channel 0 = x (right),
channel 1 = y (down), on the grid of the frame they start from (F_a->b lives on a's grid). t is a float or a (B,)
tensor, one t per sample. W is the backward warp `pipeline.flow.warp` (bilinear, border, as FlowNet2's Resample2d).
"""

from __future__ import annotations

import math

import torch

from pipeline.errors import InputError
from pipeline.flow import forward_backward_consistent, warp
from trainer.losses import IGNORE_INDEX, masked_nll

# Blend of W(I0) and W(I1) in Eq. 3: 0.5 "in all experiments" (paper §3.3).
ALPHA = 0.5
# Forward-backward threshold eta of Eq. 7 in pixels: 1 "in all experiments" (paper §3.4).
ETA_PX = 1.0
# Entropy threshold delta of Eq. 8: 0.3, the best column of Table 5 (the text says 0.8); see docs/TRAINING.md.
DELTA = 0.3
# Keeps log(P1W) finite where the warped probability underflowed to 0 (Eq. 9 is CE on probabilities).
PROB_EPS = 1e-8
# Share of each class's predicted pixels that `--pl-select class-balanced` keeps at most: CBST's largest portion
# (Zou et al. 2018 grow it from 20% to 50% over rounds; M' is re-copied every ITER_COPY, so the final one is used;
# chosen before any run of it here, not tuned).
PL_PORTION = 0.5
# How Eq. 8 selects PL: the paper's one entropy threshold, or per-class thresholds (CBST), beyond the paper.
PL_SELECTIONS = ("entropy", "class-balanced")
# Grids on which Eq. 7's forward-backward check can be evaluated: I1's (where PL lives) or I0's (the paper's formula).
OCCLUSION_GRIDS = ("i1", "i0")


def _per_sample(t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor | float:
    """A float stays a float; a (B,) tensor becomes (B, 1, 1, 1) to scale `like`'s samples one by one."""
    if isinstance(t, torch.Tensor):
        return t.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1, 1)
    return float(t)


def intermediate_flows(
    flow_01: torch.Tensor, flow_10: torch.Tensor, t: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: F_t->0 ~ t F_1->0 and F_t->1 ~ (1 - t) F_0->1 (locally smooth flow, Super SloMo's approximation)."""
    t_b = _per_sample(t, flow_01)
    return t_b * flow_10, (1 - t_b) * flow_01


def synthesize_intermediate(
    i0: torch.Tensor,
    i1: torch.Tensor,
    flow_01: torch.Tensor,
    flow_10: torch.Tensor,
    t: float | torch.Tensor,
    alpha: float = ALPHA,
) -> torch.Tensor:
    """Eq. 1-3: I_t = alpha W(I_0, F_t->0) + (1 - alpha) W(I_1, F_t->1), with the flows of Eq. 2."""
    flow_t0, flow_t1 = intermediate_flows(flow_01, flow_10, t)
    return alpha * warp(i0, flow_t0) + (1 - alpha) * warp(i1, flow_t1)


def linear_flow_1t(flow_10: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """F_1->t ~ (1 - t) F_1->0: a linear-motion stand-in for Eq. 5's F(I_1, I_t) (`--online-flow linear`)."""
    return (1 - _per_sample(t, flow_10)) * flow_10


def propagate_prediction(prob_t: torch.Tensor, flow_1t: torch.Tensor) -> torch.Tensor:
    """Eq. 4: P_1^W = W(P_t, F_1->t), the softmax probabilities of I_t carried onto I_1's grid."""
    return warp(prob_t, flow_1t)


def normalized_entropy(prob: torch.Tensor) -> torch.Tensor:
    """Eq. 6: E = -sum_k p_k log p_k / log C over the classes of prob (B, C, H, W) -> (B, H, W) in [0, 1]."""
    num_classes = prob.shape[1]
    if num_classes < 2:
        raise ValueError(f"normalized entropy needs at least 2 classes, got {num_classes}")
    # xlogy(p, p) is 0 at p = 0, the limit of p log p.
    return -torch.xlogy(prob, prob).sum(dim=1) / math.log(num_classes)


def occlusion_mask(flow_01: torch.Tensor, flow_10: torch.Tensor, eta: float = ETA_PX, grid: str = "i1") -> torch.Tensor:
    """Eq. 7: O = 1 (True) where the forward-backward round trip is shorter than eta pixels; (B, H, W) bool.

    grid="i1" (default, PL's grid): ||W(F_0->1, F_1->0) + F_1->0|| < eta. grid="i0": the paper's literal
    ||W(F_1->0, F_0->1) + F_0->1|| < eta on I_0's grid.
    """
    if grid == "i1":
        return forward_backward_consistent(flow_10, flow_01, eta)
    if grid == "i0":
        return forward_backward_consistent(flow_01, flow_10, eta)
    raise InputError(f"occlusion grid must be one of {', '.join(OCCLUSION_GRIDS)}, got {grid!r}")


@torch.no_grad()
def pseudo_label(
    prob_1: torch.Tensor,
    entropy: torch.Tensor | None,
    not_occluded: torch.Tensor | None,
    delta: float = DELTA,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Eq. 8: PL = ArgMax(P_1) where E < delta and O = 1, else ignore_index; (B, H, W) long.

    Pass entropy=None or not_occluded=None to drop that condition (the ablations of Table 3).
    """
    label = prob_1.argmax(dim=1)
    keep = torch.ones_like(label, dtype=torch.bool)
    if entropy is not None:
        keep &= entropy < delta
    if not_occluded is not None:
        keep &= not_occluded.bool()
    return label.masked_fill(~keep, ignore_index)


@torch.no_grad()
def class_balanced_entropy(
    prob_1: torch.Tensor, entropy: torch.Tensor, delta: float = DELTA, portion: float = PL_PORTION
) -> torch.Tensor:
    """Eq. 8 with per-class thresholds (`--pl-select class-balanced`, beyond the paper; CBST, Zou et al., ECCV 2018).

    A pixel predicted c is kept where E < min(delta, delta_c), delta_c the `portion`-quantile of E over the batch's
    pixels predicted c: each class keeps at most its `portion` most confident predictions, so a class the proxy
    over-predicts cannot fill PL with its errors, and every predicted class gets the same share of labels. Returned
    as an entropy rescaled so that `E' < delta` is that rule: E' = E delta / min(delta, delta_c), (B, H, W)."""
    label = prob_1.argmax(dim=1)
    scale = torch.ones_like(entropy)
    for c in label.unique().tolist():
        of_c = label == c
        delta_c = torch.quantile(entropy[of_c].float(), portion).item()
        if delta_c < delta:
            scale[of_c] = delta / max(delta_c, 1e-12)
    return entropy * scale


def temporal_consistency_loss(
    prob_1w: torch.Tensor, pl: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Eq. 9: L_tc = CE(P_1^W, PL) = mean over labelled pixels of -log(P_1^W[PL] + eps); 0 if all are ignored."""
    return masked_nll(torch.log(prob_1w.float() + PROB_EPS), pl, ignore_index)
