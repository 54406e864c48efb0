"""Docs that match the code: every file, command and flag the docs name exists, and the README's cheap examples print
what the README says they print.

    .venv/bin/python tools/docs_check.py                    # static checks and the marked examples (about a minute)
    .venv/bin/python tools/docs_check.py --static           # static checks only (seconds)
    .venv/bin/python tools/docs_check.py --update-pictures  # rerun the examples and rewrite their pictures

Static checks, over README.md, docs/*.md and stores/README.md (`DOC_GLOBS`):
- a repository path in backquotes or a Markdown link (`trainer/temporal.py`, `docs/PREP.md`, `file.py:106`)
  exists (and has that line); paths of outputs (`runs/`, `bench/out/`, ...) and placeholders (`<name>`, `*`) are
  not paths of the repository and are skipped;
- a dotted name of ours in backquotes (`trainer.models.caffe_normalize`) imports;
- every command of ours in a code block or in backquotes (`i2vda-*` and its subcommand, `torchrun ... -m MODULE`,
  `python -m MODULE`, `python bench/SCRIPT.py`, `python tools/SCRIPT.py`, `make TARGET`) exists, and every `--flag`
  given to it appears in its `--help`; a flag in backquotes on its own (`--flow-ckpt`) must be a flag of one of them;
- a paragraph or code block under the line `<!-- docs-check: skip -->` is not checked (a recipe's hypothetical
  module or flag).

Examples: a fenced block right after the line `<!-- docs-check: run, scratch /tmp/DIR -->` is run command by
command (`i2vda-*` and `python` resolve to this checkout's `.venv`, the scratch folder is replaced by a fresh
temporary one, the working folder is the repository). A comment line directly under a command is that command's
expected output: it must equal the command's last line of stdout (as many lines as there are such comments), except
for durations (a number followed by `s`, `s/frame`, `ms`, `it/s`, `pairs/s`, ...), which vary from run to run. A
comment meant as a description goes above its command, after a blank line. Below such a block (before the next
code block or heading), `<!-- docs-check: picture PATH from IMAGE -->` or `... from frame N of VIDEO -->` names a
picture the docs show: an image the example wrote, or frame N of a video it wrote. It must match the committed PNG
(at most `PICTURE_TOLERANCE` of its pixels may differ by more than `PICTURE_LEVELS` levels, the slack of a lossy
video decode); `--update-pictures` rewrites it.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC_GLOBS = ("README.md", "docs/*.md", "stores/README.md")
# First path components of files in the repository; a path starting otherwise is an output or a user's data.
REPO_DIRS = ("pipeline", "trainer", "docs", "bench", "configs", "tests", "docker", "tools", ".ci")
REPO_FILES = ("README.md", "Makefile", "pyproject.toml", "LICENSE", "CITATION.cff", "CHANGELOG.md", "stores/README.md")
OUTPUT_PREFIXES = ("bench/out/",)  # written by the benchmarks, not in the repository
PLACEHOLDER = re.compile(r"[<>*{}]|\.\.\.|\bRUN\b|\bSTORE\b")
DOTTED = re.compile(r"^(?:pipeline|trainer)(?:\.\w+)+$")
FLAG = re.compile(r"--[a-z0-9][a-z0-9-]*")
SEPARATORS = {";", "&&", "||", "|", "&", "do", "done", "then", "fi", "(", ")", "$("}
PYTHONS = ("python", "python3", ".venv/bin/python", "$(PY)")
# Flags of other tools (docker, apptainer, ray, pip) that the docs name on their own, outside a command line.
FOREIGN_FLAGS = {"--nv", "--user", "--build-arg", "--working-dir", "--platform", "--gpus"}
SKIP_MARKER = "<!-- docs-check: skip -->"  # the next paragraph or code block names hypothetical files and flags
RUN_MARKER = re.compile(r"<!--\s*docs-check:\s*run(?:,\s*scratch\s+(\S+))?\s*-->")
PICTURE_MARKER = re.compile(r"<!--\s*docs-check:\s*picture\s+(\S+)\s+from\s+(?:frame\s+(\d+)\s+of\s+)?(\S+)\s*-->")
# Durations vary from run to run: a number followed by one of these units is not compared.
DURATION = re.compile(r"\d+(?:\.\d+)?(?=\s?(?:s\b|s/|ms\b|min\b|h\b|it/s|pairs/s|images/s|frames/s))")
PICTURE_LEVELS = 24  # a pixel differs when a channel differs by more than this (a lossy decode moves a few levels)
PICTURE_TOLERANCE = 0.005  # share of differing pixels a picture may have
COMMAND_TIMEOUT_S = 600
FAILED = "exit status"  # how a failed example command is reported


@dataclass
class Tally:
    """What the static checks looked at, for the closing line."""

    paths: int = 0
    names: int = 0
    commands: int = 0
    flags: int = 0


@dataclass
class Block:
    """A fenced code block: the line number of its first content line, its lines, the marker line above it."""

    start: int
    lines: list[str]
    marker: str = ""


@dataclass
class Command:
    """One command of a code block (continuation lines joined), its line number and the comments directly under it."""

    line: int
    text: str
    outputs: list[str] = field(default_factory=list)


def doc_files(root: Path = ROOT) -> list[Path]:
    return sorted({p for pattern in DOC_GLOBS for p in root.glob(pattern) if p.is_file()})


def _unskipped(text: str) -> str:
    """`text` with each paragraph or code block under a SKIP_MARKER line blanked (line numbers kept)."""
    lines, skipping, fenced = text.splitlines(), False, False
    for i, line in enumerate(lines):
        if line.strip() == SKIP_MARKER:
            skipping, fenced = True, False
            continue
        if skipping:
            if line.lstrip().startswith("```"):
                fenced = not fenced
                skipping = fenced  # a skipped block ends at its closing fence
            elif not line.strip() and not fenced:
                skipping = False
            lines[i] = ""
    return "\n".join(lines)


def fenced_blocks(text: str) -> list[Block]:
    blocks, current, previous = [], None, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            if current is None:
                current = Block(number + 1, [], previous)
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.lines.append(line)
        if line.strip():
            previous = line.strip()
    return blocks


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the text outside fenced blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield number, line


def inline_spans(text: str) -> Iterator[tuple[int, str]]:
    for number, line in prose_lines(text):
        for span in re.findall(r"`([^`]+)`", line):
            yield number, span.strip()


def links(text: str) -> Iterator[tuple[int, str]]:
    for number, line in prose_lines(text):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if "://" not in target and not target.startswith("#"):
                yield number, target.split("#")[0]


def commands(block: Block) -> list[Command]:
    """The block's commands: comment-free lines joined over trailing backslashes and open quotes."""
    found: list[Command] = []
    pending: Command | None = None
    last: Command | None = None
    for offset, line in enumerate(block.lines):
        number = block.start + offset
        stripped = line.strip()
        if pending is not None:
            pending.text += "\n" + line
            if _complete(pending.text):
                found.append(pending)
                last, pending = pending, None
            continue
        if not stripped:
            last = None
            continue
        if stripped.startswith("#"):
            if last is not None:
                last.outputs.append(stripped[1:].strip())
            continue
        pending = Command(number, line)
        if _complete(pending.text):
            found.append(pending)
            last, pending = pending, None
    return found


def _complete(text: str) -> bool:
    return not text.rstrip().endswith("\\") and text.count('"') % 2 == 0 and text.count("'") % 2 == 0


# --- commands and their --help -------------------------------------------------------------------------------------


def _click_command(obj) -> click.Command | None:
    while obj is not None and not isinstance(obj, click.Command):
        obj = getattr(obj, "__wrapped__", None)
    return obj


def _module_command(module_name: str) -> click.Command | None:
    """The click command of a module of ours (its `cli`, else its `main`), or of its `__main__`."""
    for name in (module_name + ".__main__", module_name):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in ("cli", "main"):
            command = _click_command(getattr(module, attr, None))
            if command is not None:
                return command
    return None


def _help(command: click.Command, name: str) -> str:
    return command.get_help(click.Context(command, info_name=name))


class Helps:
    """--help texts of our commands, built in this process (cached)."""

    def __init__(self, root: Path = ROOT):
        self.root = root
        scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
        self.entry_points = {name: target.split(":") for name, target in scripts.items()}
        self._cache: dict[tuple, str | None] = {}
        self._make_targets = set(re.findall(r"^([\w-]+):", (root / "Makefile").read_text(), flags=re.M))

    def _cached(self, key: tuple, build) -> str | None:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def entry_point(self, name: str, sub: str | None = None) -> str | None:
        """The help of `name` (a console script), or of its subcommand `sub`; None if there is no such command."""

        def build():
            command = _module_command(self.entry_points[name][0])
            if sub is not None:
                if not isinstance(command, click.Group) or sub not in command.commands:
                    return None
                command = command.commands[sub]
            return _help(command, name)

        return self._cached(("entry", name, sub), build) if name in self.entry_points else None

    def subcommands(self, name: str) -> list[str]:
        command = _module_command(self.entry_points[name][0])
        return sorted(command.commands) if isinstance(command, click.Group) else []

    def module(self, name: str) -> str | None:
        def build():
            command = _module_command(name)
            return None if command is None else _help(command, name)

        return self._cached(("module", name), build)

    def script(self, path: str) -> str | None:
        def build():
            sys.path.insert(0, str((self.root / path).parent))
            try:
                command = _module_command(Path(path).stem)
            finally:
                sys.path.pop(0)
            return None if command is None else _help(command, path)

        return self._cached(("script", path), build)

    def make_target(self, name: str) -> bool:
        return name in self._make_targets

    def all_flags(self) -> set[str]:
        """Every flag of every console script and subcommand, and of every bench script."""
        texts = []
        for name in self.entry_points:
            texts.append(self.entry_point(name))
            texts += [self.entry_point(name, sub) for sub in self.subcommands(name)]
        for folder in ("bench", "tools"):
            texts += [self.script(str(p.relative_to(self.root))) for p in sorted((self.root / folder).glob("*.py"))]
        texts.append(self.module("trainer.experiment"))
        return {flag for text in texts if text for flag in _help_flags(text)}


def _help_flags(help_text: str) -> set[str]:
    return set(FLAG.findall(help_text))


def _tokens(text: str) -> list[str]:
    text = text.replace("\\\n", " ")
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:  # an unbalanced quote inside an example: plain words are good enough for flags
        return text.split()


def _flags(tokens: list[str]) -> list[str]:
    """The --flags among an invocation's arguments ([--a x|y] and --tc/--no-tc spellings included)."""
    found = []
    for token in tokens:
        for part in token.strip("[]").split("/"):
            match = FLAG.fullmatch(part.split("=")[0].strip("[],.;:"))
            if match:
                found.append(match.group(0))
    return found


def invocations(text: str, helps: Helps) -> Iterator[tuple[str, str | None, list[str]]]:
    """(what, its help text or None if it does not exist, the flags given) of each command of ours in `text`."""
    tokens = _tokens(text)
    i = 0
    while i < len(tokens):
        token, rest = tokens[i], tokens[i + 1 :]
        end = next((k for k, t in enumerate(rest) if t in SEPARATORS), len(rest))
        args = rest[:end]
        if token in helps.entry_points:
            subs = helps.subcommands(token)
            if subs and args and not args[0].startswith("-"):
                for sub in args[0].split("/"):  # `i2vda-prep flows/val --flow-ckpt`: both take it
                    yield f"{token} {sub}", helps.entry_point(token, sub), _flags(args[1:])
            else:
                yield token, helps.entry_point(token), _flags(args)
        elif token in PYTHONS or token == "torchrun":
            if "-m" in args:
                module = args[args.index("-m") + 1] if args.index("-m") + 1 < len(args) else ""
                if module.startswith(("trainer", "pipeline")):
                    what = "i2vda-train" if module == "trainer.training.cli" else f"python -m {module}"
                    yield what, helps.module(module), _flags(args[args.index("-m") + 2 :])
            elif token in PYTHONS and args and re.fullmatch(r"(?:bench|tools)/\w+\.py", args[0]):
                exists = (helps.root / args[0]).is_file()
                yield args[0], helps.script(args[0]) if exists else None, _flags(args[1:])
        elif token == "make" and args and not args[0].startswith("-"):
            yield f"make {args[0]}", "" if helps.make_target(args[0]) else None, []
        i += 1 + (end if token in helps.entry_points or token in PYTHONS or token == "torchrun" else 0)


# --- static checks ---------------------------------------------------------------------------------------------------


def _repo_path(candidate: str) -> str | None:
    """The repository path a backquoted span or link names, or None if it names none (an output, a placeholder)."""
    candidate = candidate.strip().rstrip(".,;:)")
    if " " in candidate or PLACEHOLDER.search(candidate) or candidate.startswith(OUTPUT_PREFIXES):
        return None
    path = candidate.split(":")[0]
    if path in REPO_FILES or (path.split("/")[0] in REPO_DIRS and "/" in path):
        return candidate
    return None


def check_path(doc: Path, candidate: str, root: Path) -> str | None:
    """None if the path exists (relative to the repository, or to the doc for a link); else the problem."""
    path, _, line = candidate.partition(":")
    target = root / path
    if not target.exists() and (doc.parent / path).exists():
        target = doc.parent / path
    if not target.exists():
        return f"`{candidate}`: no such file or folder in the repository"
    if line.isdigit() and int(line) > len(target.read_text().splitlines()):
        return f"`{candidate}`: {path} has only {len(target.read_text().splitlines())} lines"
    return None


def check_dotted(name: str) -> str | None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return f"`{name}`: {'.'.join(parts[:cut])} has no {attr}"
            obj = getattr(obj, attr)
        return None
    return f"`{name}`: no such module"


def check_invocation(what: str, help_text: str | None, flags: list[str]) -> list[str]:
    if help_text is None:
        return [f"`{what}`: no such command, subcommand or make target"]
    known = _help_flags(help_text) | {"--help"}
    return [f"`{what} {flag}`: {what} has no {flag} (see its --help)" for flag in flags if flag not in known]


def _name(doc: Path, root: Path) -> str:
    return str(doc.relative_to(root)) if doc.is_relative_to(root) else doc.name


def check_doc(
    doc: Path, helps: Helps, root: Path = ROOT, all_flags: set[str] | None = None, tally: Tally | None = None
) -> list[str]:
    """Every problem of one Markdown file, as `FILE:LINE: message` lines."""
    tally = tally if tally is not None else Tally()
    text = _unskipped(doc.read_text())
    name = _name(doc, root)
    problems = []
    for number, span in inline_spans(text):
        found = []
        path = _repo_path(span)
        if path is not None:
            tally.paths += 1
            found.append(check_path(doc, path, root))
        if DOTTED.match(span):
            tally.names += 1
            found.append(check_dotted(span))
        listed = list(invocations(span, helps))
        for what, help_text, flags in listed:
            tally.commands, tally.flags = tally.commands + 1, tally.flags + len(flags)
            found += check_invocation(what, help_text, flags)
        if not listed and span.startswith("--") and ": " not in span and all_flags is not None:  # not a message
            bare = [flag for flag in _flags(span.split()) if flag not in FOREIGN_FLAGS]
            tally.flags += len(bare)
            found += [f"`{flag}`: no command has this flag" for flag in bare if flag not in all_flags]
        problems += [f"{name}:{number}: {p}" for p in found if p]
    for number, target in links(text):
        path = _repo_path(target) or (target if (doc.parent / target).suffix else None)
        tally.paths += bool(path)
        problem = check_path(doc, path, root) if path else None
        if problem:
            problems.append(f"{name}:{number}: {problem}")
    for block in fenced_blocks(text):
        for command in commands(block):
            for what, help_text, flags in invocations(command.text, helps):
                tally.commands, tally.flags = tally.commands + 1, tally.flags + len(flags)
                problems += [f"{name}:{command.line}: {p}" for p in check_invocation(what, help_text, flags)]
    return problems


def static_problems(root: Path = ROOT, docs: list[Path] | None = None, tally: Tally | None = None) -> list[str]:
    helps = Helps(root)
    all_flags = helps.all_flags()
    return [p for doc in (docs or doc_files(root)) for p in check_doc(doc, helps, root, all_flags, tally)]


# --- examples and pictures -------------------------------------------------------------------------------------------


def _masked(line: str) -> str:
    return " ".join(DURATION.sub("<duration>", line).split())


def run_block(block: Block, where: str, root: Path = ROOT, scratch_dir: Path | None = None) -> tuple[list[str], Path]:
    """Run a marked block's commands in order; -> (problems, the scratch folder used). Stops at a failing command,
    whose problem is the last and starts with `FAILED`."""
    match = RUN_MARKER.search(block.marker)
    scratch = match.group(1) if match and match.group(1) else None
    tmp = scratch_dir or Path(tempfile.mkdtemp(prefix="docs_check_"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    problems = []
    for command in commands(block):
        text = command.text.replace(scratch, str(tmp)) if scratch else command.text
        done = subprocess.run(
            ["bash", "-c", text], cwd=root, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
        )
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            problems.append(f"{where}:{command.line}: {FAILED} {done.returncode}: {tail}")
            break
        printed = [line for line in done.stdout.splitlines() if line.strip()]
        if command.outputs:
            got = printed[-len(command.outputs) :]
            got = [line.replace(str(tmp), scratch) if scratch else line for line in got]
            for expected, actual in zip(command.outputs, got + [""] * (len(command.outputs) - len(got))):
                if _masked(expected) != _masked(actual):
                    said = f"the docs say `{expected}`, the command printed `{actual}`"
                    problems.append(f"{where}:{command.line}: {said}")
    return problems, tmp


def _frame(video: Path, index: int) -> np.ndarray | None:
    capture = cv2.VideoCapture(str(video))
    try:
        frame = None
        for _ in range(index + 1):
            ok, frame = capture.read()
            if not ok:
                return None
        return frame
    finally:
        capture.release()


def check_picture(marker: str, where: str, scratch: str | None, tmp: Path, root: Path, update: bool) -> str | None:
    match = PICTURE_MARKER.search(marker)
    picture, index, source = root / match.group(1), match.group(2), match.group(3)
    made = Path(source.replace(scratch, str(tmp)) if scratch else source)
    image = cv2.imread(str(made)) if index is None else _frame(made, int(index))
    what = source if index is None else f"frame {index} of {source}"
    if image is None:
        return f"{where}: the example wrote no {what}"
    if update:  # the pixels as made, in the smallest PNG (the repository keeps them)
        cv2.imwrite(str(picture), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        return None
    committed = cv2.imread(str(picture))
    if committed is None or committed.shape != image.shape:
        shape = None if committed is None else committed.shape
        return f"{where}: {match.group(1)} is {shape}, {what} is {image.shape}; rerun with --update-pictures"
    differs = (np.abs(committed.astype(np.int16) - image.astype(np.int16)).max(axis=2) > PICTURE_LEVELS).mean()
    if differs > PICTURE_TOLERANCE:
        return f"{where}: {match.group(1)} differs from {what} at {differs:.1%} of its pixels"
    return None


def _runs(block: Block) -> bool:
    return bool(RUN_MARKER.search(block.marker))


def example_problems(root: Path = ROOT, docs: list[Path] | None = None, update_pictures: bool = False) -> list[str]:
    problems = []
    for doc in docs or doc_files(root):
        text = doc.read_text()
        name = _name(doc, root)
        lines = text.splitlines()
        for block in filter(_runs, fenced_blocks(text)):
            match = RUN_MARKER.search(block.marker)
            found, tmp = run_block(block, str(name), root)
            problems += found
            end = block.start + len(block.lines)  # the closing fence's line number
            for number in range(end + 1, len(lines) + 1):  # picture markers below the block
                if lines[number - 1].lstrip().startswith(("```", "#")):
                    break
                failed = found and f": {FAILED} " in found[-1]  # then the pictures were not made
                if PICTURE_MARKER.search(lines[number - 1]) and not failed:
                    where = f"{name}:{number}"
                    problem = check_picture(lines[number - 1], where, match.group(1), tmp, root, update_pictures)
                    problems += [problem] if problem else []
            shutil.rmtree(tmp, ignore_errors=True)
    return problems


@click.command()
@click.option("--static", "static_only", is_flag=True, help="Only the static checks (no example is run).")
@click.option("--update-pictures", is_flag=True, help="Rewrite the pictures the examples make.")
def main(static_only: bool, update_pictures: bool) -> None:
    """Check that the docs match the code (module docstring); exit 1 with one line per problem."""
    tally = Tally()
    problems = static_problems(tally=tally)
    examples = 0 if static_only else sum(1 for doc in doc_files() for b in fenced_blocks(doc.read_text()) if _runs(b))
    if not static_only:
        problems += example_problems(update_pictures=update_pictures)
    for problem in problems:
        click.echo(problem)
    click.echo(
        f"docs check: {len(problems)} problem(s) in {', '.join(DOC_GLOBS)}: {tally.paths} paths, {tally.names} "
        f"dotted names, {tally.commands} commands with {tally.flags} flags, {examples} example block(s) run"
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
