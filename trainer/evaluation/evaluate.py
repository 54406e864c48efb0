"""Evaluation as pure functions: the global confusion matrix, per-class IoU and mIoU, temporal consistency (TC).

mIoU follows DA-VSN's `test.py` (Guan et al., ICCV 2021, github.com/Dayan-Guan/DA-VSN): one confusion matrix over the
whole val set (rows ground truth, columns prediction, label 255 ignored), IoU = diag / (row + col - diag), mIoU = the
nanmean over the scored train ids (a class absent from both ground truth and prediction is NaN and skipped;
SYNTHIA-12's fence is not a scored id). TC follows the temporal-consistency metric of ETC (Liu et al., ECCV 2020, its
`tool/eval_tc.py`): the IoU between the prediction of frame t and the prediction of frame t+1 warped back onto frame
t with F(t->t+1), counts summed over every consecutive pair of every clip. `evaluate` runs a model over a val store:
a pure function of (model, store) that `i2vda-eval` calls and any training-time validation can share (RAFT's
`evaluate.py`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
from tqdm import tqdm

from pipeline.errors import InputError
from pipeline.shards import ValStore, read_samples, store_shards
from pipeline.sources import IGNORE_ID, Protocol, get_protocol, id_outside
from trainer.evaluation.predict import DEFAULT_BATCH_SIZE, frames_to_tensor, predict_labels

PERCENT = 100.0
TC_PROTOCOLS = ("ours", "etc")
# "ours": nearest-neighbour warp (no interpolated class ids); samples that fall outside frame t+1 have no
# correspondence and are excluded; the mean skips classes with zero union (as mIoU).
# "etc": ETC's tool/eval_tc.py verbatim: Resample2d bilinear on the integer label map, clamped to the border,
# truncated to uint8; every scored class enters the mean, one never predicted counts 0.


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE_ID):
    """(K, K) int64 counts, rows ground truth and columns prediction; labels outside 0..K-1 (255) are skipped."""
    label = np.asarray(label).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    if label.shape != pred.shape:
        raise ValueError(f"label and prediction differ in size: {label.size} vs {pred.size} pixels")
    scored = (label >= 0) & (label < num_classes) & (label != ignore_index)
    gt, pr = label[scored].astype(np.int64), pred[scored].astype(np.int64)
    if pr.size and (pr.min() < 0 or pr.max() >= num_classes):
        raise ValueError(f"predictions must be train ids 0..{num_classes - 1}")
    counts = np.bincount(num_classes * gt + pr, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """(K,) IoU as a fraction: diag / (row sum + column sum - diag); NaN where the union is empty."""
    cm = np.asarray(cm, dtype=np.float64)
    intersection = np.diag(cm)
    union = cm.sum(axis=1) + cm.sum(axis=0) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / union


def miou(cm: np.ndarray, eval_ids: Iterable[int]) -> float:
    """Mean IoU in percent over the scored train ids, skipping classes with an empty union (NaN)."""
    scored = iou_per_class(cm)[list(eval_ids)]
    if np.all(np.isnan(scored)):
        return float("nan")
    return float(np.nanmean(scored) * PERCENT)


def _check_tc_protocol(tc_protocol: str) -> None:
    if tc_protocol not in TC_PROTOCOLS:
        raise InputError(f"--tc-protocol: expected one of {', '.join(TC_PROTOCOLS)}, got {tc_protocol!r}")


def _sample_points(flow_2hw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sampling positions p + F(p), x and y, (H, W) float32 each, in pixels (pixel centres at integers)."""
    h, w = flow_2hw.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + flow_2hw[0], ys + flow_2hw[1]


def warp_labels_nearest(labels_hw: np.ndarray, flow_2hw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W(L, F)(p) = L(round(p + F(p))): (warped (H, W) uint8, inside (H, W) bool, False where p + F(p) is out of view).

    Rounding is floor(x + 0.5), Resample2d's nearest mode; out-of-view pixels hold the clamped border value.
    """
    h, w = labels_hw.shape
    x, y = _sample_points(flow_2hw)
    xi = np.floor(x + 0.5).astype(np.int64)
    yi = np.floor(y + 0.5).astype(np.int64)
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    warped = labels_hw[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
    return warped.astype(np.uint8), inside


def warp_labels_etc(labels_hw: np.ndarray, flow_2hw: np.ndarray) -> np.ndarray:
    """ETC's warp of a label map: Resample2d bilinear (float32, neighbours clamped to the border), truncated to uint8.

    Written with Resample2d's own arithmetic rather than grid_sample: grid_sample's normalise round trip can turn an
    exact 1.0 into 0.99999994, which the truncation then makes class 0.
    """
    h, w = labels_hw.shape
    values = labels_hw.astype(np.float32)
    x, y = _sample_points(flow_2hw.astype(np.float32))
    x0, y0 = np.floor(x), np.floor(y)
    alpha, beta = x - x0, y - y0  # from the unclamped coordinates, as Resample2d
    xl = np.clip(x0, 0, w - 1).astype(np.int64)
    xr = np.clip(x0 + 1, 0, w - 1).astype(np.int64)
    yt = np.clip(y0, 0, h - 1).astype(np.int64)
    yb = np.clip(y0 + 1, 0, h - 1).astype(np.int64)
    one = np.float32(1.0)
    out = (one - alpha) * (one - beta) * values[yt, xl]
    out = out + alpha * (one - beta) * values[yt, xr]
    out = out + (one - alpha) * beta * values[yb, xl]
    out = out + alpha * beta * values[yb, xr]
    return out.astype(np.uint8)  # truncation, as ETC's `.astype(np.uint8)`


def tc_confusion(preds_thw: np.ndarray, flows_t2hw: np.ndarray, num_classes: int, tc_protocol: str = "ours"):
    """(K, K) counts summed over the clip's pairs (t, t+1): rows P_t, columns W(P_{t+1}, F(t->t+1)).

    preds_thw: (T, H, W) train ids; flows_t2hw: (T-1, 2, H, W) forward flows F(t->t+1) in pixels on frame t's grid.
    """
    _check_tc_protocol(tc_protocol)
    if len(flows_t2hw) != len(preds_thw) - 1 or flows_t2hw.shape[2:] != preds_thw.shape[1:]:
        raise ValueError(f"a clip of {preds_thw.shape} predictions needs (T-1, 2, H, W) flows, got {flows_t2hw.shape}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t in range(len(flows_t2hw)):
        if tc_protocol == "etc":
            current, warped = preds_thw[t], warp_labels_etc(preds_thw[t + 1], flows_t2hw[t])
        else:
            warped, inside = warp_labels_nearest(preds_thw[t + 1], flows_t2hw[t])
            current = np.where(inside, preds_thw[t], IGNORE_ID)  # no correspondence in frame t+1: not scored
        cm += confusion_matrix(current, warped, num_classes)
    return cm


def tc_score(cm: np.ndarray, eval_ids: Iterable[int], tc_protocol: str = "ours") -> float:
    """TC in percent from summed pair counts: the mIoU over the scored ids ("etc": an empty union counts 0)."""
    _check_tc_protocol(tc_protocol)
    if tc_protocol == "ours":
        return miou(cm, eval_ids)
    iou = np.nan_to_num(iou_per_class(cm), nan=0.0)  # ETC: I / (U + 1e-10), so an empty union gives 0
    return float(iou[list(eval_ids)].mean() * PERCENT)


def temporal_consistency(clips, num_classes: int, eval_ids: Iterable[int], tc_protocol: str = "ours") -> float:
    """TC in percent over clips = iterable of (preds (T, H, W), flows (T-1, 2, H, W)); counts summed over all pairs."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for preds_thw, flows_t2hw in clips:
        cm += tc_confusion(preds_thw, flows_t2hw, num_classes, tc_protocol)
    return tc_score(cm, eval_ids, tc_protocol)


def _as_protocol(protocol: Protocol | str) -> Protocol:
    return get_protocol(protocol) if isinstance(protocol, str) else protocol


def per_class_iou(cm: np.ndarray, protocol: Protocol) -> dict[str, float]:
    """{class name: IoU in percent} over the scored classes (NaN where the class never occurs)."""
    iou = iou_per_class(cm) * PERCENT
    return {protocol.class_names[i]: float(iou[i]) for i in protocol.eval_ids}


@torch.no_grad()
def evaluate(
    model,
    val_store,
    protocol: Protocol | str,
    device="cpu",
    with_tc: bool = True,
    tc_protocol: str = "ours",
    keys=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> dict:
    """Score `model` on a ValStore (or its path) -> {"miou", "per_class", "tc", "tc_per_class", "confusion", ...}.

    mIoU: the annotated frame at the store's input size, logits upsampled (bilinear, align_corners=True) to the
    label size, argmax, one global confusion matrix. TC: every clip frame predicted at the input size (the size of
    the flows). Values in percent; `keys` limits the frames scored (default: all). The model's mode is restored. A
    label holding an id outside the protocol's train ids (other than 255) is refused (InputError naming the store and
    the frame): scoring it would change the result without a word.
    """
    protocol = _as_protocol(protocol)
    _check_tc_protocol(tc_protocol)
    if isinstance(val_store, (str, os.PathLike)):
        val_store = ValStore(val_store)
    k = protocol.num_classes
    cm = np.zeros((k, k), dtype=np.int64)
    tc_cm = np.zeros((k, k), dtype=np.int64)
    if protocol.name not in val_store.protocols:
        raise InputError(
            f"{val_store.path}: no {protocol.name} labels in the val store; it holds "
            f"{', '.join(val_store.protocols) or 'none'}"
        )
    keys = list(val_store.keys() if keys is None else keys)
    num_pairs = 0
    was_training = model.training
    model.eval()
    try:
        for key in tqdm(keys, desc="eval", unit="frame", disable=not progress):
            label_hw = val_store.label(key, protocol.name)  # native label size
            bad = id_outside(label_hw, k)
            if bad is not None:
                raise InputError(
                    f"{val_store.path}:{key}: its {protocol.name} label holds id {bad}, outside the train ids "
                    f"0..{k - 1} ({IGNORE_ID} = ignore); the val store is damaged or of another protocol table"
                )
            pred_hw = predict_labels(model, val_store.image(key)[None], label_hw.shape, device, batch_size)[0]
            cm += confusion_matrix(label_hw, pred_hw, k)
            if with_tc:
                sample = val_store.sample(key)
                clip = sample["clip"]  # (T, H, W, 3) at the input size
                preds_thw = predict_labels(model, clip, clip.shape[1:3], device, batch_size)
                tc_cm += tc_confusion(preds_thw, sample["clip_flows"], k, tc_protocol)
                num_pairs += len(clip) - 1
    finally:
        model.train(was_training)
    return {
        "miou": miou(cm, protocol.eval_ids),
        "per_class": per_class_iou(cm, protocol),
        "tc": tc_score(tc_cm, protocol.eval_ids, tc_protocol) if with_tc else None,
        "tc_per_class": per_class_iou(tc_cm, protocol) if with_tc else None,
        "confusion": cm,
        "tc_confusion": tc_cm if with_tc else None,
        "protocol": protocol.name,
        "tc_protocol": tc_protocol if with_tc else None,
        "num_frames": len(keys),
        "num_pairs": num_pairs,
    }


def target_frames(store: str | os.PathLike, count: int) -> np.ndarray:
    """(count, H, W, 3) uint8: frame1 of `count` target pairs, spread over the store: up to `count` shards evenly
    spaced, an equal share from each, topped up in shard order when a shard holds fewer."""
    shards = store_shards(store)
    if not shards:
        raise InputError(f"--adapt-bn: no shards in the target store {store}")
    spaced = [shards[int(i)] for i in np.linspace(0, len(shards) - 1, min(count, len(shards))).round()]
    share = -(-count // len(spaced))  # ceil
    taken: dict[tuple[str, int], np.ndarray] = {}
    for shard, limit in [*((s, share) for s in spaced), *((s, count) for s in shards)]:
        for i, sample in enumerate(read_samples(shard)):
            if len(taken) >= count or i >= limit:
                break
            taken.setdefault((shard, i), sample["frame1"])
    if len(taken) < count:
        raise InputError(f"--adapt-bn {count}: the target store {store} holds only {len(taken)} pairs")
    return np.stack(list(taken.values()))


@torch.no_grad()
def adapt_batchnorm(model: torch.nn.Module, frames_bhw3: np.ndarray, device, batch_size: int) -> torch.nn.Module:
    """AdaBN (Li et al., 2016): every BatchNorm's running statistics re-estimated on target frames, weights untouched.

    The statistics are reset, then the cumulative average of the per-batch statistics over `batch_size`-frame
    batches (train-mode BN, momentum None), as M normalised its target batches in training; returns M in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise InputError("--adapt-bn: the network has no BatchNorm layer to adapt")
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for start in range(0, len(frames_bhw3), batch_size):
            model(frames_to_tensor(frames_bhw3[start : start + batch_size], device))
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        model.eval()
    return model
