"""Weight loaders for the segmenter: the DeepLab-v2 ImageNet init, torchvision ResNets, and our own checkpoints.

Every file is read by trainer/training/checkpoint.py (`torch.load(weights_only=True)`: no pickled code runs) and
fitted by its `check_fit`: a file that does not fit the network is refused with one line naming its first mismatched
keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.errors import InputError
from trainer.models.deeplab import AUX_HEAD_PREFIX, MAIN_HEAD_PREFIX
from trainer.training.checkpoint import check_fit, load_torch_file, load_weights

# Heads that the ImageNet inits do not provide: they keep their N(0, 0.01) init (ADVENT, AdaptSegNet).
CLASSIFIER_PREFIXES = (AUX_HEAD_PREFIX, MAIN_HEAD_PREFIX)


def _read_state_dict(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    """A mapping of tensors from a weights-only torch file, or a one-line InputError naming the file."""
    state = load_torch_file(path, what)
    if not isinstance(state, Mapping):
        raise InputError(f"{path}: expected a {what} state dict, found a {type(state).__name__}")
    return state


def _backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state entries outside the classifier heads (conv1, bn1, layer1..4)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(CLASSIFIER_PREFIXES)}


def load_deeplab_imagenet(model: nn.Module, path: str | Path) -> nn.Module:
    """Load `DeepLab_resnet_pretrained_imagenet.pth` (AdaptSegNet/ADVENT/DA-VSN init) into the backbone.

    Its keys carry a one-token prefix (`Scale.conv1.weight`) that is dropped; its own `layer5` head is skipped,
    as ADVENT does. The backbone must match exactly; the heads keep their init.
    """
    what = "DeepLab-v2 ImageNet"
    state = _read_state_dict(path, what)
    renamed = {}
    for key, value in state.items():
        prefix, _, rest = str(key).partition(".")
        if rest.startswith(AUX_HEAD_PREFIX):
            continue  # the caffe model's ASPP on layer4: a different head (ADVENT skips it too)
        renamed[rest or prefix] = value
    check_fit(_backbone_state(model), renamed, str(path), what)
    model.load_state_dict(renamed, strict=False)
    return model


def load_torchvision_resnet(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a torchvision-style ResNet state dict (`conv1`, `bn1`, `layer1..4`; `fc.*` skipped) into the backbone.

    torchvision puts a block's stride in its 3x3 conv2, ours (Caffe) in its 1x1 conv1; the weights have the same
    shapes, so they load, but the strided layer2 block then samples differently from the network they were
    trained in: a good init, not the same function.
    """
    what = "torchvision ResNet"
    state = _read_state_dict(path, what)
    kept = {k: v for k, v in state.items() if not str(k).startswith("fc.")}
    check_fit(_backbone_state(model), kept, str(path), what)
    model.load_state_dict(kept, strict=False)
    return model


def load_segmenter_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load our own checkpoint (a dict with "model", as trainer/training/checkpoint.py writes) or a bare state dict
    (e.g. an ADVENT or DA-VSN snapshot), strictly."""
    what = "segmenter"
    state = _read_state_dict(path, what)
    if "model" in state:
        state = state["model"]
        if not isinstance(state, Mapping):
            raise InputError(f"{path}: its 'model' entry is a {type(state).__name__}, expected a state dict")
    return load_weights(model, state, str(path), what)
