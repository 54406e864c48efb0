"""Weight loaders for the segmenter: the DeepLab-v2 ImageNet init, torchvision ResNets, and our own checkpoints.

Every file is read with `torch.load(weights_only=True)` (no pickled code runs). A file that does not fit the
network is refused with one line naming its first mismatched keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.errors import InputError

# Heads that the ImageNet inits do not provide: they keep their N(0, 0.01) init (ADVENT, AdaptSegNet).
CLASSIFIER_PREFIXES = ("layer5.", "layer6.")
# BN counters that old (caffe-converted) files lack; BatchNorm fills them in when absent.
OPTIONAL_SUFFIX = "num_batches_tracked"
# What torch.load(weights_only=True) says when a file pickles a class or function (not merely corrupt bytes).
WEIGHTS_ONLY_REFUSAL = "Unsupported global"
# How many offending keys a refusal names: enough to recognise the file, short enough for one line.
KEYS_SHOWN = 3


def _read_state_dict(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    """torch.load(weights_only=True) a mapping of tensors, or raise a one-line InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what} checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is bad input, whatever the reason
        if WEIGHTS_ONLY_REFUSAL in str(exc):
            reason = "it holds pickled objects beyond tensors, refused rather than run"
        else:
            reason = f"unreadable as a torch file ({type(exc).__name__})"
        raise InputError(f"{path}: not a weights-only torch checkpoint: {reason}") from None
    if not isinstance(state, Mapping):
        raise InputError(f"{path}: expected a {what} state dict, found a {type(state).__name__}")
    return state


def _first(keys) -> str:
    """The first KEYS_SHOWN of sorted keys, comma separated, with '...' when there are more."""
    keys = sorted(keys)
    shown = ", ".join(keys[:KEYS_SHOWN])
    return shown + (", ..." if len(keys) > KEYS_SHOWN else "")


def _check_fit(path, what: str, expected: Mapping[str, torch.Tensor], given: Mapping[str, object]) -> None:
    """Refuse `given` unless it has exactly `expected`'s keys (BN counters optional) with the same shapes."""
    missing = [k for k in expected if k not in given and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in given if k not in expected]
    not_tensor = [k for k in given if k in expected and not isinstance(given[k], torch.Tensor)]
    shape = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in given
        if k in expected and isinstance(given[k], torch.Tensor) and given[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if not_tensor:
        problems.append(f"not tensors {_first(not_tensor)}")
    if shape:
        problems.append(f"shape (file vs model) {_first(shape)}")
    if problems:
        raise InputError(f"{path}: not a {what} checkpoint for this network: {'; '.join(problems)}")


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
        if rest.split(".")[0] == "layer5":
            continue  # the caffe model's ASPP on layer4: a different head (ADVENT skips it too)
        renamed[rest or prefix] = value
    _check_fit(path, what, _backbone_state(model), renamed)
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
    _check_fit(path, what, _backbone_state(model), kept)
    model.load_state_dict(kept, strict=False)
    return model


def load_segmenter_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load our own checkpoint (a dict with "model", as trainer/checkpoint.py writes) or a bare state dict, strictly."""
    what = "segmenter"
    state = _read_state_dict(path, what)
    if "model" in state:
        state = state["model"]
        if not isinstance(state, Mapping):
            raise InputError(f"{path}: its 'model' entry is a {type(state).__name__}, expected a state dict")
    _check_fit(path, what, model.state_dict(), state)
    model.load_state_dict(state, strict=False)
    return model
