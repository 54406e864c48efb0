"""`i2vda-train`: train M by Algorithm 1 (or a baseline) on the stores; see docs/TRAINING.md.

Settings come from the TrainConfig defaults (the paper's), then, when `--resume` continues a run that has a
checkpoint, that run's own RUN/config.json, then `--config FILE` (JSON or YAML, field names as in RUN/config.json),
then the flags given on the command line: every setting has a flag, `none` clears an optional one (`--init none`: no
init file), and each on/off flag has its opposite (`--no-tc` / `--with-tc`). `i2vda-train --out RUN --resume latest`
alone continues RUN as it was started; a flag given explicitly wins, and one that a resume may not change (outside
RESUMABLE_FIELDS) and that differs from the checkpoint's is refused with one line. `--check` resolves the settings,
checks every store and file the run needs and reports every problem, without training. Under
`torchrun --nproc_per_node N` it trains with DDP.

Exit status: 0 done, 2 bad input (one `error:` line), 75 stopped by SIGTERM or SIGUSR1 after writing a checkpoint,
130 stopped by Ctrl-C (`trainer/training/preemption.py`); each stop prints the line to resume with.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from pipeline.errors import InputError, one_line_errors
from pipeline.sources import parse_size_wh
from trainer.models import SEGMENTERS
from trainer.temporal import OCCLUSION_GRIDS, PL_SELECTIONS
from trainer.training.checkpoint import latest_checkpoint, resolve_resume
from trainer.training.config import (
    AMP_MODES,
    BN_STATS_MODES,
    COPY_RULES,
    DEVICES,
    INIT_FORMATS,
    METHODS,
    ONLINE_FLOWS,
    PROXY_BN_MODES,
    RANDOM_INIT,
    TrainConfig,
    read_config_file,
)
from trainer.training.loop import CONFIG_NAME, train
from trainer.training.preemption import EXIT_INTERRUPTED, Preempted, resume_command
from trainer.training.preflight import check_run, report

# Every flag's default is the TrainConfig field's (the paper's where it gives one).
D = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
# A flag given this word clears its optional setting, a --config file's value included (`--init none`: no init file).
NONE_WORD = "none"
# `none` clears these settings; `--init none` is kept as RANDOM_INIT: random weights asked for on purpose, which the
# ResNets need to start without an init file (trainer/training/config.py, require_init).
CLEARABLE = ("protocol", "flow_estimator", "flow_ckpt", "proxy_ckpt", "val")


def _choice(values) -> click.Choice:
    return click.Choice(list(values))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option("--out", required=True, help="Run folder RUN/: config.json, log.jsonl, checkpoints/, tensorboard/.")
@click.option(
    "--shards",
    default=D["shards"],
    show_default=True,
    help="Folder holding the stores, or its URL, streamed: http(s)://HOST/stores/ or 'pipe:COMMAND {}' writing the "
    "file at {} to stdout, e.g. 'pipe:aws s3 cp s3://BUCKET/stores/{} -' (docs/CLUSTER.md).",
)
@click.option("--source", default=D["source"], show_default=True, help="Source store name (SHARDS/SOURCE/).")
@click.option("--target", default=D["target"], show_default=True, help="Target pair store name (SHARDS/TARGET/).")
@click.option("--config", "config_file", default=None, help="JSON/YAML file of settings; flags given here win.")
@click.option(
    "--method",
    type=_choice(METHODS),
    default=D["method"],
    show_default=True,
    help="i2vda = Algorithm 1; adv_only = Table 3's baseline (L_seg + 0.01 L_adv on P0); source_only.",
)
@click.option(
    "--arch",
    type=_choice(SEGMENTERS),
    default=D["arch"],
    show_default=True,
    help="Segmenter M: DeepLab-v2 ResNet-101 (paper), ResNet-50, or a tiny one for demos.",
)
@click.option(
    "--disc-width",
    type=int,
    default=D["disc_width"],
    show_default=True,
    help="Channels of D's first conv (doubling per layer): 64 as AdaptSegNet; smaller for CPU demos.",
)
@click.option(
    "--protocol",
    default=None,
    help="Class protocol (viper15, synthia11, synthia12); default: the source store's, and a different one is refused "
    "(none: the store's, whatever a --config says).",
)
@click.option(
    "--target-size",
    default=None,
    help="WxH the target store must hold (paper 1024x512); default (or none): its own.",
)
@click.option(
    "--source-size",
    default=None,
    help="WxH the source store must hold (paper: VIPER 896x512, SYNTHIA 1280x768); default (or none): its own.",
)
@click.option("--max-iter", type=int, default=D["max_iter"], show_default=True, help="MAX_ITER; also the poly horizon.")
@click.option(
    "--batch-size",
    type=int,
    default=D["batch_size"],
    show_default=True,
    help="Source images and target pairs per rank (paper: 2 = 1 on each of 2 GPUs).",
)
@click.option("--lr", type=float, default=D["lr"], show_default=True, help="SGD learning rate of M's backbone.")
@click.option("--momentum", type=float, default=D["momentum"], show_default=True, help="SGD momentum.")
@click.option("--weight-decay", type=float, default=D["weight_decay"], show_default=True, help="SGD weight decay.")
@click.option(
    "--classifier-lr-mult",
    type=float,
    default=D["classifier_lr_mult"],
    show_default=True,
    help="lr factor of the ASPP classifier.",
)
@click.option("--lr-d", type=float, default=D["lr_d"], show_default=True, help="Adam learning rate of D.")
@click.option("--betas-d", type=float, nargs=2, default=D["betas_d"], show_default=True, help="Adam betas of D.")
@click.option("--poly-power", type=float, default=D["poly_power"], show_default=True, help="Poly decay exponent.")
@click.option("--lambda-adv", type=float, default=D["lambda_adv"], show_default=True, help="Weight of L_adv.")
@click.option(
    "--iter-copy",
    type=int,
    default=D["iter_copy"],
    show_default=True,
    help="ITER_COPY: iterations between copies M' <- M (Table 4).",
)
@click.option(
    "--iter-launch",
    type=int,
    default=D["iter_launch"],
    show_default=True,
    help="ITER_LAUNCH: L_tc from this iteration on (Table 4).",
)
@click.option(
    "--copy-rule",
    type=_choice(COPY_RULES),
    default=D["copy_rule"],
    show_default=True,
    help="When M' <- M: launch = at ITER_LAUNCH and every ITER_COPY iterations after it; modulo = whenever "
    "iteration % ITER_COPY == 0 (Algorithm 1's line 5 read literally; docs/TRAINING.md).",
)
@click.option("--eta", type=float, default=D["eta"], show_default=True, help="Occlusion threshold of Eq. 7, pixels.")
@click.option(
    "--delta",
    type=float,
    default=D["delta"],
    show_default=True,
    help="Entropy threshold of Eq. 8 (Table 5's best; the text says 0.8).",
)
@click.option("--alpha", type=float, default=D["alpha"], show_default=True, help="Blend of Eq. 3.")
@click.option(
    "--t",
    "t",
    default=None,
    help="Fixed t of Eq. 2 in [0, 1]; default (or random): U(0, 1) per iteration.",
)
@click.option(
    "--no-temporal-aug/--with-temporal-aug",
    default=False,
    help="It := I0 and F_1->t := F_1->0 (Table 3 ablation).",
)
@click.option("--no-tc/--with-tc", default=False, help="No L_tc and no proxy (Table 3 ablation).")
@click.option(
    "--proxy-ckpt",
    default=None,
    help="A fixed proxy M' loaded from one of our checkpoints and never copied from M (a teacher, e.g. an "
    "oracle to test the L_tc path); default (or none): M' <- M every --iter-copy iterations.",
)
@click.option(
    "--proxy-bn",
    type=_choice(PROXY_BN_MODES),
    default=D["proxy_bn"],
    show_default=True,
    help="BatchNorm statistics of M': running = M's, eval mode (the paper); batch = its own I1 batch's; "
    "target = re-estimated on target I1 frames after each copy (beyond the paper, docs/TRAINING.md).",
)
@click.option(
    "--bn-stats",
    type=_choice(BN_STATS_MODES),
    default=D["bn_stats"],
    show_default=True,
    help="Which of M's forward calls feed its BN running statistics (used by eval and an eval-mode M'): all, "
    "or target frames only (DSBN's target branch; beyond the paper).",
)
@click.option(
    "--pl-select",
    type=_choice(PL_SELECTIONS),
    default=D["pl_select"],
    show_default=True,
    help="Eq. 8: entropy < delta (the paper), or class-balanced: only each class's --pl-portion most "
    "confident predictions among those (CBST; beyond the paper).",
)
@click.option(
    "--pl-portion",
    type=float,
    default=D["pl_portion"],
    show_default=True,
    help="With --pl-select class-balanced: share of each class's predicted pixels kept at most.",
)
@click.option("--no-occlusion/--with-occlusion", default=False, help="Drop O from Eq. 8 (Table 3 ablation).")
@click.option("--no-entropy/--with-entropy", default=False, help="Drop E from Eq. 8 (Table 3 ablation).")
@click.option(
    "--occlusion-grid",
    type=_choice(OCCLUSION_GRIDS),
    default=D["occlusion_grid"],
    show_default=True,
    help="Grid of the Eq. 7 check: i1 (where PL lives) or i0 (the paper's literal formula).",
)
@click.option(
    "--online-flow",
    type=_choice(ONLINE_FLOWS),
    default=D["online_flow"],
    show_default=True,
    help="F_1->t: the target store's estimator on (I1, It) (Eq. 5), or linear (1 - t) F_1->0.",
)
@click.option(
    "--flow-estimator",
    default=None,
    help="Estimator the target store must have used; default (or none): its own.",
)
@click.option(
    "--flow-ckpt",
    default=None,
    help="FlowNet2_checkpoint.pth.tar for the online flow of a FlowNet2 store (none: no file).",
)
@click.option(
    "--init",
    default=None,
    help="Initial weights of M: DeepLab_resnet_pretrained_imagenet.pth, a torchvision ResNet, or one of our "
    "checkpoints (--init-format segmenter, e.g. a source-only warm-up); 'none' = random weights on purpose "
    "(deeplab_r101/r50 refuse to start without --init; overrides a --config file's init).",
)
@click.option(
    "--init-format",
    type=_choice(INIT_FORMATS),
    default=D["init_format"],
    show_default=True,
    help="Format of --init: the DeepLab-v2 Caffe conversion, a torchvision ResNet state dict, or an "
    "i2vda checkpoint (whole M, strict).",
)
@click.option("--seed", type=int, default=D["seed"], show_default=True, help="Seed of weights, data order and t.")
@click.option(
    "--checkpoint-interval",
    type=int,
    default=D["checkpoint_interval"],
    show_default=True,
    help="Iterations between checkpoints.",
)
@click.option(
    "--keep-checkpoints",
    type=int,
    default=D["keep_checkpoints"],
    show_default=True,
    help="Keep only the newest N checkpoints (and always the best by --val); 0 = keep every one, which "
    "i2vda-eval --ckpt RUN scores to report the best.",
)
@click.option(
    "--log-interval", type=int, default=D["log_interval"], show_default=True, help="Iterations between log.jsonl lines."
)
@click.option(
    "--image-interval",
    type=int,
    default=D["image_interval"],
    show_default=True,
    help="Iterations between TensorBoard pictures.",
)
@click.option(
    "--val",
    default=None,
    help="A val store (i2vda-prep val): M's mIoU and per-class IoU on it, "
    "without TC, every --val-interval iterations and at the end, into log.jsonl and TensorBoard (rank 0); "
    "none: no val store.",
)
@click.option(
    "--val-interval",
    type=int,
    default=D["val_interval"],
    show_default=True,
    help="Iterations between scorings on the --val store; 0 = at the end only.",
)
@click.option("--device", type=_choice(DEVICES), default=D["device"], show_default=True, help="auto = CUDA if any.")
@click.option(
    "--amp",
    type=_choice(AMP_MODES),
    default=D["amp"],
    show_default=True,
    help="Autocast precision on CUDA (bf16 on Ampere and later).",
)
@click.option("--channels-last/--no-channels-last", default=False, help="channels_last memory format on CUDA.")
@click.option(
    "--num-workers",
    type=int,
    default=D["num_workers"],
    show_default=True,
    help="DataLoader workers decoding the shards (0 = in the training process).",
)
@click.option(
    "--shuffle-buffer",
    type=int,
    default=D["shuffle_buffer"],
    show_default=True,
    help="Samples in the shuffle buffer of each stream.",
)
@click.option(
    "--block-iters",
    type=int,
    default=D["block_iters"],
    show_default=True,
    help="Iterations per reseeded data block (bounds the skip on resume).",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="latest",
    default=None,
    help="Continue RUN from its newest checkpoint (bare --resume or latest) or from the given checkpoint file, with "
    "RUN/config.json's settings (flags given here override those a resume may change).",
)
@click.option(
    "--resume-other-stores/--no-resume-other-stores",
    default=False,
    help="With --resume: continue even if the stores' content differs from the checkpoint's (e.g. rebuilt "
    "with another estimator preset); a warning names what differs.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Dry run: resolve the settings, open every store, read every file the run needs (init, FlowNet2 "
    "weights, the stores' shards, their estimator, protocol and sizes against the settings), print the resolved "
    "settings and every problem found; exit 0 (none) or 2, train nothing.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_file: str | None,
    target_size: str | None,
    source_size: str | None,
    t: str | None,
    check: bool,
    **options,
):
    """Train a segmenter on source images and target video pairs: I2VDA (ECCV 2022) Algorithm 1 or a baseline."""
    problems: list[str] | None = [] if check else None
    values = _run_settings(options["out"], options["resume"])
    values |= read_config_file(config_file, problems) if config_file else {}
    options["t"] = None if t is None or t.lower() in ("random", NONE_WORD) else _number("--t", t)
    for name in CLEARABLE:
        if isinstance(options[name], str) and options[name].lower() == NONE_WORD:
            options[name] = None
    if isinstance(options["init"], str) and options["init"].lower() == NONE_WORD:
        options["init"] = RANDOM_INIT
    for name, value in options.items():
        if name not in values or ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            values[name] = value
    for field, value, flag in (
        ("target_size_hw", target_size, "--target-size"),
        ("source_size_hw", source_size, "--source-size"),
    ):
        if value is not None:
            values[field] = None if value.lower() == NONE_WORD else parse_size_wh(value, flag)[::-1]  # (H, W)
    where = f"--config {config_file}" if config_file else "flags"
    if check:
        sys.exit(report(*check_run(values, where, problems)))
    config = TrainConfig.from_dict(values, where=where)
    try:
        result = train(config)
    except Preempted as stop:  # SIGTERM, SIGUSR1 or a first Ctrl-C: the checkpoint of the iteration is written
        if stop.checkpoint is not None:  # rank 0
            click.echo(stop.line(), err=True)
        raise SystemExit(stop.exit_status) from None
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started: click would print "Aborted!"
        if os.environ.get("RANK", "0") == "0":
            newest = latest_checkpoint(config.out)
            last = f"the newest checkpoint is {newest}" if newest else "no checkpoint was written yet"
            click.echo(f"interrupted; {last}; resume with: {resume_command(config.out)}", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if result["checkpoint"] is not None:  # rank 0 (the others save nothing)
        click.echo(f"{result['iterations']} iterations done; last checkpoint {result['checkpoint']}")


def _run_settings(out: str, resume: str | None) -> dict:
    """The settings of RUN/config.json when `--resume` continues a run that has a checkpoint; else none."""
    saved = Path(out) / CONFIG_NAME
    if resume is None or resolve_resume(resume, out) is None or not saved.is_file():
        return {}
    values = read_config_file(saved)
    values.pop("num_classes", None)  # derived from the protocol, not a setting
    return values


def _number(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{flag} {text}: expected a number in [0, 1] or random") from None


main = one_line_errors(cli)

if __name__ == "__main__":
    main()
