"""`i2vda-predict`: a trained checkpoint on any video, folder of frames or image.

Writes, under `--out DIR`: `pred/<name>_pred.png` (train ids, grey: `i2vda-eval --pred-dir` scores them), for a
video or a frame sequence a video of frame | overlay at the input's frame rate, `legend.png` and `predict.json`;
`--color` and `--overlay` add `pred/<name>_pred_color.png` and `pred/<name>_overlay.png`. The network, its
normalisation and the logits' upsampling are those of `i2vda-eval` (`trainer/evaluation/predict.py`); the loop and
the files are `trainer/evaluation/predict_footage.py`. See docs/EVALUATION.md ("Predict on your own footage").
Everything the command line says is checked before anything is created under `--out`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from pipeline.errors import InputError, one_line_errors
from pipeline.flow import ESTIMATORS, load_estimator
from pipeline.sources import Protocol, class_legend, get_protocol, parse_size_wh, protocol_names, write_png
from trainer.evaluation.evaluate import TC_PROTOCOLS
from trainer.evaluation.footage import open_footage
from trainer.evaluation.predict import DEFAULT_BATCH_SIZE, last_checkpoint, resolve_device
from trainer.evaluation.predict_footage import AUTO_CODECS, Outputs, TcMeter, aspect_warning, predict_footage
from trainer.evaluation.visualize import BROWSER_CODECS, OFFLINE_PLAYERS, VIDEO_CODECS
from trainer.training.checkpoint import load_segmenter
from trainer.training.config import AMP_DTYPES, TrainConfig

SUMMARY_NAME = "predict.json"
LEGEND_NAME = "legend.png"
LEGEND_WIDTH = 640


def refuse_file_as_out(path: Path) -> None:
    """`--out`: a folder, created when missing (after every check); a file there is refused."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: is a file, expected a folder (it is created when missing)")


def create_output_folder(path: Path, with_pred: bool) -> Path:
    """Create `--out` (and `--out/pred/` where PNGs go)."""
    try:
        (path / "pred" if with_pred else path).mkdir(parents=True, exist_ok=True)
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
    "--start",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the first frame to predict (0-based; frames keep their index in their names).",
)
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Predict one frame out of EVERY (the video then plays at the input's rate / EVERY).",
)
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    help="Predict at most this many frames: try a long video quickly [default: to the end].",
)
@click.option(
    "--ids/--no-ids",
    default=True,
    show_default=True,
    help="pred/<name>_pred.png: train ids, 8-bit grey, for i2vda-eval --pred-dir (on a 768x576 clip about 2 ms "
    "and 13 KB a frame; costs measured by bench/bench_predict.py on 2 busy CPU cores).",
)
@click.option(
    "--color",
    is_flag=True,
    help="Also pred/<name>_pred_color.png: the ids in Cityscapes colours (about 25 ms and 25 KB a 768x576 frame).",
)
@click.option(
    "--overlay",
    is_flag=True,
    help="Also pred/<name>_overlay.png: the colours over the frame with a class legend (the heaviest output: "
    "about 30-60 ms and 0.5 MB a 768x576 frame, 30 times the input's bytes).",
)
@click.option(
    "--video/--no-video",
    default=True,
    show_default=True,
    help="For a video or frame sequence, a video of input | overlay with the legend (with mp4v about 40 ms and "
    "40 KB a 768x576 frame).",
)
@click.option(
    "--video-codec",
    type=click.Choice(["auto", *VIDEO_CODECS]),
    default="auto",
    show_default=True,
    help="auto: H.264 (.mp4) where this OpenCV build writes it, else mp4v (.mp4: VLC, mpv, ffplay), both fast. "
    "vp9 (.webm) plays in browsers but encodes about 20 times slower than mp4v (about 1 s a 768x576 frame).",
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
def cli(ckpt, input_path, out, protocol, size, batch_size, device, amp, fps, **options):
    """Segment a video, a folder of frames or an image with a trained i2vda checkpoint.

    By default it writes the train ids of every frame and, for a video or a frame sequence, a video of input |
    overlay (mp4v where OpenCV has no H.264 encoder); --color and --overlay add PNGs, --video-codec vp9 a video
    browsers play, each at the cost its help gives. Outputs are at the input's resolution.
    """
    net_size_hw = parse_size_wh(size)[::-1] if size is not None else None
    refuse_file_as_out(out)
    footage = open_footage(input_path, fps).select(options["start"], options["every"], options["max_frames"])
    tc, flow, flow_ckpt = options["tc"], options["flow"], options["flow_ckpt"]
    if tc and not footage.is_sequence:
        raise InputError(f"--tc: {input_path} is a single frame; TC needs a video or a folder of frames")
    if tc:  # a bad --flow or a missing weights file is refused before the network is loaded
        ESTIMATORS.get(flow).check_weights(flow_ckpt)
    device = resolve_device(device)
    amp_dtype = autocast_dtype(amp, device)
    ckpt_path = last_checkpoint(ckpt)
    model, config, iteration = load_segmenter(ckpt_path, device)
    chosen = checkpoint_protocol(protocol, config, ckpt_path)
    net_size_hw = net_size_hw or tuple(config.target_size_hw)
    meter = None
    if tc:
        estimator = load_estimator(flow, checkpoint=flow_ckpt, device=str(device))
        meter = TcMeter(estimator, chosen, options["tc_protocol"])
    codec = options["video_codec"]
    outputs = Outputs(
        ids=options["ids"],
        color=options["color"],
        overlay=options["overlay"],
        video=options["video"],
        codecs=AUTO_CODECS if codec == "auto" else (codec,),
    )
    warning = aspect_warning(footage.size_hw, net_size_hw)
    if warning:
        click.echo(warning, err=True)
    create_output_folder(out, with_pred=bool(outputs.pngs))
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
        outputs,
        title=f"prediction: {ckpt_path.name}",
    )
    summary = {
        "checkpoint": str(ckpt_path),
        "iteration": iteration,
        "protocol": chosen.name,
        "input": str(input_path),
        "input_bytes": footage.bytes,
        "kind": footage.kind,
        "size_wh": [footage.size_hw[1], footage.size_hw[0]],
        "network_size_wh": [net_size_hw[1], net_size_hw[0]],
        "aspect_stretched": warning is not None,
        "fps": footage.fps,
        "start": footage.start,
        "every": footage.every,
        "max_frames": footage.max_frames,
        "outputs": [*outputs.pngs, *(["video"] if result["video"] else [])],
        "device": str(device),
        "amp": amp,
        **result,
        "tc": meter.score() if meter else None,
        "tc_protocol": options["tc_protocol"] if meter else None,
        "tc_pairs": meter.pairs if meter else None,
        "flow": options["flow"] if meter else None,
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
    pngs = [kind for kind in summary["outputs"] if kind != "video"]
    wrote = f"{out}/pred/ ({', '.join(pngs)})" if pngs else f"{out}/"
    return (
        f"{summary['frames']} frames, {summary['seconds_per_frame']:.3f} s/frame "
        f"(network {summary['network_seconds_per_frame']:.3f} s){tc}; wrote {wrote}{video}"
    )


main = one_line_errors(cli)


if __name__ == "__main__":
    main()
