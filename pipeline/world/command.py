"""`i2vda-prep demo-world`: write the built-in demo world (registered by `pipeline/cli.py`)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.sources.images import parse_size_wh, size_text
from pipeline.world.world import SHEET_NAME, SUMMARY_NAME, WorldConfig, write_world

_DEFAULT = WorldConfig()


@click.command("demo-world", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="folder to write")
@click.option("--seed", type=int, default=0, show_default=True, help="same seed, same bytes")
@click.option("--train-flow", is_flag=True, help="also write ground-truth flow for the train snippets")
@click.option("--overwrite", is_flag=True, help="replace a world already in --out")
@click.option(
    "--target-size", default=size_text(_DEFAULT.target_size_wh), show_default=True, help="Cityscapes frames, WxH"
)
@click.option("--viper-size", default=size_text(_DEFAULT.viper_size_wh), show_default=True, help="VIPER frames, WxH")
@click.option(
    "--synthia-size", default=size_text(_DEFAULT.synthia_size_wh), show_default=True, help="SYNTHIA frames, WxH"
)
@click.option("--train-snippets", type=int, default=_DEFAULT.train_snippets, show_default=True)
@click.option("--val-snippets", type=int, default=_DEFAULT.val_snippets, show_default=True)
@click.option("--snippet-frames", type=int, default=_DEFAULT.snippet_frames, show_default=True)
@click.option(
    "--annotated-index",
    type=int,
    default=_DEFAULT.annotated_index,
    show_default=True,
    help="0-based index of the annotated frame within a snippet",
)
@click.option("--viper-sequences", type=int, default=_DEFAULT.viper_sequences, show_default=True)
@click.option(
    "--viper-frames",
    type=int,
    default=_DEFAULT.viper_frames,
    show_default=True,
    help="labelled VIPER frames, over all sequences",
)
@click.option("--synthia-frames", type=int, default=_DEFAULT.synthia_frames, show_default=True)
@click.option(
    "--style-gap",
    type=float,
    default=_DEFAULT.style_gap,
    show_default=True,
    help="0: the target looks like the sources; 1: the full camera look",
)
@click.option(
    "--colour-gap",
    type=float,
    default=None,
    help="how far surface colours move to the camera look [default: --style-gap]",
)
def demo_world(
    out,
    seed,
    train_flow,
    overwrite,
    target_size,
    viper_size,
    synthia_size,
    train_snippets,
    val_snippets,
    snippet_frames,
    annotated_index,
    viper_sequences,
    viper_frames,
    synthia_frames,
    style_gap,
    colour_gap,
) -> None:
    """Render procedural street scenes as Cityscapes-Seq (target), VIPER and SYNTHIA-SEQS (sources)."""
    config = WorldConfig(
        target_size_wh=parse_size_wh(target_size, "--target-size"),
        viper_size_wh=parse_size_wh(viper_size, "--viper-size"),
        synthia_size_wh=parse_size_wh(synthia_size, "--synthia-size"),
        train_snippets=train_snippets,
        val_snippets=val_snippets,
        snippet_frames=snippet_frames,
        annotated_index=annotated_index,
        viper_sequences=viper_sequences,
        viper_frames=viper_frames,
        synthia_frames=synthia_frames,
        style_gap=style_gap,
        colour_gap=colour_gap,
        train_flow=train_flow,
    )
    summary = write_world(out, seed, config, overwrite=overwrite)
    counts = summary["counts"]
    click.echo(f"world      {out} (seed {seed}, {summary['seconds']} s)")
    click.echo(
        f"cityscapes {counts['target_frames']} frames, {counts['target_labels']} labels, "
        f"{counts['target_flows']} ground-truth flows"
    )
    click.echo(f"viper      {counts['viper_frames']} labelled frames")
    click.echo(f"synthia    {counts['synthia_frames']} frames")
    click.echo(f"summary    {out / SUMMARY_NAME}, picture {out / SHEET_NAME}")
