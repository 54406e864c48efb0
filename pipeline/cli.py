"""`i2vda-prep`: build the stores the trainer reads (flows, source, val), inspect them, render the demo world."""

from __future__ import annotations

import click

from pipeline.errors import InputError, one_line_errors
from pipeline.flow.estimators import ESTIMATORS
from pipeline.plan import (
    DEFAULT_FLOW_BATCH_SIZE,
    DEFAULT_SAMPLES_PER_SHARD,
    DEFAULT_TC_WINDOW,
    MIN_SIZE_PX,
    ON_ERROR,
    TARGET_SIZE_WH,
    TARGET_STORE,
    VAL_STORE,
    PrepConfig,
)
from pipeline.shards import FRAME_MODES, SOURCE_KIND, TARGET_KIND, VAL_KIND
from pipeline.sources import SOURCES, default_protocol, get_protocol, parse_size_wh, protocol_names, size_text
from pipeline.sources.cityscapes import PAIR_MODES
from pipeline.world.command import demo_world

TARGET_SOURCES = (TARGET_STORE,)
TARGET_TITLE = "Cityscapes"
DEFAULT_OUT = "stores"
INTERRUPTED = 130  # the shell's exit status for a process stopped by SIGINT
# As every i2vda command: -h is --help. Each subcommand names it too: click keeps a command's help option from its
# first context, and one made without the group (a test parsing `flows` arguments alone) would not inherit it.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 120}


class Choice(click.Choice):
    """A set of values, listed by `--help` (`[all|annotated]`): a sequence, or a function returning the names a
    registry holds when the command runs. Any other value is our one line, `--pairs every: expected one of all,
    annotated`, rather than click's usage block."""

    def __init__(self, values):
        super().__init__(() if callable(values) else values)
        self._values = values if callable(values) else None

    @property
    def choices(self):
        return tuple(self._values()) if self._values is not None else self._fixed

    @choices.setter
    def choices(self, values):
        self._fixed = tuple(values)

    def convert(self, value, param, ctx):
        if value in self.choices:
            return value
        flag = param.opts[0] if param is not None else "value"
        raise InputError(f"{flag} {value}: expected one of {', '.join(map(str, self.choices))}")


def _size(text: str | None, store: str) -> tuple[int, int]:
    """--size WxH, or the paper's size for `store`; a portrait size (W < H: height first by habit?) is warned about,
    since every dataset here is landscape, and kept."""
    dataset = SOURCES.get(store) if store in SOURCES else None
    usual_wh = dataset.size_wh if dataset is not None else TARGET_SIZE_WH
    if text is None:
        return usual_wh
    w, h = parse_size_wh(text)
    if min(w, h) < MIN_SIZE_PX:
        raise InputError(f"--size {text}: each side must be at least {MIN_SIZE_PX} pixels (DIS's coarsest level)")
    if w < h:
        title = dataset.title if dataset is not None else TARGET_TITLE
        click.echo(
            f"warning: --size {text} is WIDTHxHEIGHT: {w} wide, {h} high (portrait); {title} is {size_text(usual_wh)}",
            err=True,
        )
    return w, h


def _estimator_flags():
    """(entry, option, click parameter name) of every registered estimator option that is a flag of flows/val."""
    return [
        (entry, option, f"{entry.name}_{option.name}")
        for entry in ESTIMATORS.entries()
        for option in entry.options
        if option.decides_flow
    ]


def _flow_options_of(flow: str, flags: dict) -> dict:
    """The options of estimator `flow` from the values of its flags (the other estimators' flags are ignored). The
    flags are made when this module is imported: an estimator registered later takes its options' defaults."""
    return {
        option.name: flags[param]
        for entry, option, param in _estimator_flags()
        if entry.name == flow and param in flags
    }


def _run_and_report(config: PrepConfig) -> None:
    from pipeline.job import run_shards, run_val, summary_lines  # Ray is imported only by the commands that use it

    manifest = run_val(config) if config.kind == VAL_KIND else run_shards(config)
    for line in summary_lines(manifest):
        click.echo(line)


def _flow_options(command):
    """--flow, --flow-ckpt, each registered estimator's options (--dis-preset), --workers, --batch-size, --on-error
    (shared by flows and val)."""
    entries = ESTIMATORS.entries()
    summaries = "; ".join(f"{e.name}: {e.summary}" for e in entries)
    weights = ", ".join(f"--flow {e.name} ({e.weights})" for e in entries if e.weights)
    estimator_flags = [
        click.option(
            entry.flag(option),
            param,
            type=Choice(option.choices) if option.choices else type(option.default),
            default=option.default,
            show_default=True,
            help=f"{option.help} (--flow {entry.name})",
        )
        for entry, option, param in _estimator_flags()
    ]
    gpu = ", ".join(e.name for e in entries if e.uses_gpu)
    for option in reversed(
        [
            click.option(
                "--flow",
                type=Choice(ESTIMATORS.names),
                default="dis",
                show_default=True,
                help=f"flow estimator ({summaries})",
            ),
            click.option(
                "--flow-ckpt", default=None, help=f"the weights file of an estimator that needs one: {weights}"
            ),
            *estimator_flags,
            click.option("--workers", type=int, default=None, help=f"actors; default one per GPU ({gpu}) or CPU"),
            click.option(
                "--batch-size",
                type=int,
                default=DEFAULT_FLOW_BATCH_SIZE,
                show_default=True,
                help="pairs per estimator call (both directions go in one call)",
            ),
            click.option(
                "--on-error",
                type=Choice(ON_ERROR),
                default="fail",
                show_default=True,
                help="fail: stop at the first bad file; skip: leave it out and list it in the manifest",
            ),
        ]
    ):
        command = option(command)
    return command


def _frames_option(default: str):
    """--frames: how the store writes its RGB PNGs (training stores favour decode speed, the val store disk)."""
    return click.option(
        "--frames",
        type=Choice(FRAME_MODES),
        default=default,
        show_default=True,
        help="RGB PNGs in the store: stored (no zlib: ~1.5 ms to decode a 1024x512 frame) or compressed (about half "
        "the bytes, ~6x slower to decode); see docs/PREP.md",
    )


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Offline side of i2vda: precompute flows and labels into WebDataset shards and HDF5 stores."""


@cli.command(context_settings=CONTEXT)
@click.option(
    "--src", type=Choice(TARGET_SOURCES), default=TARGET_STORE, show_default=True, help="target video dataset"
)
@click.option("--root", required=True, help="Cityscapes root (holds leftImg8bit_sequence/ and gtFine/)")
@click.option("--out", default=DEFAULT_OUT, show_default=True, help="stores folder; writes OUT/<src>/")
@click.option("--split", default="train", show_default=True)
@click.option(
    "--pairs",
    type=Choice(PAIR_MODES),
    default="all",
    show_default=True,
    help="all consecutive pairs, or annotated: those ending at a labelled frame (DA-VSN's)",
)
@click.option(
    "--size",
    metavar="WxH",
    default=None,
    help=f"width x height of the stored frames and flows [default: {size_text(TARGET_SIZE_WH)}]",
)
@click.option("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD, show_default=True)
@_frames_option("stored")
@_flow_options
def flows(
    src,
    root,
    out,
    split,
    pairs,
    size,
    samples_per_shard,
    frames,
    flow,
    flow_ckpt,
    workers,
    batch_size,
    on_error,
    **flags,
) -> None:
    """Frame pairs (I0, I1) with F0->1 and F1->0 into OUT/cityscapes_seq/*.tar (resumable)."""
    _run_and_report(
        PrepConfig(
            kind=TARGET_KIND,
            src=src,
            root=root,
            out=out,
            size_wh=_size(size, src),
            split=split,
            pairs=pairs,
            flow=flow,
            flow_ckpt=flow_ckpt,
            flow_options=_flow_options_of(flow, flags),
            samples_per_shard=samples_per_shard,
            workers=workers,
            batch_size=batch_size,
            on_error=on_error,
            frames=frames,
        )
    )


@cli.command(context_settings=CONTEXT)
@click.option(
    "--src",
    type=Choice(SOURCES.names),
    required=True,
    help="labelled dataset; cityscapes = its labelled train frames (the oracle)",
)
@click.option("--root", required=True, help="; ".join(f"{d.title}: {d.root}" for d in SOURCES.entries()))
@click.option("--out", default=DEFAULT_OUT, show_default=True, help="stores folder; writes OUT/<src>/")
@click.option(
    "--protocol",
    type=Choice(protocol_names),
    default=None,
    help="class protocol [default: the paper's for --src; "
    + ", ".join(d.name for d in SOURCES.entries() if not d.protocols)
    + " needs it]",
)
@click.option(
    "--size",
    metavar="WxH",
    default=None,
    help="width x height [default: " + ", ".join(f"{d.name} {size_text(d.size_wh)}" for d in SOURCES.entries()) + "]",
)
@click.option("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD, show_default=True)
@click.option("--workers", type=int, default=None, help="actors; default one per CPU")
@click.option("--on-error", type=Choice(ON_ERROR), default="fail", show_default=True, help="see `flows --help`")
@_frames_option("stored")
def source(src, root, out, protocol, size, samples_per_shard, workers, on_error, frames) -> None:
    """Labelled source images (resized) and protocol train-id labels into OUT/<src>/*.tar."""
    protocol = default_protocol(src) if protocol is None else get_protocol(protocol)
    if SOURCES.get(src).protocols and protocol.source != src:
        raise InputError(f"--protocol {protocol.name} is for {protocol.source}, not --src {src}")
    _run_and_report(
        PrepConfig(
            kind=SOURCE_KIND,
            src=src,
            root=root,
            out=out,
            size_wh=_size(size, src),
            protocol=protocol.name,
            flow=None,
            samples_per_shard=samples_per_shard,
            workers=workers,
            on_error=on_error,
            frames=frames,
        )
    )


@cli.command(context_settings=CONTEXT)
@click.option("--root", required=True, help="Cityscapes root (holds leftImg8bit_sequence/ and gtFine/)")
@click.option("--out", default=DEFAULT_OUT, show_default=True, help="stores folder; writes OUT/cityscapes_val/")
@click.option("--split", default="val", show_default=True)
@click.option(
    "--size",
    metavar="WxH",
    default=None,
    help=f"width x height of the frames and flows [default: {size_text(TARGET_SIZE_WH)}]",
)
@click.option(
    "--tc-window",
    type=int,
    default=DEFAULT_TC_WINDOW,
    show_default=True,
    help="frames per TC clip, ending at the annotated frame where the snippet allows (30: whole snippet)",
)
@_frames_option("compressed")  # read a few times per run, 30 frames per clip
@_flow_options
def val(root, out, split, size, tc_window, frames, flow, flow_ckpt, workers, batch_size, on_error, **flags) -> None:
    """Annotated val frames, labels of every protocol, TC clips and their flows into OUT/cityscapes_val/val.h5."""
    _run_and_report(
        PrepConfig(
            kind=VAL_KIND,
            src=VAL_STORE,
            root=root,
            out=out,
            size_wh=_size(size, VAL_STORE),
            split=split,
            flow=flow,
            flow_ckpt=flow_ckpt,
            flow_options=_flow_options_of(flow, flags),
            workers=workers,
            batch_size=batch_size,
            on_error=on_error,
            tc_window=tc_window,
            frames=frames,
        )
    )


@cli.command(context_settings=CONTEXT)
@click.argument("store")
@click.option(
    "--sheet",
    default=None,
    metavar="PATH",
    help="PNG contact sheet [default: ./<store name>_sheet.png; never inside the store]",
)
@click.option("--rows", type=int, default=4, show_default=True, help="samples on the sheet, spread over the store")
@click.option("--verify", is_flag=True, help="re-hash every file against the manifest's sha256")
def inspect(store, sheet, rows, verify) -> None:
    """Counts, sizes, estimator, codec and bytes of a store, and a sheet of samples (flows in colour)."""
    from pipeline.inspect_store import describe, mismatched_files, verify_line, write_sheet

    for line in describe(store):
        click.echo(line)
    bad = mismatched_files(store) if verify else []
    if verify:
        click.echo(verify_line(bad))
    if bad:  # the sheet would read the damaged files: stop here, non-zero
        raise InputError(
            f"{store}: {len(bad)} file(s) do not match the manifest's sha256 ({', '.join(bad)}); "
            f"rerun the store's i2vda-prep command to rebuild them"
        )
    click.echo(f"sheet      {write_sheet(store, sheet, rows)}")


cli.add_command(demo_world)


def _main(args=None) -> int | None:
    """Run the group; click's usage errors become one-line InputErrors like every other bad input."""
    try:
        code = cli.main(args=args, prog_name="i2vda-prep", standalone_mode=False)
    except click.exceptions.Abort:  # Ctrl-C: finished shards are kept
        click.echo("interrupted; rerun the same command to finish the store", err=True)
        raise SystemExit(INTERRUPTED) from None
    except click.ClickException as exc:
        raise InputError(exc.format_message()) from None
    return code if isinstance(code, int) else None


main = one_line_errors(_main)


if __name__ == "__main__":
    raise SystemExit(main())
