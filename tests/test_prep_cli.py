"""`i2vda-prep` as users type it: -h, choice options listed by --help and refused in one line, a portrait --size."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.errors import EXIT_BAD_INPUT

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
    code, out, err = _run([*command, "-h"], capsys)
    assert code == 0 and err == ""
    assert out.startswith(f"Usage: i2vda-prep {' '.join(command)}".rstrip()) and "-h, --help" in out
    assert _run([*command, "--help"], capsys)[1] == out


@pytest.mark.parametrize("command, listed", [
    ("flows", ["--pairs [all|annotated]", "--frames [stored|compressed]", "--flow [dis|flownet2]",
               "--dis-preset [ultrafast|fast|medium|fine]", "--on-error [fail|skip]", "--src [cityscapes_seq]"]),
    ("source", ["--src [viper|synthia|cityscapes]", "--protocol [viper15|synthia11|synthia12]",
                "--on-error [fail|skip]", "--frames [stored|compressed]"]),
    ("val", ["--flow [dis|flownet2]", "--dis-preset [ultrafast|fast|medium|fine]", "--frames [stored|compressed]"]),
])  # fmt: skip
def test_help_lists_the_values_of_every_choice_option(command, listed, capsys):
    out = " ".join(_run([command, "--help"], capsys)[1].split())  # click wraps long option names onto two lines
    for text in listed:
        assert text in out, text


@pytest.mark.parametrize("args, line", [
    (["flows", "--pairs", "every"], "error: --pairs every: expected one of all, annotated"),
    (["flows", "--flow", "raft"], "error: --flow raft: expected one of dis, flownet2"),
    (["val", "--dis-preset", "slow"], "error: --dis-preset slow: expected one of ultrafast, fast, medium, fine"),
    (["source", "--src", "gta"], "error: --src gta: expected one of viper, synthia, cityscapes"),
    (["source", "--src", "viper", "--protocol", "viper19"],
     "error: --protocol viper19: expected one of viper15, synthia11, synthia12"),
    (["flows", "--frames", "jpeg"], "error: --frames jpeg: expected one of stored, compressed"),
    (["flows", "--on-error", "ignore"], "error: --on-error ignore: expected one of fail, skip"),
])  # fmt: skip
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
        f"error: --root {root}: no such directory"]  # fmt: skip
    code, _, err = _run(["source", "--src", "viper", "--root", str(root), "--size", "512x896"], capsys)
    assert err.splitlines()[0].endswith("(portrait); VIPER is 896x512")
    for size in ("256x128", "128x128"):  # landscape and square: no warning
        assert "warning" not in _run(["flows", "--root", str(root), "--size", size], capsys)[2]
