"""The world's ImageNet analog: a pretraining set that is neither the source's look nor the target's.

The paper fine-tunes a ResNet-101 initialised on ImageNet: image-level classification of photographs of every kind,
no pixel labels, no driving scene in particular. Its analog here: scenes of the world's generator, each picture in a
look of its own drawn at random (`styles.random_style`: colours, texture, weather and sensor), seen by a camera with a
random field of view and no bonnet, cut into square crops at random places and scales, and labelled at image level
with the world classes each crop shows (multi-label classification: no pixel label leaves this module). No source or
target picture and no val snippet is used: the streams of the random generator are the analog's own.

On disk, an ImageNet-like folder per split (read by `trainer.experiment.pretrain`):
`imagenet_analog/classes.json` (the class names, in label order) and, for `train` and `val`,
`imagenet_analog/<split>/PPPPPP_K.png` (crop K of picture P, CROP_PX x CROP_PX RGB) with
`imagenet_analog/<split>/labels.json` ({file name: [class names]}).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pipeline.sources.images import write_png
from pipeline.world.classes import WorldClass
from pipeline.world.shots import draw_shot, render_frame
from pipeline.world.styles import random_style

ANALOG_DIR = "imagenet_analog"
CLASSES = tuple(c for c in WorldClass if c != WorldClass.EGO)  # what a picture can show; the bonnet is not a thing
CLASS_NAMES = tuple(c.name.lower() for c in CLASSES)
CROP_PX = 32  # side of a stored crop (CIFAR's): the pretraining's input, small enough to fit the demo's budget
CROPS_PER_PICTURE = 6
CROP_SIDE_FRAC = (0.2, 0.7)  # a crop's side, as a fraction of the picture's height, drawn uniformly
PRESENT_SHARE = 0.005  # a class is in a crop's label when it covers at least this share of the crop
HFOV_DEG = (45.0, 90.0)  # field of view drawn per picture: not the target's camera
SCENE_SECONDS = 2.0  # a picture is one instant of a scene of this length
VAL_EVERY = 8  # one picture in VAL_EVERY goes to the val split (its crops score the pretraining)


def crops_of(rgb: np.ndarray, cls: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, list[str], tuple]]:
    """CROPS_PER_PICTURE square crops of one picture, each resized to CROP_PX and labelled with the classes it shows:
    [(crop, class names, (y, x, side) of its window)]."""
    h, w = cls.shape
    crops = []
    for _ in range(CROPS_PER_PICTURE):
        side = int(round(rng.uniform(*CROP_SIDE_FRAC) * h))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        counts = np.bincount(cls[y : y + side, x : x + side].ravel(), minlength=len(WorldClass))
        shown = [name for c, name in zip(CLASSES, CLASS_NAMES) if counts[c] >= PRESENT_SHARE * side * side]
        crop = cv2.resize(rgb[y : y + side, x : x + side], (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA)
        crops.append((crop, shown, (y, x, side)))
    return crops


def write_analog_picture(
    out: Path, seed: int, stream: int, i: int, size_wh: tuple[int, int], max_layers: int
) -> tuple[str, dict]:
    """Render picture `i` of the analog (random generator [seed, stream, i]) and write its crops;
    -> (its split, {crop file name: class names})."""
    rng = np.random.default_rng([seed, stream, i])
    style = random_style(rng)
    shot = draw_shot(rng, size_wh, float(rng.uniform(*HFOV_DEG)), SCENE_SECONDS, 0.0, style)
    noise = np.random.default_rng([seed, stream, i, 1])
    rgb, gbuffer = render_frame(shot, float(rng.uniform(0.0, SCENE_SECONDS)), style, max_layers, noise)
    split = "val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"
    labels = {}
    for k, (crop, shown, _) in enumerate(crops_of(rgb, gbuffer.cls, rng)):
        name = f"{i:06d}_{k}.png"
        write_png(Path(out) / ANALOG_DIR / split / name, crop)
        labels[name] = shown
    return split, labels


def analog_jobs(out: Path, seed: int, stream: int, pictures: int, size_wh: tuple, max_layers: int) -> list[tuple]:
    """The arguments of write_analog_picture for each of `pictures` pictures."""
    return [(out, seed, stream, i, size_wh, max_layers) for i in range(pictures)]


def write_analog_labels(out: Path, pictures: list[tuple[str, dict]]) -> dict:
    """labels.json of each split and classes.json, from write_analog_picture's results; -> counts per split."""
    root = Path(out) / ANALOG_DIR
    labels: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}}
    for split, table in pictures:
        labels[split] |= table
    for split, table in labels.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "labels.json").write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    (root / "classes.json").write_text(json.dumps(list(CLASS_NAMES)) + "\n")
    return {"analog_train_crops": len(labels["train"]), "analog_val_crops": len(labels["val"])}
