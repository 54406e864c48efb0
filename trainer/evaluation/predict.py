"""Running a segmenter over frames: batching, Caffe normalisation, logits upsampled, argmax; `--device`, `--ckpt`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import InputError
from pipeline.sources import resize_rgb
from trainer.models import caffe_normalize
from trainer.training.checkpoint import checkpoint_files

# Frames per forward pass: a DeepLab-v2 R101 at 1024x512 fits a 16 GB GPU at 4; callers may raise it.
DEFAULT_BATCH_SIZE = 4
# Logits are upsampled as DA-VSN's test.py does it (bilinear, align_corners=True), then argmax.
UPSAMPLE_MODE = "bilinear"
ALIGN_CORNERS = True


def frames_to_tensor(frames_bhw3: np.ndarray, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 Caffe-normalised input on `device`."""
    rgb = torch.from_numpy(np.ascontiguousarray(frames_bhw3)).to(device)
    return caffe_normalize(rgb.permute(0, 3, 1, 2).float())


def upsampled_logits(model, frames_bhw3: np.ndarray, out_size_hw, device) -> torch.Tensor:
    """Logits (B, K, H_out, W_out) of uint8 RGB frames (B, H, W, 3), upsampled bilinearly (align_corners=True)."""
    logits = model(frames_to_tensor(frames_bhw3, device))  # (B, K, h, w) at output stride 8
    return F.interpolate(logits, size=tuple(out_size_hw), mode=UPSAMPLE_MODE, align_corners=ALIGN_CORNERS)


@torch.no_grad()
def predict_labels(
    model, frames_bhw3: np.ndarray, out_size_hw, device="cpu", batch_size: int = DEFAULT_BATCH_SIZE, input_size_hw=None
) -> np.ndarray:
    """(B, H_out, W_out) uint8 train ids for (B, H, W, 3) uint8 RGB frames, `batch_size` frames per forward.

    Frames are resized to `input_size_hw` first when given (area/bicubic, as the pipeline resizes); the model is
    used in whatever mode it is in (callers put it in eval mode).
    """
    return predict_at_sizes(model, frames_bhw3, [out_size_hw], device, batch_size, input_size_hw)[0]


@torch.no_grad()
def predict_at_sizes(
    model,
    frames_bhw3: np.ndarray,
    out_sizes_hw,
    device="cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    input_size_hw=None,
    autocast_dtype: torch.dtype | None = None,
) -> list[np.ndarray]:
    """One forward per batch, its logits upsampled to each size of `out_sizes_hw`: a (B, H_i, W_i) uint8 array each.

    `i2vda-predict` writes the labels at the input's resolution and measures TC at the network's input size from
    the same forward. `autocast_dtype` (CUDA only) runs the network under autocast; the upsampling and the argmax
    are done in float32 either way.
    """
    frames_bhw3 = np.asarray(frames_bhw3)
    if frames_bhw3.ndim != 4 or frames_bhw3.shape[-1] != 3 or frames_bhw3.dtype != np.uint8:
        raise ValueError(f"frames must be (B, H, W, 3) uint8 RGB, got {frames_bhw3.shape} {frames_bhw3.dtype}")
    if input_size_hw is not None:
        frames_bhw3 = resize_frames(frames_bhw3, input_size_hw)
    outs = [np.empty((len(frames_bhw3), *size_hw), dtype=np.uint8) for size_hw in out_sizes_hw]
    for start in range(0, len(frames_bhw3), batch_size):
        batch = frames_bhw3[start : start + batch_size]
        amp = torch.autocast("cuda", dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
        with amp:
            logits = model(frames_to_tensor(batch, device))  # (B, K, h, w) at output stride 8
        for out, size_hw in zip(outs, out_sizes_hw):
            up = F.interpolate(logits.float(), size=tuple(size_hw), mode=UPSAMPLE_MODE, align_corners=ALIGN_CORNERS)
            out[start : start + len(batch)] = up.argmax(dim=1).to(torch.uint8).cpu().numpy()
    return outs


def resize_frames(frames_bhw3: np.ndarray, size_hw) -> np.ndarray:
    """(B, H, W, 3) uint8 frames resized to (B, *size_hw, 3) as the pipeline resizes (area shrinking, bicubic up)."""
    if tuple(frames_bhw3.shape[1:3]) == tuple(size_hw):
        return frames_bhw3
    size_wh = (int(size_hw[1]), int(size_hw[0]))
    return np.stack([resize_rgb(frame, size_wh) for frame in frames_bhw3])


def resolve_device(name: str | None) -> torch.device:
    """`--device`: cpu, cuda or cuda:N; None = cuda when available. Unknown names and absent CUDA raise InputError."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device: expected cpu or cuda[:N], got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device: expected cpu or cuda[:N], got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here")
    return device


def last_checkpoint(path: str | os.PathLike) -> Path:
    """`--ckpt FILE|RUN`: the file itself, or the newest iter_<N>.pt of a run folder (RUN/ or RUN/checkpoints/)."""
    return checkpoint_files(Path(path))[-1]
