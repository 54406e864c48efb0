"""mIoU and TC against brute-force pixel counts and hand-worked cases (trainer/evaluation/evaluate.py)."""

import math

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.sources import get_protocol
from trainer.evaluation.evaluate import (
    confusion_matrix,
    iou_per_class,
    miou,
    tc_confusion,
    temporal_consistency,
    warp_labels_etc,
    warp_labels_nearest,
)

IGNORE = 255


def brute_force_ious(label, pred, num_classes):
    """{class: IoU} by walking the pixels one by one; classes with an empty union are left out."""
    inter = [0] * num_classes
    union = [0] * num_classes
    for gt, p in zip(label.ravel().tolist(), pred.ravel().tolist()):
        if gt == IGNORE:
            continue
        for c in range(num_classes):
            inter[c] += gt == c and p == c
            union[c] += gt == c or p == c
    return {c: inter[c] / union[c] for c in range(num_classes) if union[c] > 0}


def test_confusion_matrix_counts_every_scored_pixel():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, (7, 9)).astype(np.uint8)
    label[rng.random((7, 9)) < 0.2] = IGNORE
    pred = rng.integers(0, 5, (7, 9)).astype(np.uint8)
    expected = np.zeros((5, 5), dtype=np.int64)
    for gt, p in zip(label.ravel(), pred.ravel()):
        if gt != IGNORE:
            expected[gt, p] += 1
    np.testing.assert_array_equal(confusion_matrix(label, pred, 5), expected)


def test_miou_matches_brute_force_with_ignore_and_absent_class():
    rng = np.random.default_rng(1)
    num_classes = 6
    label = rng.integers(0, 4, (12, 10)).astype(np.uint8)  # classes 4, 5 never in the ground truth
    label[:3] = IGNORE
    pred = rng.integers(0, 5, (12, 10)).astype(np.uint8)  # class 5 nowhere: absent from both
    pred[:3] = 5  # predicted 5 only on ignored pixels, so 5 still has an empty union
    ious = brute_force_ious(label, pred, num_classes)
    assert 5 not in ious and 4 in ious
    cm = confusion_matrix(label, pred, num_classes)
    np.testing.assert_allclose(iou_per_class(cm)[list(ious)], list(ious.values()))
    assert math.isnan(iou_per_class(cm)[5])
    assert miou(cm, range(num_classes)) == pytest.approx(100 * np.mean(list(ious.values())))


def test_hand_made_confusion_matrix():
    # rows ground truth, columns prediction; class 2 occurs nowhere
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    # IoU_0 = 3 / (4 + 3 - 3) = 3/4; IoU_1 = 2 / (2 + 3 - 2) = 2/3; class 2 skipped
    assert miou(cm, [0, 1, 2]) == pytest.approx(100 * (3 / 4 + 2 / 3) / 2)


def test_ignore_label_pixels_do_not_count():
    label = np.array([[0, 0, IGNORE, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 0, 1]], dtype=np.uint8)
    cm = confusion_matrix(label, pred, 2)
    np.testing.assert_array_equal(cm, [[1, 1], [0, 1]])
    assert miou(cm, [0, 1]) == pytest.approx(50.0)  # IoU 1/2 for both


def test_synthia12_fence_is_trained_but_not_scored():
    protocol = get_protocol("synthia12")
    assert protocol.num_classes == 12 and 3 not in protocol.eval_ids and len(protocol.eval_ids) == 11
    label = np.array([[0, 0, 3, 3, 11, 11]], dtype=np.uint8)  # road, road, fence, fence, car, car
    pred = np.array([[0, 0, 0, 3, 11, 0]], dtype=np.uint8)
    cm = confusion_matrix(label, pred, 12)
    # road: I = 2, U = 2 (GT) + 4 (pred) - 2 = 4; car: I = 1, U = 2 + 1 - 1 = 2; fence (IoU 1/2) not scored
    assert miou(cm, protocol.eval_ids) == pytest.approx(100 * (2 / 4 + 1 / 2) / 2)
    assert miou(cm, range(12)) == pytest.approx(100 * (2 / 4 + 1 / 2 + 1 / 2) / 3)


def test_tc_of_identical_predictions_is_100():
    rng = np.random.default_rng(2)
    preds = np.repeat(rng.integers(0, 4, (1, 8, 10)).astype(np.uint8), 3, axis=0)
    flows = np.zeros((2, 2, 8, 10), np.float32)
    for tc_protocol in ("ours", "etc"):
        assert temporal_consistency([(preds, flows)], 4, range(4), tc_protocol) == pytest.approx(100.0)


def test_tc_with_the_true_integer_flow_is_100_and_less_without_it():
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, 5, (6, 8)).astype(np.uint8)
    nxt = np.kron(blocks, np.ones((4, 4), np.uint8))  # (24, 32) blocky prediction of frame t+1
    dx, dy = 3, -2  # frame t's pixel p is frame t+1's pixel p + (dx, dy)
    cur = np.full_like(nxt, 4)
    h, w = nxt.shape
    for y in range(h):
        for x in range(w):
            if 0 <= x + dx < w and 0 <= y + dy < h:
                cur[y, x] = nxt[y + dy, x + dx]
    preds = np.stack([cur, nxt])
    flow = np.zeros((1, 2, h, w), np.float32)
    flow[:, 0], flow[:, 1] = dx, dy
    assert temporal_consistency([(preds, flow)], 5, range(5)) == pytest.approx(100.0)
    assert temporal_consistency([(preds, np.zeros_like(flow))], 5, range(5)) < 90.0


def test_nearest_warp_rounds_and_marks_out_of_view():
    labels = np.array([[5, 6, 7]], dtype=np.uint8)
    flow = np.zeros((2, 1, 3), np.float32)  # (2, H, W)
    flow[0] = 0.4
    warped, inside = warp_labels_nearest(labels, flow)
    np.testing.assert_array_equal(warped, [[5, 6, 7]])
    np.testing.assert_array_equal(inside, [[True, True, True]])
    flow[0] = 0.6  # samples at 0.6, 1.6, 2.6 -> pixels 1, 2, 3 (3 is out of view)
    warped, inside = warp_labels_nearest(labels, flow)
    np.testing.assert_array_equal(warped[0, :2], [6, 7])
    np.testing.assert_array_equal(inside, [[True, True, False]])


def test_etc_protocol_on_a_hand_worked_case():
    nxt = np.array([[0, 2, 2, 1]], dtype=np.uint8)
    flow = np.zeros((2, 1, 4), np.float32)
    flow[0] = 0.5
    # bilinear half way: (0+2)/2 = 1 (an interpolated id), (2+2)/2 = 2, (2+1)/2 = 1.5 -> 1, x = 3.5 clamps -> 1
    np.testing.assert_array_equal(warp_labels_etc(nxt, flow), [[1, 2, 1, 1]])
    cur = np.array([[0, 2, 1, 1]], dtype=np.uint8)
    preds = np.stack([cur, nxt])
    # pairs (P_t, warped): (0,1) (2,2) (1,1) (1,1): IoU_0 = 0/1, IoU_1 = 2/3, IoU_2 = 1/1; class 3 never predicted
    assert temporal_consistency([(preds, flow[None])], 4, range(4), "etc") == pytest.approx(100 * (0 + 2 / 3 + 1) / 4)
    # ours: nearest warp (0.5 rounds up to the right neighbour), the last pixel leaves the view
    # pairs: (0,2) (2,2) (1,1); IoU_0 = 0/1, IoU_1 = 1/1, IoU_2 = 1/2; class 3 skipped
    assert temporal_consistency([(preds, flow[None])], 4, range(4), "ours") == pytest.approx(100 * (0 + 1 + 1 / 2) / 3)


def test_tc_sums_counts_over_clips_instead_of_averaging_clips():
    zero = np.zeros((1, 2, 1, 4), np.float32)
    clip_a = (np.array([[[0, 0, 0, 0]], [[0, 0, 0, 1]]], np.uint8), zero)  # class 0: I 3, U 4; class 1: I 0, U 1
    clip_b = (np.array([[[1, 1, 1, 1]], [[1, 1, 1, 1]]], np.uint8), zero)  # class 1: I 4, U 4
    pooled = 100 * (3 / 4 + 4 / 5) / 2
    assert temporal_consistency([clip_a, clip_b], 2, [0, 1]) == pytest.approx(pooled)
    cm = tc_confusion(*clip_a, 2) + tc_confusion(*clip_b, 2)
    assert miou(cm, [0, 1]) == pytest.approx(pooled)


def test_adapt_batchnorm_is_the_average_of_per_batch_statistics():
    """AdaBN: reset, then the mean over 2-frame batches of each batch's mean and unbiased variance; weights kept."""
    import torch

    from trainer.evaluation.evaluate import adapt_batchnorm
    from trainer.models import caffe_normalize

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
    net[1].running_mean.fill_(5.0)
    weights = net[0].weight.detach().clone()
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 6, 5, 3), dtype=np.uint8)
    adapt_batchnorm(net, frames, "cpu", batch_size=2)
    means, variances = [], []
    for start in (0, 2):
        x = caffe_normalize(torch.from_numpy(frames[start : start + 2]).permute(0, 3, 1, 2).float())
        y = net[0](x).detach().transpose(0, 1).reshape(4, -1)
        means.append(y.mean(1))
        variances.append(y.var(1, unbiased=True))
    assert torch.allclose(net[1].running_mean, sum(means) / 2, atol=1e-3)
    assert torch.allclose(net[1].running_var, sum(variances) / 2, rtol=1e-4)
    assert torch.equal(net[0].weight, weights) and not net.training and net[1].momentum == 0.1


def test_target_frames_spread_over_shards_and_top_up(tmp_path):
    """3 shards of 4, 4 and 1 pairs, frame1 of pair j in shard s filled with 10 s + j: 8 frames = 3 + 3 + 1 spread,
    topped up with shard 0's next one; more than the store holds is one error."""
    from pipeline.shards import encode_target_sample, shard_name, write_shard
    from trainer.evaluation.evaluate import target_frames

    flow = np.zeros((2, 4, 6), np.float32)
    for s, n in enumerate((4, 4, 1)):
        samples = [
            encode_target_sample(
                f"k{s}_{j}", np.zeros((4, 6, 3), np.uint8), np.full((4, 6, 3), 10 * s + j, np.uint8), flow, flow, {}
            )
            for j in range(n)
        ]
        write_shard(tmp_path / shard_name("t", s), samples)
    frames = target_frames(tmp_path, 8)
    assert sorted(frames[:, 0, 0, 0].tolist()) == [0, 1, 2, 3, 10, 11, 12, 20]
    with pytest.raises(InputError, match="holds only 9"):
        target_frames(tmp_path, 10)
