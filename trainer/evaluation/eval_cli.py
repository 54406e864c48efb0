"""`i2vda-eval`: mIoU and TC of checkpoints on the val store, or mIoU of prediction PNGs made elsewhere.

Writes `OUT/metrics.json`, `OUT/metrics.md`, colourised predictions and overlays under `OUT/pred/`, and an mp4 of a
val clip beside its predictions. See docs/EVALUATION.md.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
import numpy as np

from pipeline.errors import InputError, one_line_errors
from pipeline.shards import ValStore
from pipeline.sources import (
    Protocol,
    get_protocol,
    label_files,
    label_key,
    protocol_names,
    read_cityscapes_label,
    read_palette_png,
    resize_label,
)
from trainer.evaluation.evaluate import (
    TC_PROTOCOLS,
    adapt_batchnorm,
    confusion_matrix,
    evaluate,
    miou,
    per_class_iou,
    target_frames,
)
from trainer.evaluation.predict import DEFAULT_BATCH_SIZE, predict_labels, resolve_device
from trainer.evaluation.visualize import save_prediction_pngs, snippet_frames, write_mp4
from trainer.training.checkpoint import checkpoint_files, load_segmenter
from trainer.training.config import TrainConfig
from trainer.training.monitor import on_terminal

METRICS_NAME, METRICS_TABLE_NAME = "metrics.json", "metrics.md"  # what OUT/ holds besides the pictures
PRED_SUFFIX = "_pred.png"  # a prediction is named like its gtFine file with _gtFine_labelIds -> _pred
VAL_SPLIT = "val"
SNIPPET_FPS = 17.0  # Cityscapes sequences were recorded at 17 Hz
DEFAULT_SAVE_PRED = 4  # annotated frames whose pictures are written by default
DECIMALS = 2  # DA-VSN rounds its table values to 2 decimals


def _protocol_for(name: str | None, config: TrainConfig, path: Path) -> Protocol:
    """The protocol to score: --protocol, else the checkpoint's; its class count must be the network's."""
    protocol = get_protocol(name or config.protocol)
    if protocol.num_classes != config.num_classes:
        raise InputError(
            f"--protocol {protocol.name} has {protocol.num_classes} classes but {path} was trained with "
            f"{config.num_classes} ({config.protocol})"
        )
    return protocol


def _check_store(store: ValStore, protocol: Protocol, config: TrainConfig, val: Path) -> None:
    """Refuse a store without this protocol's labels or prepared at another size than the checkpoint's."""
    if len(store) == 0:
        raise InputError(f"--val {val}: the val store holds no annotated frames")
    if protocol.name not in store.protocols:
        held = ", ".join(store.protocols) or "none"
        raise InputError(f"--val {val}: no {protocol.name} labels in the val store (it holds {held})")
    size_hw = tuple(store.image(store.keys()[0]).shape[:2])
    trained_hw = tuple(config.target_size_hw)
    if size_hw != trained_hw:
        raise InputError(
            f"--val {val}: frames are {size_hw[1]}x{size_hw[0]} but the checkpoint was trained at "
            f"{trained_hw[1]}x{trained_hw[0]}; prepare the val store at the training size"
        )


def _run_summary(result: dict, path: Path, iteration: int) -> dict:
    keep = ("miou", "per_class", "tc", "tc_per_class", "num_frames", "num_pairs")
    return {"checkpoint": str(path), "iteration": iteration, **{k: result[k] for k in keep}}


def _adapter(adapt_bn: int, adapt_store: Path | None, config: TrainConfig, device):
    """model -> model: AdaBN on `adapt_bn` target frames when asked (the run's target store by default), else as is."""
    if not adapt_bn:
        return lambda model: model
    store = adapt_store or Path(config.shards) / config.target
    if not Path(store).is_dir():
        raise InputError(f"--adapt-bn: no target store at {store}; pass --adapt-store")
    frames = target_frames(store, adapt_bn)
    # With the target batches M normalised in training.
    return lambda model: adapt_batchnorm(model, frames, device, config.batch_size)


def score_checkpoints(
    ckpt: Path,
    val: Path,
    protocol_name,
    with_tc: bool,
    tc_protocol: str,
    device,
    batch_size: int,
    adapt_bn: int = 0,
    adapt_store: Path | None = None,
) -> tuple[dict, object, ValStore, Protocol]:
    """Metrics of the last checkpoint (and, for a run folder, of the best on val); also its model and the store."""
    paths = checkpoint_files(ckpt)
    try:
        store = ValStore(val)
    except InputError as exc:
        raise InputError(f"--val {exc}") from None
    model, config, iteration = load_segmenter(paths[-1], device)
    adapt = _adapter(adapt_bn, adapt_store, config, device)
    model = adapt(model)

    def load(path):
        other, other_config, other_iteration = load_segmenter(path, device)
        return adapt(other), other_config, other_iteration

    protocol = _protocol_for(protocol_name, config, paths[-1])
    _check_store(store, protocol, config, val)
    # A bar on a terminal only: off one (a batch job's log) its carriage-return redraws would fill the file.
    options = {"tc_protocol": tc_protocol, "batch_size": batch_size, "progress": on_terminal()}
    last = evaluate(model, store, protocol, device, with_tc=with_tc, **options)
    report = {
        "mode": "checkpoint",
        **_run_summary(last, paths[-1], iteration),
        "protocol": protocol.name,
        "adapt_bn": adapt_bn,
        "tc_protocol": tc_protocol if with_tc else None,
        "val_store": str(val),
        "confusion": last["confusion"].tolist(),
    }
    if len(paths) == 1:
        return report, model, store, protocol
    runs = []
    for path in paths[:-1]:
        other, other_config, other_iteration = load(path)
        _protocol_for(protocol.name, other_config, path)
        result = evaluate(other, store, protocol, device, with_tc=False, **options)
        runs.append({"checkpoint": str(path), "iteration": other_iteration, "miou": result["miou"]})
    runs.append({"checkpoint": str(paths[-1]), "iteration": iteration, "miou": last["miou"]})
    report["checkpoints"] = runs
    # The highest mIoU; on a tie the earliest checkpoint; a NaN mIoU (nothing scored) never wins.
    best_index = max(range(len(runs)), key=lambda i: np.nan_to_num(runs[i]["miou"], nan=-1.0))
    best_path, best_iteration = paths[best_index], runs[best_index]["iteration"]
    best = last
    if best_index != len(paths) - 1:
        best = evaluate(load(best_path)[0], store, protocol, device, with_tc=with_tc, **options)
    report["best"] = _run_summary(best, best_path, best_iteration)
    return report, model, store, protocol


def save_pictures(out: Path, model, store: ValStore, protocol: Protocol, count: int, device, batch_size: int):
    """Predictions of the first `count` annotated frames as PNGs, and an mp4 of the first one's clip."""
    keys = store.keys()[:count]
    for key in keys:
        label = store.label(key, protocol.name)
        image = store.image(key)
        pred = predict_labels(model, image[None], label.shape, device, batch_size)[0]
        save_prediction_pngs(out / "pred", key, image, pred, label, protocol)
    if keys:
        clip = store.sample(keys[0])["clip"]
        preds = predict_labels(model, clip, clip.shape[1:3], device, batch_size)
        write_mp4(out / f"snippet_{keys[0]}.mp4", snippet_frames(clip, preds, protocol), SNIPPET_FPS)


def _prediction_path(pred_dir: Path, label_path: Path) -> Path:
    """`<pred-dir>/<city>/<name>_pred.png`, else the flat `<pred-dir>/<name>_pred.png`; missing raises InputError."""
    name = label_key(label_path) + PRED_SUFFIX
    nested, flat = pred_dir / label_path.parent.name / name, pred_dir / name
    if nested.is_file():
        return nested
    if flat.is_file():
        return flat
    raise InputError(f"--pred-dir {pred_dir}: missing prediction {nested} (or {flat}) for {label_path}")


def score_prediction_dir(pred_dir: Path, root: Path, protocol: Protocol) -> dict:
    """mIoU of prediction PNGs (train ids) against the gtFine val labels of a Cityscapes root."""
    if not pred_dir.is_dir():
        raise InputError(f"--pred-dir {pred_dir}: no such folder")
    labels = label_files(root, VAL_SPLIT)
    preds = [_prediction_path(pred_dir, label) for label in labels]  # the first missing one fails before scoring
    k = protocol.num_classes
    cm = np.zeros((k, k), dtype=np.int64)
    resized = 0
    for label_path, pred_path in zip(labels, preds):
        label = read_cityscapes_label(label_path, protocol)
        pred = read_palette_png(pred_path)
        if pred.max() >= k:
            raise InputError(f"{pred_path}: holds id {pred.max()}; expected train ids 0..{k - 1} of {protocol.name}")
        if pred.shape != label.shape:
            pred = resize_label(pred, (label.shape[1], label.shape[0]))
            resized += 1
        cm += confusion_matrix(label, pred, k)
    if resized:
        print(f"note: {resized} predictions were not at the label size; resized (nearest) to it", file=sys.stderr)
    return {
        "mode": "pred_dir",
        "checkpoint": None,
        "iteration": None,
        "pred_dir": str(pred_dir),
        "root": str(root),
        "protocol": protocol.name,
        "tc_protocol": None,
        "miou": miou(cm, protocol.eval_ids),
        "per_class": per_class_iou(cm, protocol),
        "tc": None,
        "num_frames": len(labels),
        "resized_predictions": resized,
        "confusion": cm.tolist(),
    }


def _json_safe(value):
    """NaN (a class that never occurs) -> null, recursively; JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _cell(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{DECIMALS}f}"


def metrics_markdown(report: dict) -> str:
    """A table in the layout of the paper's Tables 1-2: per-class IoU, mIoU and TC, one row per reported run."""
    rows = [("last", report)] + ([("best on val", report["best"])] if "best" in report else [])
    names = list(report["per_class"])
    lines = [
        f"# i2vda-eval ({report['protocol']}, TC protocol {report['tc_protocol'] or 'none'})",
        "",
        "| run | checkpoint | iter | " + " | ".join(names) + " | mIoU | TC |",
        "|---|---|---:|" + "---:|" * (len(names) + 2),
    ]
    for label, run in rows:
        source = Path(run["checkpoint"]).name if run.get("checkpoint") else report.get("pred_dir", "")
        iteration = "–" if run.get("iteration") is None else str(run["iteration"])
        cells = [label, source, iteration] + [_cell(run["per_class"][n]) for n in names]
        lines.append("| " + " | ".join(cells + [_cell(run["miou"]), _cell(run.get("tc"))]) + " |")
    if "best" in report:
        lines += [
            "",
            "The best-on-val row selects a checkpoint on the val set itself (DA-VSN's `video_best`): "
            "it is optimistic; the last checkpoint is the unbiased number.",
        ]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, report: dict) -> None:
    """OUT/metrics.json (values in percent, NaN as null) and OUT/metrics.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_NAME).write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    (out / METRICS_TABLE_NAME).write_text(metrics_markdown(report))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ckpt", type=click.Path(path_type=Path), help="Checkpoint file, or run folder RUN/ (RUN/checkpoints/).")
@click.option(
    "--val",
    type=click.Path(path_type=Path),
    default=Path("stores/cityscapes_val"),
    show_default=True,
    help="Val store folder (i2vda-prep val).",
)
@click.option("--pred-dir", type=click.Path(path_type=Path), help="Score prediction PNGs made elsewhere instead.")
@click.option("--root", type=click.Path(path_type=Path), help="Cityscapes root with gtFine/ (with --pred-dir).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--protocol", type=click.Choice(protocol_names()), help="Class protocol [default: the checkpoint's].")
@click.option("--tc/--no-tc", default=True, show_default=True, help="Also measure temporal consistency.")
@click.option("--tc-protocol", type=click.Choice(TC_PROTOCOLS), default="ours", show_default=True)
@click.option("--device", help="cpu, cuda or cuda:N [default: cuda when available].")
@click.option(
    "--save-pred",
    type=click.IntRange(min=0),
    default=DEFAULT_SAVE_PRED,
    show_default=True,
    help="Frames whose predictions are saved as PNGs (and, when > 0, one clip as mp4).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
@click.option(
    "--adapt-bn",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="AdaBN (Li et al. 2016), not the paper's protocol: re-estimate BN statistics on N target train "
    "frames before scoring (0 = off).",
)
@click.option(
    "--adapt-store",
    type=click.Path(path_type=Path),
    default=None,
    help="Target pair store for --adapt-bn [default: the run's SHARDS/TARGET from its config].",
)
def cli(
    ckpt, val, pred_dir, root, out, protocol, tc, tc_protocol, device, save_pred, batch_size, adapt_bn, adapt_store
):
    """Per-class IoU, mIoU and TC of i2vda checkpoints on Cityscapes val, or mIoU of prediction PNGs."""
    if (ckpt is None) == (pred_dir is None):
        raise InputError("give exactly one of --ckpt (score a checkpoint) or --pred-dir (score prediction PNGs)")
    if pred_dir is not None:
        if root is None or protocol is None:
            raise InputError("--pred-dir needs --root (the Cityscapes folder with gtFine/) and --protocol")
        report = score_prediction_dir(pred_dir, root, get_protocol(protocol))
        write_reports(out, report)
    else:
        device = resolve_device(device)
        report, model, store, chosen = score_checkpoints(
            ckpt, val, protocol, tc, tc_protocol, device, batch_size, adapt_bn, adapt_store
        )
        write_reports(out, report)
        save_pictures(out, model, store, chosen, save_pred, device, batch_size)
    best = report.get("best")
    best = f"; best on val {best['miou']:.2f} at iteration {best['iteration']}" if best else ""
    tc_text = f", TC {report['tc']:.2f}" if report.get("tc") is not None else ""
    click.echo(f"mIoU {report['miou']:.2f}{tc_text} ({report['protocol']}){best}; wrote {out / METRICS_NAME}")


main = one_line_errors(cli)


if __name__ == "__main__":
    main()
