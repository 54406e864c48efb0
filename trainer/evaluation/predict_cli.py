"""`i2vda-predict`: a trained checkpoint on any video, folder of frames or image.

Writes, under `--out DIR`: `pred/<name>_pred.png` (train ids, grey: `i2vda-eval --pred-dir` scores them),
`pred/<name>_pred_color.png` (the protocol's Cityscapes colours), `pred/<name>_overlay.png`, `legend.png`, for a
video or a frame sequence a video of frame | overlay at the input's frame rate, and `predict.json`. The network,
its normalisation and the logits' upsampling are those of `i2vda-eval` (`trainer/evaluation/predict.py`). See
docs/EVALUATION.md ("Predict on your own footage").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from pipeline.errors import InputError, one_line_errors
from pipeline.flow import ESTIMATORS, load_estimator
from pipeline.sources import (
    Protocol,
    class_legend,
    colorize,
    figure_grid,
    get_protocol,
    parse_size_wh,
    protocol_names,
    write_png,
)
from trainer.evaluation.evaluate import TC_PROTOCOLS, tc_confusion, tc_score
from trainer.evaluation.footage import Footage, open_footage
from trainer.evaluation.predict import (
    DEFAULT_BATCH_SIZE,
    last_checkpoint,
    predict_at_sizes,
    resize_frames,
    resolve_device,
)
from trainer.evaluation.visualize import (
    BROWSER_CODECS,
    OFFLINE_PLAYERS,
    VIDEO_CODECS,
    VideoSink,
    overlay,
)
from trainer.training.checkpoint import load_segmenter
from trainer.training.config import AMP_DTYPES, TrainConfig
from trainer.training.monitor import on_terminal

VIDEO_TILE_MAX_WIDTH = 960  # each half of a video frame is shrunk to this width at most (a 1080p input stays light)
VIDEO_TILE_MIN_WIDTH = 320  # and enlarged to this width at least, so titles and the legend stay readable
AUTO_CODECS = ("h264", "vp9", "mp4v")  # --video-codec auto: the first this OpenCV build writes (visualize.py)
INPUT_TITLE = "input"
SUMMARY_NAME = "predict.json"
LEGEND_NAME = "legend.png"
LEGEND_WIDTH = 640


def output_folder(path: Path) -> Path:
    """`--out`: created when missing; a file there is refused."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: is a file, expected a folder (it is created when missing)")
    try:
        (path / "pred").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {path}: cannot create the folder ({exc.strerror})") from None
    return path


def checkpoint_protocol(name: str | None, config: TrainConfig, path: Path) -> Protocol:
    """The checkpoint's class protocol; `--protocol` only asserts it (another protocol is refused)."""
    trained = config.protocol
    if name is not None and name != trained:
        raise InputError(
            f"--protocol {name}: {path} was trained with protocol {trained}; pass --protocol {trained} "
            f"or a checkpoint of {name}"
        )
    if trained not in protocol_names():
        raise InputError(f"--ckpt {path}: unknown class protocol {trained!r} in its config")
    return get_protocol(trained)


def autocast_dtype(amp: str, device: torch.device):
    """`--amp`: the autocast dtype, CUDA only."""
    if amp != "off" and device.type != "cuda":
        raise InputError(f"--amp {amp}: autocast is used on CUDA only; pass --amp off on the CPU")
    return AMP_DTYPES[amp]


def video_frame(frame: np.ndarray, over: np.ndarray, protocol: Protocol, title: str) -> np.ndarray:
    """One frame of the output video: the input | the overlay, titled, the class legend below."""
    h, w = frame.shape[:2]
    scale = min(max(w, VIDEO_TILE_MIN_WIDTH), VIDEO_TILE_MAX_WIDTH) / w
    tile_hw = (max(2, round(h * scale)), max(2, round(w * scale)))
    return figure_grid([[frame, over]], titles=[INPUT_TITLE, title], tile_hw=tile_hw, legend=protocol)


class TcMeter:
    """TC of a prediction sequence, as `i2vda-eval` measures it: pair counts of (P_t, W(P_t+1, F(t->t+1))) summed."""

    def __init__(self, estimator, protocol: Protocol, tc_protocol: str):
        self.estimator, self.protocol, self.tc_protocol = estimator, protocol, tc_protocol
        k = protocol.num_classes
        self.cm = np.zeros((k, k), dtype=np.int64)
        self.pairs = 0
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (frame, prediction) ending the previous batch

    def add(self, frames_bhw3: np.ndarray, preds_bhw: np.ndarray) -> None:
        """The next frames of the sequence at the network's input size and their predictions at that size."""
        if self._last is not None:
            frames_bhw3 = np.concatenate([self._last[0][None], frames_bhw3])
            preds_bhw = np.concatenate([self._last[1][None], preds_bhw])
        if len(frames_bhw3) > 1:
            flows = self.estimator.flows(frames_bhw3[:-1], frames_bhw3[1:])  # (B-1, 2, H, W): F(t->t+1) on t's grid
            self.cm += tc_confusion(preds_bhw, flows, self.protocol.num_classes, self.tc_protocol)
            self.pairs += len(frames_bhw3) - 1
        self._last = (frames_bhw3[-1], preds_bhw[-1])

    def score(self) -> float | None:
        """TC in percent over every pair seen (None where no scored class occurs at all)."""
        value = tc_score(self.cm, self.protocol.eval_ids, self.tc_protocol)
        return None if np.isnan(value) else value


def predict_footage(
    model,
    footage: Footage,
    protocol: Protocol,
    out: Path,
    net_size_hw,
    device,
    batch_size: int,
    amp_dtype=None,
    tc: TcMeter | None = None,
    codecs=AUTO_CODECS,
    title: str = "prediction",
) -> dict:
    """Predict every frame of `footage` and write its pictures (module docstring); returns what was written."""
    out_hw = footage.size_hw
    sizes = [out_hw] if tc is None or tuple(net_size_hw) == tuple(out_hw) else [out_hw, net_size_hw]
    sink = VideoSink(out / footage.path.stem, footage.fps, codecs) if footage.is_sequence else None
    frames_done, network_s = 0, 0.0
    started = time.perf_counter()
    try:
        with tqdm(total=footage.count, unit="frame", desc="predict", disable=not on_terminal()) as bar:
            for names, frames in footage.batches(batch_size):
                net_frames = resize_frames(frames, net_size_hw)
                tick = time.perf_counter()
                preds = predict_at_sizes(model, net_frames, sizes, device, batch_size, autocast_dtype=amp_dtype)
                network_s += time.perf_counter() - tick
                for name, frame, label in zip(names, frames, preds[0]):
                    over = overlay(frame, label, protocol)
                    write_png(out / "pred" / f"{name}_pred.png", label)  # train ids: i2vda-eval --pred-dir
                    write_png(out / "pred" / f"{name}_pred_color.png", colorize(label, protocol))
                    write_png(out / "pred" / f"{name}_overlay.png", over)
                    if sink is not None:
                        sink.write(video_frame(frame, over, protocol, title))
                if tc is not None:
                    tc.add(net_frames, preds[-1])
                frames_done += len(names)
                bar.update(len(names))
    finally:
        if sink is not None:
            sink.close()
    total_s = time.perf_counter() - started
    return {
        "frames": frames_done,
        "video": str(sink.path) if sink and sink.path else None,
        "video_codec": sink.codec if sink else None,
        "seconds_per_frame": total_s / max(frames_done, 1),
        "network_seconds_per_frame": network_s / max(frames_done, 1),
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--ckpt",
    type=click.Path(path_type=Path),
    required=True,
    help="Checkpoint file, or run folder RUN/ (its newest RUN/checkpoints/iter_<N>.pt).",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    required=True,
    help="A video file (mp4, avi, mov, mkv, webm, ...), a folder of frames (sorted by name) or one image.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (created when missing).")
@click.option(
    "--protocol",
    type=click.Choice(protocol_names()),
    help="Refuse a checkpoint trained with another class protocol [default: accept the checkpoint's].",
)
@click.option(
    "--size",
    help="WIDTHxHEIGHT the frames are resized to for the network [default: the checkpoint's "
    "training size]. Predictions are written at the input's resolution either way.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Frames per forward pass.",
)
@click.option("--device", help="cpu, cuda or cuda:N [default: cuda when available].")
@click.option(
    "--amp",
    type=click.Choice(list(AMP_DTYPES)),
    default="off",
    show_default=True,
    help="Autocast the network on CUDA (bf16 or fp16).",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    help="Frame rate of the output video [default: the input video's; 17 for a folder of frames].",
)
@click.option(
    "--video-codec",
    type=click.Choice(["auto", *VIDEO_CODECS]),
    default="auto",
    show_default=True,
    help="auto: H.264 (.mp4) or VP9 (.webm), which browsers play, where this OpenCV build writes them; "
    "else mp4v (.mp4: VLC, mpv, ffplay).",
)
@click.option(
    "--tc/--no-tc",
    default=False,
    show_default=True,
    help="Also measure the temporal consistency of the predictions (a video or a frame sequence).",
)
@click.option(
    "--tc-protocol",
    type=click.Choice(TC_PROTOCOLS),
    default="ours",
    show_default=True,
    help="TC as i2vda-eval computes it (ours) or as ETC's tool does (etc).",
)
@click.option(
    "--flow",
    metavar="[" + "|".join(ESTIMATORS.names()) + "]",
    default="dis",
    show_default=True,
    help="Flow estimator for --tc: "
    + "; ".join(f"{e.name}: {e.summary}" + (", needs --flow-ckpt" if e.weights else "") for e in ESTIMATORS.entries())
    + ".",
)
@click.option(
    "--flow-ckpt",
    type=click.Path(path_type=Path),
    help="The weights file of --flow: "
    + ", ".join(f"{e.weights} ({e.name})" for e in ESTIMATORS.entries() if e.weights),
)
def cli(
    ckpt, input_path, out, protocol, size, batch_size, device, amp, fps, video_codec, tc, tc_protocol, flow, flow_ckpt
):
    """Segment a video, a folder of frames or an image with a trained i2vda checkpoint."""
    out = output_folder(out)
    footage = open_footage(input_path, fps)
    if tc and not footage.is_sequence:
        raise InputError(f"--tc: {input_path} is a single frame; TC needs a video or a folder of frames")
    if tc:  # a bad --flow or a missing weights file is refused before the network is loaded
        ESTIMATORS.get(flow).check_weights(flow_ckpt)
    device = resolve_device(device)
    amp_dtype = autocast_dtype(amp, device)
    ckpt_path = last_checkpoint(ckpt)
    model, config, iteration = load_segmenter(ckpt_path, device)
    chosen = checkpoint_protocol(protocol, config, ckpt_path)
    net_size_hw = parse_size_wh(size)[::-1] if size is not None else config.target_size_hw
    meter = None
    if tc:
        meter = TcMeter(load_estimator(flow, checkpoint=flow_ckpt, device=str(device)), chosen, tc_protocol)
    codecs = AUTO_CODECS if video_codec == "auto" else (video_codec,)
    write_png(out / LEGEND_NAME, class_legend(chosen, LEGEND_WIDTH))
    result = predict_footage(
        model,
        footage,
        chosen,
        out,
        net_size_hw,
        device,
        batch_size,
        amp_dtype,
        meter,
        codecs,
        title=f"prediction: {ckpt_path.name}",
    )
    summary = {
        "checkpoint": str(ckpt_path),
        "iteration": iteration,
        "protocol": chosen.name,
        "input": str(input_path),
        "kind": footage.kind,
        "size_wh": [footage.size_hw[1], footage.size_hw[0]],
        "network_size_wh": [net_size_hw[1], net_size_hw[0]],
        "fps": footage.fps,
        "device": str(device),
        "amp": amp,
        **result,
        "tc": meter.score() if meter else None,
        "tc_protocol": tc_protocol if meter else None,
        "tc_pairs": meter.pairs if meter else None,
        "flow": flow if meter else None,
    }
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(_summary_line(summary, out))


def _summary_line(summary: dict, out: Path) -> str:
    video = ""
    if summary["video"]:
        video = f", {Path(summary['video']).name} ({summary['video_codec']})"
        if summary["video_codec"] not in BROWSER_CODECS:
            video += f": browsers do not play {summary['video_codec']}; use {OFFLINE_PLAYERS}"
    tc = ""
    if summary["tc"] is not None:
        tc = f"; TC {summary['tc']:.2f} over {summary['tc_pairs']} pairs ({summary['flow']})"
    return (
        f"{summary['frames']} frames, {summary['seconds_per_frame']:.3f} s/frame "
        f"(network {summary['network_seconds_per_frame']:.3f} s){tc}; wrote {out}/pred/{video}"
    )


main = one_line_errors(cli)


if __name__ == "__main__":
    main()
