"""Why does (or doesn't) I2VDA help on the built-in world? Pseudo-label, flow and occlusion quality against its truth.

For each checkpoint given, on the demo's annotated val frames (the world's ground truth):
- pixel accuracy of argmax(M(I)), and of the Eq. 8 pseudo-labels: coverage (share of labelled pixels kept with
  E < delta; O is left out here, see below) and precision (share of kept pixels whose PL is right), per class too;
- the predicted share of each class against its true share (self-training drifts toward the classes it over-predicts).
Once per world, on the (f-1, f) pair ending at every annotated val frame, at the store's size:
- end-point error of the stored estimator (DIS) against the world's ground-truth flow, on pixels visible in both;
- the Eq. 7 occlusion mask from estimated flows against the same check on the ground-truth flows.

    python bench/diagnose_demo.py --world runs/demo/world --val runs/demo/stores/cityscapes_val \
        --ckpt runs/demo/runs/source_only_seed0 --ckpt runs/demo/runs/i2vda_seed0 [--out bench/out/diagnose_demo.json]

With --proxy RUN (repeatable), the pseudo-labels of the proxy M' itself, at every checkpoint of an I2VDA run (each
holds M' as of its last copy), made as the run made them: its --proxy-bn mode (running: eval mode; batch: the
statistics of each 2-frame batch; target: the re-estimated statistics the checkpoint holds), its --delta, its
--pl-select; O is left out (the val frames' flows are not the training pairs'). Per checkpoint: coverage,
precision, and per class the recall and the share of the labels against the class's true share.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.flow import load_estimator, read_flo
from pipeline.shards import ValStore
from pipeline.sources import get_protocol, read_rgb, resize_label, resize_rgb
from pipeline.sources.cityscapes import list_annotated
from trainer.models import caffe_normalize
from trainer.temporal import DELTA, ETA_PX, class_balanced_entropy, normalized_entropy, occlusion_mask
from trainer.training.checkpoint import checkpoints_in, latest_checkpoint, load_segmenter
from trainer.training.networks import proxy_logits

PROTOCOL = "viper15"  # the demo adapts VIPER -> Cityscapes


def _tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) array -> (1, C, H, W) float tensor."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()


def pseudo_label_quality(ckpt: str, store: ValStore, delta: float) -> dict:
    """Accuracy of argmax and of the entropy-filtered pseudo-labels of one checkpoint on the annotated val frames."""
    model, config, iteration = load_segmenter(ckpt, "cpu")
    names = get_protocol(config.protocol).class_names
    k = len(names)
    confusion, kept = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)  # rows truth, columns prediction
    for key in store.keys():
        image = store.image(key)
        label = resize_label(store.label(key, config.protocol), (image.shape[1], image.shape[0]))
        with torch.no_grad():
            logits = model(caffe_normalize(_tensor(image)))
            prob = F.softmax(F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=True), 1)
        pred = prob.argmax(1)[0].numpy()
        confident = (normalized_entropy(prob)[0] < delta).numpy()
        valid = label != 255
        confusion += np.bincount(label[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
        sel = valid & confident
        kept += np.bincount(label[sel] * k + pred[sel], minlength=k * k).reshape(k, k)
    total = confusion.sum()
    per_class = {}
    for c, name in enumerate(names):
        if confusion[c].sum() == 0 and confusion[:, c].sum() == 0:
            continue
        per_class[name] = {
            "true_share": confusion[c].sum() / total,
            "pred_share": confusion[:, c].sum() / total,
            "pl_precision": kept[c, c] / max(kept[:, c].sum(), 1),
            "pl_recall": kept[c, c] / max(confusion[c].sum(), 1),
        }
    return {
        "checkpoint": str(ckpt),
        "iteration": iteration,
        "pixel_acc": np.trace(confusion) / total,
        "pl_coverage": kept.sum() / total,
        "pl_precision": np.trace(kept) / max(kept.sum(), 1),
        "per_class": per_class,
    }


def flow_and_occlusion_quality(world: Path, size_wh: tuple[int, int], eta: float) -> dict:
    """DIS against the world's ground-truth flow, and Eq. 7's mask from DIS against Eq. 7 on the true flows."""
    estimator = load_estimator("dis")
    epe, agree, occluded_true, occluded_found, n = [], [], 0, 0, 0
    root = world / "cityscapes"
    for record in list_annotated(root, "val"):
        f1 = record.frame
        paths = dict(record.snippet)
        frame0, frame1 = (resize_rgb(read_rgb(paths[f]), size_wh) for f in (f1 - 1, f1))
        est = estimator.flows(np.stack([frame0, frame1]), np.stack([frame1, frame0]))  # F_0->1, F_1->0: (2, H, W)
        folder = root / "flow_gt" / "val" / record.city
        true = []
        for a, b in ((f1 - 1, f1), (f1, f1 - 1)):
            flow = read_flo(folder / f"{record.city}_{record.seq}_{a:06d}_{b:06d}.flo")  # (2, H, W)
            scale = np.array([size_wh[0] / flow.shape[2], size_wh[1] / flow.shape[1]], np.float32).reshape(2, 1, 1)
            # Area averaging, as the frames were shrunk (OpenCV resizes (H, W, C)); pixel units scale with the size.
            resized = cv2.resize(np.ascontiguousarray(flow.transpose(1, 2, 0)), size_wh, interpolation=cv2.INTER_AREA)
            true.append(resized.transpose(2, 0, 1) * scale)
        o_true = occlusion_mask(*(torch.from_numpy(f)[None] for f in true), eta)[0].numpy()  # on I1's grid
        o_est = occlusion_mask(*(torch.from_numpy(f)[None] for f in est), eta)[0].numpy()
        epe.append(np.linalg.norm(est[1] - true[1], axis=0)[o_true])
        agree.append((o_true == o_est).mean())
        occluded_true += (~o_true).sum()
        occluded_found += (~o_true & ~o_est).sum()
        n += o_true.size
    errors = np.concatenate(epe)
    return {
        "pairs": len(agree),
        "dis_epe_px_mean": float(errors.mean()),
        "dis_epe_px_median": float(np.median(errors)),
        "occlusion_mask_accuracy": float(np.mean(agree)),
        "true_occluded_share": occluded_true / n,
        "occluded_recall": occluded_found / max(occluded_true, 1),
    }


def proxy_label_quality(run: Path, store: ValStore) -> list[dict]:
    """Pseudo-label coverage and precision of M' at each checkpoint of an I2VDA run, made in the run's own modes."""
    rows = []
    for path in checkpoints_in(run / "checkpoints"):
        proxy, config, iteration = load_segmenter(path, "cpu", weights="proxy")  # none: not an I2VDA run with L_tc
        if iteration <= config.iter_launch:
            continue  # M' has not labelled anything yet (before the launch it may be the initial copy)
        proxy.requires_grad_(False)
        protocol = config.protocol
        k = config.num_classes
        truth_counts, kept = np.zeros(k, np.int64), np.zeros((k, k), np.int64)  # kept: rows truth, columns PL
        keys = store.keys()
        for start in range(0, len(keys) - 1, 2):  # 2-frame batches, as training's I1 batches
            batch = keys[start : start + 2]
            images = [store.image(key) for key in batch]
            x = caffe_normalize(torch.cat([_tensor(image) for image in images]))
            size = images[0].shape[:2]
            logits = proxy_logits(proxy, x, config.proxy_bn)
            prob = F.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=True), 1)
            entropy = normalized_entropy(prob)
            if config.pl_select == "class-balanced":
                entropy = class_balanced_entropy(prob, entropy, config.delta, config.pl_portion)
            pred, confident = prob.argmax(1).numpy(), (entropy < config.delta).numpy()
            for i, key in enumerate(batch):
                label = resize_label(store.label(key, protocol), (size[1], size[0]))
                valid = label != 255
                truth_counts += np.bincount(label[valid], minlength=k)
                sel = valid & confident[i]
                kept += np.bincount(label[sel] * k + pred[i][sel], minlength=k * k).reshape(k, k)
        total = truth_counts.sum()
        names = get_protocol(protocol).class_names
        per_class = {
            names[c]: {
                "true_share": truth_counts[c] / total,
                "label_share": kept[:, c].sum() / kept.sum(),
                "pl_recall": kept[c, c] / max(truth_counts[c], 1),
                "pl_precision": kept[c, c] / max(kept[:, c].sum(), 1),
            }
            for c in range(k)
            if truth_counts[c] or kept[:, c].sum()
        }
        rows.append(
            {
                "run": str(run),
                "iteration": iteration,
                "proxy_bn": config.proxy_bn,
                "bn_stats": config.get("bn_stats", "all"),
                "pl_select": config.get("pl_select", "entropy"),
                "coverage": kept.sum() / total,
                "precision": np.trace(kept) / max(kept.sum(), 1),
                "per_class": per_class,
            }
        )
    return rows


@click.command()
@click.option("--world", required=True, type=click.Path(exists=True, file_okay=False), help="demo world folder")
@click.option("--val", "val_store", required=True, help="the val store made from it (stores/cityscapes_val)")
@click.option("--ckpt", "ckpts", multiple=True, help="checkpoint file or run folder (its latest checkpoint)")
@click.option("--proxy", "proxies", multiple=True, help="I2VDA run folder: M''s pseudo-labels at each checkpoint")
@click.option("--delta", type=float, default=DELTA, show_default=True)
@click.option("--eta", type=float, default=ETA_PX, show_default=True)
@click.option("--out", default="bench/out/diagnose_demo.json", show_default=True)
def main(world, val_store, ckpts, proxies, delta, eta, out) -> None:
    """Print and save pseudo-label, flow and occlusion-mask quality on the demo world."""
    torch.set_num_threads(1)
    store = ValStore(val_store)
    size_wh = tuple(store.image(store.keys()[0]).shape[1::-1])
    report = {
        "delta": delta,
        "eta": eta,
        "size_wh": size_wh,
        "flow": flow_and_occlusion_quality(Path(world), size_wh, eta),
        "checkpoints": [],
    }
    for ckpt in ckpts:
        path = latest_checkpoint(ckpt) if Path(ckpt).is_dir() else ckpt
        report["checkpoints"].append(pseudo_label_quality(str(path), store, delta))
    f = report["flow"]
    click.echo(
        f"flow (DIS vs truth, {f['pairs']} pairs): EPE mean {f['dis_epe_px_mean']:.2f} px, median "
        f"{f['dis_epe_px_median']:.2f} px; Eq. 7 mask agrees on {100 * f['occlusion_mask_accuracy']:.1f}% of "
        f"pixels, finds {100 * f['occluded_recall']:.1f}% of the {100 * f['true_occluded_share']:.1f}% occluded"
    )
    for c in report["checkpoints"]:
        click.echo(
            f"{c['checkpoint']}: pixel acc {100 * c['pixel_acc']:.1f}%, PL (E < {delta}) coverage "
            f"{100 * c['pl_coverage']:.1f}%, precision {100 * c['pl_precision']:.1f}%"
        )
        for name, v in c["per_class"].items():
            click.echo(
                f"    {name:12s} true {100 * v['true_share']:5.1f}%  predicted {100 * v['pred_share']:5.1f}%  "
                f"PL precision {100 * v['pl_precision']:5.1f}%  PL recall {100 * v['pl_recall']:5.1f}%"
            )
    report["proxies"] = [row for run in proxies for row in proxy_label_quality(Path(run), store)]
    for r in report["proxies"]:
        recall = ", ".join(f"{n} {100 * v['pl_recall']:.0f}" for n, v in r["per_class"].items())
        click.echo(
            f"{r['run']} M' @ {r['iteration']} (proxy-bn {r['proxy_bn']}, bn-stats {r['bn_stats']}, "
            f"{r['pl_select']}): PL coverage {100 * r['coverage']:.1f}%, precision {100 * r['precision']:.1f}%;"
            f" recall per class: {recall}"
        )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
