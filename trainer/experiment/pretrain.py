"""`i2vda-pretrain`: the init every method of the demo fine-tunes from, learnt on the world's ImageNet analog.

The paper fine-tunes a ResNet-101 initialised on ImageNet. Its analog for the built-in world: the backbone of the
segmenter learns image-level classification on the analog's crops (`pipeline/world/imagenet_analog.py`: random looks,
no source or target picture), as the DeepLab-v2 init learnt ImageNet's classes: the classes a crop shows (multi-label,
binary cross-entropy) from a linear layer on the globally pooled layer4 features. BatchNorm's affine parameters learn
here, as in an ImageNet training; fine-tuning then freezes them, as DeepLab-v2 does.

The result is written as the DeepLab-v2 ImageNet file is (`Scale.`-prefixed backbone keys, no segmentation head, only
tensors), so `i2vda-train --init FILE --init-format deeplab` reads it through the loader of the real file and the
classifier keeps its random init. `FILE.json` records the settings, the analog's size and the val mAP.

    i2vda-pretrain --data WORLD/imagenet_analog --out WORLD/deeplab_tiny_imagenet_analog.pth
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import click
import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.errors import InputError, one_line_errors
from pipeline.shards import write_bytes_atomic, write_text_atomic
from trainer.losses import poly_lr
from trainer.models import SEGMENTERS, build_segmenter, caffe_normalize
from trainer.models.weights import CLASSIFIER_PREFIXES

# The caffe-converted DeepLab-v2 file prefixes every key with one token (trainer/models/weights.py drops it).
DEEPLAB_KEY_PREFIX = "Scale."
MAX_CROPS = 200_000  # a split larger than this is refused before it is read (a wrong --data)
DEFAULTS = {"arch": "deeplab_tiny", "iters": 600, "batch_size": 32, "lr": 0.02, "seed": 0}
MOMENTUM, WEIGHT_DECAY = 0.9, 1e-4  # an ImageNet-style SGD
EVAL_BATCH = 64


def read_split(data: Path, split: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 RGB crops and (N, C) float32 multi-hot labels of one split of an analog folder."""
    table_path = data / split / "labels.json"
    try:
        table = json.loads(table_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--data {data}: cannot read {split}/labels.json ({exc.__class__.__name__})") from None
    if not isinstance(table, dict) or not table or len(table) > MAX_CROPS:
        raise InputError(f"--data {data}: {split}/labels.json must map 1 to {MAX_CROPS} file names to class lists")
    index = {name: i for i, name in enumerate(classes)}
    images, labels = [], np.zeros((len(table), len(classes)), np.float32)
    for row, name in enumerate(sorted(table)):
        shown = table[name]
        if Path(name).name != name or not isinstance(shown, list) or not set(shown) <= set(index):
            raise InputError(f"--data {data}: {split}/labels.json: bad entry {name!r}")
        image = cv2.imread(str(data / split / name), cv2.IMREAD_COLOR)
        if image is None or (images and image.shape != images[0].shape):
            raise InputError(f"--data {data}: {split}/{name} is missing, unreadable or of another size")
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        labels[row, [index[c] for c in shown]] = 1.0
    return np.stack(images), labels


class PooledClassifier(nn.Module):
    """The segmenter's backbone, global average pooling and a linear layer: image-level logits (B, C)."""

    def __init__(self, arch: str, num_classes: int):
        super().__init__()
        self.segmenter = build_segmenter(arch, num_classes)
        for p in self.segmenter.parameters():
            p.requires_grad_(True)  # BN affine too: frozen only when fine-tuning
        self.fc = nn.Linear(self.segmenter.layer6.conv2d_list[0].in_channels, num_classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Float RGB 0..255 (B, 3, H, W) -> logits (B, C)."""
        return self.fc(self.segmenter.features(caffe_normalize(rgb)).mean(dim=(2, 3)))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's tensors under the DeepLab-v2 ImageNet file's key names; the heads are left out."""
        state = self.segmenter.state_dict()
        return {DEEPLAB_KEY_PREFIX + k: v.clone() for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}


def _batch(images: np.ndarray, rows: np.ndarray, flips: np.ndarray | None = None) -> torch.Tensor:
    """Crops `rows` as float RGB (B, 3, H, W), mirrored left-right where `flips` says so."""
    x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float()
    if flips is not None and flips.any():
        x[flips] = x[flips].flip(-1)
    return x


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Non-interpolated average precision of one class: the mean precision at the rank of each true item."""
    order = np.argsort(-scores, kind="stable")
    hits = truth[order] > 0
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


@torch.no_grad()
def mean_average_precision(model: PooledClassifier, images: np.ndarray, labels: np.ndarray) -> float:
    """mAP in percent over the classes shown at least once and missing at least once in `labels` (eval mode)."""
    model.eval()
    starts = range(0, len(images), EVAL_BATCH)
    scores = torch.cat([model(_batch(images, np.arange(i, min(i + EVAL_BATCH, len(images))))) for i in starts])
    scores = scores.numpy()
    model.train()
    varied = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
    return 100.0 * float(np.mean([average_precision(scores[:, c], labels[:, c]) for c in varied]))


def pretrain(data: Path, out: Path, arch: str, iters: int, batch_size: int, lr: float, seed: int) -> dict:
    """Train on the analog's train split, score its val split, write the init and its record; -> the record."""
    started = time.perf_counter()
    try:
        classes = json.loads((data / "classes.json").read_text())
    except (OSError, ValueError):
        raise InputError(f"--data {data}: no readable classes.json (write one with i2vda-prep demo-world)") from None
    train_x, train_y = read_split(data, "train", classes)
    val_x, val_y = read_split(data, "val", classes)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PooledClassifier(arch, len(classes)).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    for it in range(iters):
        for group in opt.param_groups:
            group["lr"] = poly_lr(lr, it, iters)
        rows = rng.integers(0, len(train_x), batch_size)
        x = _batch(train_x, rows, rng.random(batch_size) < 0.5)
        loss = F.binary_cross_entropy_with_logits(model(x), torch.from_numpy(train_y[rows]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise InputError(f"iteration {it + 1}: the pretraining loss is {loss.item()}: try a lower --lr")
    varied = (val_y.sum(axis=0) > 0) & (val_y.sum(axis=0) < len(val_y))
    record = {
        "arch": arch,
        "classes": classes,
        "train_crops": len(train_x),
        "val_crops": len(val_x),
        "iters": iters,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "val_map": round(mean_average_precision(model, val_x, val_y), 2),
        "val_map_chance": round(100.0 * float(val_y.mean(axis=0)[varied].mean()), 2),  # AP of random scores
        "seconds": round(time.perf_counter() - started, 1),
    }
    buffer = io.BytesIO()
    torch.save(model.backbone_state(), buffer)
    write_bytes_atomic(out, buffer.getvalue())
    write_text_atomic(record_path(out), json.dumps(record, indent=1) + "\n")
    return record


def record_path(out: Path) -> Path:
    """FILE.json beside the init FILE."""
    return out.with_name(out.name + ".json")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="The analog folder (WORLD/imagenet_analog)."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The init file to write.")
@click.option("--arch", type=click.Choice(list(SEGMENTERS)), default=DEFAULTS["arch"], show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=DEFAULTS["iters"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS["batch_size"], show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0.0, min_open=True),
    default=DEFAULTS["lr"],
    show_default=True,
    help="Peak SGD learning rate (poly decay to 0).",
)
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULTS["seed"], show_default=True)
def cli(data: Path, out: Path, arch: str, iters: int, batch_size: int, lr: float, seed: int) -> None:
    """Pretrain a segmenter's backbone by image-level classification on the world's ImageNet analog."""
    record = pretrain(data, out, arch, iters, batch_size, lr, seed)
    click.echo(
        f"{out}: {arch} backbone after {iters} iterations on {record['train_crops']} crops; val mAP "
        f"{record['val_map']:.1f} (chance {record['val_map_chance']:.1f}), {record['seconds']} s"
    )


main = one_line_errors(cli)

if __name__ == "__main__":
    main()
