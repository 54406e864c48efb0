"""`i2vda-prep` as users type it: -h, choice options listed by --help and refused in one line, a portrait --size,
and where `inspect` puts its sheet and what the sheet shows."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_train_loop import SOURCE, TARGET, make_stores

from pipeline.cli import cli, main
from pipeline.errors import EXIT_BAD_INPUT
from pipeline.flow.viz import KEY_WHEEL, flow_legend
from pipeline.inspect_store import TILE_WIDTH, contact_sheet, sheet_samples, spread_indices
from pipeline.shards import read_samples
from pipeline.sources import TITLE_HEIGHT, get_protocol

COMMANDS = ["flows", "source", "val", "inspect", "demo-world"]


def _run(args, capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `i2vda-prep ARGS` run in this process."""
    try:
        code = main(args) or 0
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["group", *COMMANDS])
def test_dash_h_prints_the_usage_as_help_does(command, capsys):
    if command:  # a context made without the group first (as tests/test_demo.py parses): -h must survive it
        cli.get_command(None, command[0]).make_context(command[0], ["--help"], resilient_parsing=True)
    code, out, err = _run([*command, "-h"], capsys)
    assert code == 0 and err == ""
    assert out.startswith(f"Usage: i2vda-prep {' '.join(command)}".rstrip()) and "-h, --help" in out
    assert _run([*command, "--help"], capsys)[1] == out


@pytest.mark.parametrize(
    "command, listed",
    [
        (
            "flows",
            [
                "--pairs [all|annotated]",
                "--frames [stored|compressed]",
                "--flow [dis|flownet2]",
                "--dis-preset [ultrafast|fast|medium|fine]",
                "--on-error [fail|skip]",
                "--src [cityscapes_seq]",
            ],
        ),
        (
            "source",
            [
                "--src [viper|synthia|cityscapes]",
                "--protocol [viper15|synthia11|synthia12]",
                "--on-error [fail|skip]",
                "--frames [stored|compressed]",
            ],
        ),
        ("val", ["--flow [dis|flownet2]", "--dis-preset [ultrafast|fast|medium|fine]", "--frames [stored|compressed]"]),
    ],
)
def test_help_lists_the_values_of_every_choice_option(command, listed, capsys):
    out = " ".join(_run([command, "--help"], capsys)[1].split())  # click wraps long option names onto two lines
    for text in listed:
        assert text in out, text


@pytest.mark.parametrize(
    "args, line",
    [
        (["flows", "--pairs", "every"], "error: --pairs every: expected one of all, annotated"),
        (["flows", "--flow", "raft"], "error: --flow raft: expected one of dis, flownet2"),
        (["val", "--dis-preset", "slow"], "error: --dis-preset slow: expected one of ultrafast, fast, medium, fine"),
        (["source", "--src", "gta"], "error: --src gta: expected one of viper, synthia, cityscapes"),
        (
            ["source", "--src", "viper", "--protocol", "viper19"],
            "error: --protocol viper19: expected one of viper15, synthia11, synthia12",
        ),
        (["flows", "--frames", "jpeg"], "error: --frames jpeg: expected one of stored, compressed"),
        (["flows", "--on-error", "ignore"], "error: --on-error ignore: expected one of fail, skip"),
    ],
)
def test_a_bad_choice_is_one_line_and_exit_2(args, line, tmp_path, capsys):
    code, out, err = _run([*args, "--root", str(tmp_path)], capsys)
    assert code == EXIT_BAD_INPUT and err.splitlines() == [line] and out == ""


def test_a_usage_error_stays_one_line(capsys):
    code, _, err = _run(["flows", "--bogus"], capsys)
    assert code == EXIT_BAD_INPUT and len(err.splitlines()) == 1 and err.startswith("error: No such option")


def test_a_portrait_size_is_warned_about_and_kept(tmp_path, capsys):
    root = tmp_path / "nowhere"  # the run stops at --root, after the size was read
    code, _, err = _run(["flows", "--root", str(root), "--size", "128x256"], capsys)
    assert code == EXIT_BAD_INPUT
    assert err.splitlines() == [
        "warning: --size 128x256 is WIDTHxHEIGHT: 128 wide, 256 high (portrait); Cityscapes is 1024x512",
        f"error: --root {root}: no such directory",
    ]
    code, _, err = _run(["source", "--src", "viper", "--root", str(root), "--size", "512x896"], capsys)
    assert err.splitlines()[0].endswith("(portrait); VIPER is 896x512")
    for size in ("256x128", "128x128"):  # landscape and square: no warning
        assert "warning" not in _run(["flows", "--root", str(root), "--size", size], capsys)[2]


@pytest.fixture
def stores(tmp_path) -> Path:
    """A target store of 3 clips (one per shard, keys t<clip>_<j>) and a viper15 source store, 4 samples each."""
    return make_stores(tmp_path / "stores", shards=3, per_shard=4)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_inspect_writes_the_sheet_in_the_current_folder_never_into_the_store(stores, tmp_path, monkeypatch, capsys):
    before = _files(stores / TARGET)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, out, err = _run(["inspect", str(stores / TARGET)], capsys)
    assert code == 0, err
    assert (here / f"{TARGET}_sheet.png").is_file() and f"sheet      {TARGET}_sheet.png" in out
    code, out, err = _run(["inspect", str(stores / TARGET), "--sheet", str(tmp_path / "pics" / "t.png")], capsys)
    assert code == 0 and (tmp_path / "pics" / "t.png").is_file()
    code, out, err = _run(["inspect", str(stores / TARGET), "--sheet", str(stores / TARGET / "sheet.png")], capsys)
    assert code == EXIT_BAD_INPUT and len(err.splitlines()) == 1 and "inside the store" in err
    assert _files(stores / TARGET) == before


def test_the_sheet_spreads_its_rows_over_the_clips_with_titles_and_a_legend(stores, tmp_path):
    keys = [s["__key__"] for s in sheet_samples(stores / TARGET, rows=4)]
    assert keys == ["t0_1", "t1_0", "t1_3", "t2_2"]  # the middle of 4 equal parts of 12 samples sorted by key
    assert len({k.split("_")[0] for k in keys}) == 3  # all three clips, not 4 consecutive pairs of the first
    assert spread_indices(12, 4) == [1, 4, 7, 10] and spread_indices(2, 4) == [0, 1]
    sheet = contact_sheet(stores / TARGET, rows=4)
    first = next(s for s in read_samples(stores / TARGET) if s["__key__"] == keys[0])
    tile_h = round(first["frame0"].shape[0] * TILE_WIDTH / first["frame0"].shape[1])
    grid_h = TITLE_HEIGHT + 4 * tile_h
    assert sheet.shape[1:] == (4 * TILE_WIDTH, 3) and sheet.shape[0] > grid_h  # titles, 4 rows, the flow key
    key = sheet[grid_h:]
    wheel = flow_legend(KEY_WHEEL)
    assert any(np.array_equal(key[y : y + KEY_WHEEL, x : x + KEY_WHEEL], wheel) for y in range(9) for x in range(9))
    assert (key < 128).any()  # and its explanation in dark text
    titles = sheet[:TITLE_HEIGHT]
    assert (titles < 128).any() and (titles == 255).mean() > 0.8  # dark text on white
    expected = cv2.resize(first["frame0"], (TILE_WIDTH, tile_h), interpolation=cv2.INTER_AREA)
    assert np.array_equal(sheet[TITLE_HEIGHT : TITLE_HEIGHT + tile_h, :TILE_WIDTH], expected)
    source = contact_sheet(stores / SOURCE, rows=2)
    legend = source[TITLE_HEIGHT + 2 * tile_h :]
    assert source.shape[1] == 2 * TILE_WIDTH and legend.shape[0] > 0
    swatches = {tuple(int(v) for v in c) for c in legend.reshape(-1, 3)}
    shown = set(np.unique(np.concatenate([s["label"].ravel() for s in sheet_samples(stores / SOURCE, rows=2)])))
    palette = get_protocol("viper15").palette
    assert {tuple(palette[i]) for i in range(15) if i in shown} <= swatches  # the classes the labels show ...
    assert not {tuple(palette[i]) for i in range(15) if i not in shown} & swatches  # ... and no other
