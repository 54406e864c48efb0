"""Running a segmenter over frames: the checkpoint, batching, Caffe normalisation, logits upsampled, argmax."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import InputError
from pipeline.sources.images import resize_rgb
from trainer.models import build_segmenter, caffe_normalize

# Frames per forward pass: a DeepLab-v2 R101 at 1024x512 fits a 16 GB GPU at 4; callers may raise it.
DEFAULT_BATCH_SIZE = 4
# Logits are upsampled as DA-VSN's test.py does it (bilinear, align_corners=True), then argmax.
UPSAMPLE_MODE = "bilinear"
ALIGN_CORNERS = True
# What a training checkpoint's config must name to rebuild M (docs/DEVELOPING.md "Checkpoint files").
CONFIG_FIELDS = ("arch", "num_classes", "protocol", "target_size_hw")
AUX_HEAD_PREFIX = "layer5."  # DeepLabV2's multi-level aux classifier
BN_COUNTER = "num_batches_tracked"  # BatchNorm fills it in when a file lacks it
KEYS_SHOWN = 3  # offending keys named in a refusal: enough to recognise the file, short enough for one line


def frames_to_tensor(frames_bhw3: np.ndarray, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 Caffe-normalised input on `device`."""
    rgb = torch.from_numpy(np.ascontiguousarray(frames_bhw3)).to(device)
    return caffe_normalize(rgb.permute(0, 3, 1, 2).float())


def upsampled_logits(model, frames_bhw3: np.ndarray, out_size_hw, device) -> torch.Tensor:
    """Logits (B, K, H_out, W_out) of uint8 RGB frames (B, H, W, 3), upsampled bilinearly (align_corners=True)."""
    logits = model(frames_to_tensor(frames_bhw3, device))  # (B, K, h, w) at output stride 8
    return F.interpolate(logits, size=tuple(out_size_hw), mode=UPSAMPLE_MODE, align_corners=ALIGN_CORNERS)


@torch.no_grad()
def predict_labels(model, frames_bhw3: np.ndarray, out_size_hw, device="cpu", batch_size: int = DEFAULT_BATCH_SIZE,
                   input_size_hw=None) -> np.ndarray:  # fmt: skip
    """(B, H_out, W_out) uint8 train ids for (B, H, W, 3) uint8 RGB frames, `batch_size` frames per forward.

    Frames are resized to `input_size_hw` first when given (area/bicubic, as the pipeline resizes); the model is
    used in whatever mode it is in (callers put it in eval mode).
    """
    frames_bhw3 = np.asarray(frames_bhw3)
    if frames_bhw3.ndim != 4 or frames_bhw3.shape[-1] != 3 or frames_bhw3.dtype != np.uint8:
        raise ValueError(f"frames must be (B, H, W, 3) uint8 RGB, got {frames_bhw3.shape} {frames_bhw3.dtype}")
    if input_size_hw is not None:
        size_wh = (input_size_hw[1], input_size_hw[0])
        frames_bhw3 = np.stack([resize_rgb(frame, size_wh) for frame in frames_bhw3])
    out = np.empty((len(frames_bhw3), *out_size_hw), dtype=np.uint8)
    for start in range(0, len(frames_bhw3), batch_size):
        batch = frames_bhw3[start : start + batch_size]
        labels = upsampled_logits(model, batch, out_size_hw, device).argmax(dim=1)
        out[start : start + len(batch)] = labels.to(torch.uint8).cpu().numpy()
    return out


def _mismatch(model: torch.nn.Module, state) -> str:
    """'' when `state` fits the model's state dict key for key and shape; else the first differences, one line."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith(BN_COUNTER))
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(
        f"{k} {tuple(getattr(state[k], 'shape', ()))} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and (not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)
    )
    problems = [
        f"{what} {', '.join(keys[:KEYS_SHOWN])}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape (file vs network)", shapes))
        if keys
    ]
    return "; ".join(problems)


def load_checkpoint(path: str | os.PathLike, device="cpu") -> tuple[torch.nn.Module, dict, int]:
    """(segmenter M in eval mode on `device`, its config dict, iterations done) from a training checkpoint file.

    Read with torch.load(weights_only=True). A file that is not a torch checkpoint, not ours (no "model" and
    "config" with arch/num_classes/protocol/target_size_hw) or of another network raises InputError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--ckpt {path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise InputError(f"--ckpt {path}: not a torch checkpoint (expected a torch.save zip archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"--ckpt {path}: holds pickled objects beyond tensors and plain containers; refused "
                         f"(loaded with weights_only=True, so no pickled code runs)") from None  # fmt: skip
    except Exception as exc:  # any other unreadable file is bad input, whatever the reason
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--ckpt {path}: not a readable torch checkpoint ({reason})") from None
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(ckpt.get("model") if isinstance(ckpt, dict) else None, dict) or not isinstance(config, dict):
        raise InputError(f"--ckpt {path}: not an i2vda training checkpoint (expected a dict with 'model' and 'config')")
    absent = [name for name in CONFIG_FIELDS if name not in config]
    if absent:
        raise InputError(f"--ckpt {path}: its config lacks {', '.join(absent)}; expected an i2vda training checkpoint")
    state = ckpt["model"]
    # The aux head (layer5) is present only when the network was trained multi-level.
    multi_level = any(k.startswith(AUX_HEAD_PREFIX) for k in state)
    model = build_segmenter(str(config["arch"]), int(config["num_classes"]), multi_level=multi_level)
    problems = _mismatch(model, state)
    if problems:
        raise InputError(f"--ckpt {path}: weights do not fit a {config['arch']} with {config['num_classes']} "
                         f"classes: {problems}")  # fmt: skip
    model.load_state_dict(state, strict=False)  # strict up to BN counters, checked above
    return model.to(device).eval(), config, int(ckpt.get("iteration", -1))
