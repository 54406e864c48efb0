"""Weight files -> networks: the trainer's one `torch.load` (`load_torch_file`, `weights_only=True`: no pickled code
runs, and a file that pickles more than tensors is refused in plain words), the fit and finiteness checks every load
makes (`check_fit`, `check_finite`, `load_weights`), and the ImageNet inits of the segmenter's backbone (the
DeepLab-v2 Caffe conversion, torchvision ResNets).

A file that does not fit the network is refused with one line naming its first mismatched keys. Nothing here knows
how a network is trained: our training checkpoints are `trainer/training/checkpoint.py`'s, which loads through here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.errors import InputError
from pipeline.flow import state_dict_fit
from trainer.models.deeplab import AUX_HEAD_PREFIX, MAIN_HEAD_PREFIX

# Heads that the ImageNet inits do not provide: they keep their N(0, 0.01) init (ADVENT, AdaptSegNet).
CLASSIFIER_PREFIXES = (AUX_HEAD_PREFIX, MAIN_HEAD_PREFIX)
BN_COUNTER = "num_batches_tracked"  # BatchNorm fills it in when a file (e.g. a caffe-converted one) lacks it
# What torch.load(weights_only=True) says when a file pickles a class or function (not merely corrupt bytes): torch
# writes "Unsupported global: GLOBAL os.system ..." or "unsupported GLOBAL posix.system ..." depending on the version,
# so it is matched without case; the name that follows is the global it refused.
WEIGHTS_ONLY_REFUSAL = re.compile(r"unsupported global:?\s*(?:global\s+)?([\w.]+)?", re.IGNORECASE)
KEYS_SHOWN = 3  # offending keys named in a refusal: enough to recognise the file, short enough for one line


def load_torch_file(path: str | Path, what: str, where: str | None = None) -> object:
    """torch.load(path, weights_only=True) on the CPU; every failure is one InputError line starting with `where`
    (default: the path) and naming `what` the file should have been."""
    path, where = Path(path), where or str(path)
    if not path.is_file():
        raise InputError(f"{where}: no such {what} checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is bad input, whatever the reason
        refused = WEIGHTS_ONLY_REFUSAL.search(str(exc))
        if refused is not None:
            named = f" ({refused[1]})" if refused[1] else ""
            raise InputError(
                f"{where}: refused: the file pickles Python objects beyond tensors{named}; it was not loaded and "
                f"nothing in it was run (checkpoints are read with torch.load(weights_only=True))"
            ) from None
        first = str(exc).splitlines()[0] if str(exc) else ""
        reason = f"unreadable as a torch file ({type(exc).__name__}{': ' + first[:200] if first else ''})"
        raise InputError(f"{where}: not a weights-only torch checkpoint: {reason}") from None


def read_state_dict(path: str | Path, what: str) -> Mapping[str, torch.Tensor]:
    """A mapping of tensors from a weights-only torch file, or a one-line InputError naming the file."""
    state = load_torch_file(path, what)
    if not isinstance(state, Mapping):
        raise InputError(f"{path}: expected a {what} state dict, found a {type(state).__name__}")
    return state


def nonfinite_tensor(obj, prefix: str = "") -> str | None:
    """The name of the first floating tensor holding a NaN or an infinity in a (nested) state dict, else None."""
    if torch.is_tensor(obj):
        return prefix if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = nonfinite_tensor(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def check_finite(state: Mapping, where: str, what: str) -> None:
    """Refuse weights with a NaN or an infinity (a diverged run): one-line InputError starting with `where`."""
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise InputError(
            f"{where}: the {what} weights are not finite ({bad} holds NaN or inf); the run that wrote them diverged"
        )


def check_fit(
    expected: Mapping[str, torch.Tensor], given: Mapping, where: str, what: str, network: str = "this network"
) -> None:
    """Refuse `given` unless it has exactly `expected`'s keys (BN counters optional) with the same shapes."""
    fit = state_dict_fit(expected, given, optional_suffix=BN_COUNTER)
    if not fit.ok:
        raise InputError(f"{where}: not a {what} checkpoint for {network}: {fit.describe(KEYS_SHOWN)}")


def load_weights(model: nn.Module, state: Mapping, where: str, what: str, network: str = "this network") -> nn.Module:
    """Load a state dict into `model` after `check_fit` against its whole state dict and `check_finite`; -> model."""
    check_fit(model.state_dict(), state, where, what, network)
    check_finite(state, where, what)
    model.load_state_dict(state, strict=False)  # strict up to BN counters, checked above
    return model


def _backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state entries outside the classifier heads (conv1, bn1, layer1..4)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(CLASSIFIER_PREFIXES)}


def load_deeplab_imagenet(model: nn.Module, path: str | Path) -> nn.Module:
    """Load `DeepLab_resnet_pretrained_imagenet.pth` (AdaptSegNet/ADVENT/DA-VSN init) into the backbone.

    Its keys carry a one-token prefix (`Scale.conv1.weight`) that is dropped; its own `layer5` head is skipped,
    as ADVENT does. The backbone must match exactly; the heads keep their init.
    """
    what = "DeepLab-v2 ImageNet"
    state = read_state_dict(path, what)
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
    state = read_state_dict(path, what)
    kept = {k: v for k, v in state.items() if not str(k).startswith("fc.")}
    check_fit(_backbone_state(model), kept, str(path), what)
    model.load_state_dict(kept, strict=False)
    return model
