"""The docs match the code (tools/docs_check.py): the files, commands and flags they name exist, and the README's
tiny example prints what the README says, with the pictures it shows. And the check can fail: a doc written here
with a wrong path, flag, command, name, number or picture is reported line by line."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def docs_check(request):
    sys.path.insert(0, str(ROOT / "tools"))
    request.addfinalizer(lambda: sys.path.remove(str(ROOT / "tools")))
    return importlib.import_module("docs_check")


def test_the_docs_name_only_files_commands_and_flags_that_exist(docs_check):
    tally = docs_check.Tally()
    assert docs_check.static_problems(tally=tally) == []
    assert tally.paths > 100 and tally.commands > 100 and tally.flags > 300  # it looked at the docs


def test_the_readme_examples_print_what_the_readme_says(docs_check):
    """The tiny example of the README end to end (world, two preps, 20 iterations, predict; about a minute)."""
    assert docs_check.example_problems(docs=[ROOT / "README.md"]) == []


def test_a_wrong_path_flag_command_or_name_is_reported(docs_check, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See `trainer/evaluation/predict.py`, `trainer/temporal.py:99999` and [the guide](docs/NOWHERE.md).\n"
        "Run `i2vda-predict --ckpt run --input x.mp4 --out o --colour` or `i2vda-prep flow --root r`.\n"
        "`--video-codec vp9` exists, `--no-such-flag` does not; `trainer.models.no_such_name` neither.\n"
        "Outputs like `runs/demo/x.md` or `bench/out/y.json` and `pred/<name>_pred.png` are not repository paths.\n"
        "```bash\n"
        "i2vda-train --out r --check --max-iters 3\n"
        "torchrun --nproc_per_node 2 -m trainer.training.cli --config c.yaml --out r --flow-ckpt f\n"
        "python bench/bench_predict.py --repeats 3 --warmup 1\n"
        "make test && make docs-chek\n"
        "```\n"
        "<!-- docs-check: skip -->\n"
        "A recipe: `i2vda-prep flows --flow mine --mine-iters 3` and `docs/MINE.md`, skipped.\n"
        "\n"
        "But not this one: `--mine-iters`.\n"
    )
    problems = docs_check.static_problems(docs=[doc])
    expected = [
        "doc.md:1: `trainer/temporal.py:99999`: trainer/temporal.py has only",
        "doc.md:1: `docs/NOWHERE.md`: no such file",
        "doc.md:2: `i2vda-predict --colour`: i2vda-predict has no --colour",
        "doc.md:2: `i2vda-prep flow`: no such command",
        "doc.md:3: `--no-such-flag`: no command has this flag",
        "doc.md:3: `trainer.models.no_such_name`: trainer.models has no no_such_name",
        "doc.md:6: `i2vda-train --max-iters`: i2vda-train has no --max-iters",
        "doc.md:8: `bench/bench_predict.py --warmup`: bench/bench_predict.py has no --warmup",
        "doc.md:9: `make docs-chek`: no such command",
        "doc.md:14: `--mine-iters`: no command has this flag",
    ]
    assert len(problems) == len(expected), problems
    for line in expected:
        assert sum(p.startswith(line) for p in problems) == 1, (line, problems)


def test_an_example_that_prints_another_number_or_picture_is_reported(docs_check, tmp_path):
    (tmp_path / "docs" / "images").mkdir(parents=True)
    committed = np.zeros((8, 8, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "docs" / "images" / "p.png"), committed)
    doc = tmp_path / "README.md"
    doc.write_text(
        "<!-- docs-check: run, scratch /tmp/SCRATCH -->\n"
        "```bash\n"
        "echo 'took 1.5 s; TC 12.34 over 3 pairs'\n"
        "# took 9.9 s; TC 12.34 over 3 pairs\n"  # another duration: fine
        "echo 'TC 12.35' && echo '/tmp/SCRATCH/out'\n"
        "# TC 12.34\n"  # another number: reported
        "# /tmp/SCRATCH/out\n"
        "python -c \"import cv2, numpy; cv2.imwrite('/tmp/SCRATCH/p.png', numpy.full((8, 8, 3), 200, 'uint8'))\"\n"
        "```\n"
        "<!-- docs-check: picture docs/images/p.png from /tmp/SCRATCH/p.png -->\n"
    )
    problems = docs_check.example_problems(root=tmp_path, docs=[doc])
    assert len(problems) == 2, problems
    assert problems[0].startswith("README.md:5: the docs say `TC 12.34`, the command printed `TC 12.35`")
    assert problems[1].startswith("README.md:10: docs/images/p.png differs from /tmp/SCRATCH/p.png at 100.0%")
    assert docs_check.example_problems(root=tmp_path, docs=[doc], update_pictures=True) == problems[:1]
    assert np.all(cv2.imread(str(tmp_path / "docs" / "images" / "p.png")) == 200)  # rewritten
    doc.write_text(doc.read_text().replace("echo 'TC 12.35'", "false"))
    assert docs_check.example_problems(root=tmp_path, docs=[doc]) == ["README.md:5: exit status 1: "]
