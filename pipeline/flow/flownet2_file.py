"""Safe reading of the official `FlowNet2_checkpoint.pth.tar`: tensors only, never pickled code.

The file is a plain `torch.save` pickle (not a tar), `{'epoch', 'state_dict', 'best_EPE'}`, most likely in the legacy
pre-zip format written by Python 2 and torch 0.2 (NVIDIA's flownet2-pytorch, github.com/NVIDIA/flownet2-pytorch).
`torch.load(weights_only=True)` reads that format with its restricted unpickler (Python 2 `str` opcodes,
`torch._utils._rebuild_tensor`, legacy storage classes are all on its allow-list) and refuses anything that would
import or call other code. Every failure becomes one InputError line naming the file.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import InputError
from pipeline.flow.weights_fit import KEYS_SHOWN, listed, state_dict_fit

FLOWNET2_FILE_NAME = "FlowNet2_checkpoint.pth.tar"
# torch >= 1.6 writes a zip archive; the legacy format starts with a pickle protocol opcode (0x80).
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"
# nn.DataParallel's key prefix; the official file has none, re-saved wrapped models do.
DATA_PARALLEL_PREFIX = "module."


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _check_file_head(path: Path) -> None:
    """Reject what is plainly not a torch file (missing, empty, an HTML page) before unpickling."""
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected the FlowNet2 checkpoint {FLOWNET2_FILE_NAME})")
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise InputError(f"{path}: empty file, not a PyTorch checkpoint (download {FLOWNET2_FILE_NAME} again)")
    if head.lstrip().startswith(b"<"):
        raise InputError(
            f"{path}: an HTML page, not a PyTorch checkpoint (a failed download saved instead of {FLOWNET2_FILE_NAME}?)"
        )
    if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_PROTO)):
        raise InputError(f"{path}: not a PyTorch checkpoint (the file starts with {head[:8]!r})")


def _refusal_reason(message: str) -> str | None:
    """What a weights_only refusal says the pickle wanted to import or call; None if it is not such a refusal."""
    found = re.search(r"GLOBAL (\S+)", message)
    if found:
        return f"it would import {found.group(1)}"
    found = re.search(r"(unrecognized function [^\n]*|Can only [^\n]*)", message)
    return f"it would run {found.group(1)}" if found else None


def read_flownet2_file(path: str | Path) -> object:
    """torch.load(path, map_location="cpu", weights_only=True), with every failure as an InputError."""
    path = Path(path)
    _check_file_head(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except UnicodeDecodeError:
            # A Python 2 pickle holds `str` as raw bytes; non-UTF-8 ones decode as latin-1, byte for byte.
            # (torch warns that pickle arguments need weights_only=False, but its restricted unpickler does use
            # `encoding`; the test with a latin-1 Python 2 pickle checks that.)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="pickle_load_args only works")
                return torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")
    except pickle.UnpicklingError as exc:
        reason = _refusal_reason(str(exc))
        if reason is not None:
            raise InputError(
                f"{path}: refused to load: the pickle holds more than tensors ({reason}); "
                f"only plain weights are read (torch.load weights_only=True)"
            ) from None
        raise InputError(f"{path}: corrupt PyTorch checkpoint ({_first_line(exc)[:200]})") from None
    except EOFError:
        raise InputError(f"{path}: truncated PyTorch checkpoint (the file ends early; download it again)") from None
    except Exception as exc:  # anything else a damaged file makes the unpickler or the zip reader raise
        detail = _first_line(exc)[:200] or type(exc).__name__
        raise InputError(f"{path}: truncated or corrupt PyTorch checkpoint ({detail})") from None


def load_flownet2_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The float32 state_dict of a FlowNet2 checkpoint file (`{'state_dict': ...}` or a bare state_dict)."""
    obj = read_flownet2_file(path)
    state_dict = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    if not isinstance(state_dict, dict) or not state_dict:
        raise InputError(
            f"{path}: expected a checkpoint {{'state_dict': {{name: tensor}}}} or a bare state_dict, "
            f"got {type(state_dict).__name__}"
        )
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"{path}: the state_dict holds non-tensor entries ({', '.join(map(str, bad[:KEYS_SHOWN]))})")
    out = {}
    for key, value in state_dict.items():
        if not value.is_floating_point():
            raise InputError(f"{path}: {key} has dtype {value.dtype}, expected floating-point weights")
        name = key[len(DATA_PARALLEL_PREFIX) :] if key.startswith(DATA_PARALLEL_PREFIX) else key
        out[name] = value.to(torch.float32)
    return out


def check_flownet2_fit(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise an InputError naming the file unless state_dict has exactly model's keys and shapes."""
    fit = state_dict_fit(model.state_dict(), state_dict)
    network = type(model).__name__
    if fit.missing or fit.unexpected:
        parts = []
        if fit.missing:
            parts.append(f"{len(fit.missing)} missing keys ({listed(fit.missing)})")
        if fit.unexpected:
            parts.append(f"{len(fit.unexpected)} unexpected keys ({listed(fit.unexpected)})")
        raise InputError(
            f"{path}: not a {network} checkpoint: {'; '.join(parts)} "
            f"(a FlowNet2-C/-CS/-CSS/-S/-SD file? {network} needs {FLOWNET2_FILE_NAME})"
        )
    if fit.wrong_shapes:
        key, have, want = fit.wrong_shapes[0]
        raise InputError(
            f"{path}: not a {network} checkpoint: {len(fit.wrong_shapes)} tensors have the wrong shape "
            f"({key} is {have}, expected {want})"
        )
