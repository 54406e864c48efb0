"""manifest.json of the wrong shape (issue 19, §3): every reader gets one `error:` line naming the field, through the
one schema of pipeline/shards/schema.py; shard names that leave the store folder are refused, not read."""

from __future__ import annotations

import json
import shutil

import pytest
from hostile_stores import forked_many, train_args

from pipeline.cli import main as prep_main
from pipeline.errors import EXIT_BAD_INPUT, InputError
from pipeline.shards import MANIFEST_NAME, open_store, read_samples
from pipeline.shards.schema import MAX_COUNT, MAX_DEPTH, MAX_MANIFEST_BYTES
from trainer.training.cli import main as train_main

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(stores, text: str | bytes) -> None:
    path = stores / "tgt" / MANIFEST_NAME
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def _edited(stores, edit) -> None:
    manifest = json.loads((stores / "tgt" / MANIFEST_NAME).read_text())
    edit(manifest)
    _write(stores, json.dumps(manifest))


def _set(path: str, value):
    """An edit setting manifest[path] (dots for objects, digits for list items)."""

    def edit(manifest):
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[int(last) if last.isdigit() else last] = value

    return edit


# (edit of the target manifest, the field and complaint the line names)
FIELD_CASES = {
    "shard entry without a name": (
        lambda m: m["shards"][0].pop("name"),
        "shards[0].name: expected a value, got nothing (the field is missing)",
    ),
    "samples 10**30": (_set("shards.0.samples", 10**30), f"shards[0].samples: expected an integer in 0..{MAX_COUNT}"),
    "bytes negative": (_set("shards.0.bytes", -1), "shards[0].bytes: expected an integer"),
    "samples a float": (_set("shards.0.samples", 2.0), "shards[0].samples: expected an integer"),
    "samples a boolean": (_set("shards.0.samples", True), "shards[0].samples: expected an integer"),
    'complete "false"': (_set("complete", "false"), 'complete: expected true or false, got "false"'),
    "complete 0": (_set("complete", 0), "complete: expected true or false, got 0"),
    "size_wh zero": (_set("size_wh", [0, 64]), "size_wh: expected [width, height] in pixels, each 1..8192"),
    "size_wh huge": (_set("size_wh", [100000, 64]), "size_wh: expected [width, height]"),
    "size_wh a string": (_set("size_wh", "128x64"), "size_wh: expected [width, height]"),
    "size_wh of three": (_set("size_wh", [128, 64, 3]), "size_wh: expected [width, height]"),
    "kind unknown": (_set("kind", "other"), "kind: expected one of target_pairs, source, val"),
    "shards an object": (_set("shards", {}), "shards: expected a list"),
    "shard entry a string": (_set("shards", ["tgt-000000.tar"]), "shards[0]: expected an object"),
    "estimator_options nested": (_set("estimator_options", {"preset": [1]}), "estimator_options.preset: expected a"),
    "skipped entry without reason": (
        _set("skipped", [{"key": "k", "path": "p"}]),
        "skipped[0].reason: expected a value, got nothing",
    ),
    "config a list": (_set("config", []), "config: expected an object"),
    "config size_wh wrong": (_set("config.size_wh", [1, 2, 3]), "config.size_wh: expected [width, height]"),
    "a very long name": (_set("name", "x" * 5000), "name: expected a string of at most 4096 characters"),
    "shard name leaving the store": (_set("shards.0.name", "../outside.tar"), "shards[0].name: expected a plain file"),
    "shard name absolute": (_set("shards.0.name", "/etc/hostname"), "shards[0].name: expected a plain file name"),
    "shard name in a subfolder": (_set("shards.0.name", "sub/tgt.tar"), "shards[0].name: expected a plain file name"),
    "shard name with a backslash": (_set("shards.0.name", "..\\x.tar"), "shards[0].name: expected a plain file name"),
    "shard name empty": (_set("shards.0.name", ""), "shards[0].name: expected a plain file name"),
    "shard name ..": (_set("shards.0.name", ".."), "shards[0].name: expected a plain file name"),
    "a shard listed twice": (lambda m: m["shards"].append(dict(m["shards"][0])), "is listed twice"),
    "deeper than the schema allows": (_set("timing", {"a": [[[[[[[[[1]]]]]]]]]}), f"nested deeper than {MAX_DEPTH}"),
}
# (manifest text, complaint): what json.loads alone would take, or not.
TEXT_CASES = {
    "Infinity": (lambda text: text.replace('"bytes": ', '"bytes": Infinity, "x": ', 1), "Infinity is not a JSON"),
    "NaN": (lambda text: text.replace('"complete": true', '"complete": NaN', 1), "NaN is not a JSON number"),
    "1e400 (a float that overflows)": (lambda text: text.replace('"samples": 2', '"samples": 1e400', 1), "samples"),
    "nested 100k deep": (lambda text: "[" * 100_000 + "]" * 100_000, "not a valid manifest (nested too deeply)"),
    "cut in the middle": (lambda text: text[: len(text) // 2], "not a valid manifest"),
    "a list": (lambda text: "[1, 2]", "not an i2vda store manifest"),
    "not UTF-8": (lambda text: b"\xff\xfe" + text.encode(), "not a valid manifest"),
    "an int of 5000 digits": (
        lambda text: text.replace('"samples": 2', '"samples": ' + "9" * 5000, 1),
        "not a valid manifest (an integer of more digits than Python reads)",
    ),
}


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_a_field_of_the_wrong_shape_is_one_line_naming_it(stores, case):
    edit, complaint = FIELD_CASES[case]
    _edited(stores, edit)
    with pytest.raises(InputError) as err:
        open_store(stores / "tgt")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{stores / 'tgt' / MANIFEST_NAME}: not a valid manifest")
    assert complaint in message, message


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_text_that_is_not_a_manifest_is_one_line(stores, case):
    change, complaint = TEXT_CASES[case]
    text = (stores / "tgt" / MANIFEST_NAME).read_text()
    changed = change(text)
    assert changed != text
    _write(stores, changed)
    with pytest.raises(InputError) as err:
        open_store(stores / "tgt")
    assert "\n" not in str(err.value) and complaint in str(err.value), str(err.value)


def test_a_huge_manifest_is_refused_without_being_read_whole(stores):
    import tracemalloc

    path = stores / "tgt" / MANIFEST_NAME
    with open(path, "ab") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=f"more than the {MAX_MANIFEST_BYTES} a manifest may take"):
            open_store(stores / "tgt")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_MANIFEST_BYTES  # one bounded read, not the whole GiB


def test_every_tool_prints_the_one_line_and_exits_2(stores, tmp_path):
    # The probes: `complete: "false"` was taken as complete, `../outside.tar` was read and verified.
    outside = stores / "outside.tar"
    shutil.copyfile(stores / "tgt" / "tgt-000000.tar", outside)
    _edited(stores, lambda m: m["shards"][0].update(name="../outside.tar"))
    (stores / "src" / MANIFEST_NAME).write_text(
        (stores / "src" / MANIFEST_NAME).read_text().replace('"complete": true', '"complete": "false"')
    )
    sheet = str(tmp_path / "sheet.png")
    train, inspect, verify, source = forked_many(
        [
            (train_main, train_args(stores, tmp_path / "run")),
            (prep_main, ["inspect", str(stores / "tgt"), "--sheet", sheet]),
            (prep_main, ["inspect", str(stores / "tgt"), "--verify", "--sheet", sheet]),
            (prep_main, ["inspect", str(stores / "src"), "--sheet", sheet]),
        ]
    )
    for outcome, field in (
        (train, "complete"),
        (inspect, "shards[0].name"),
        (verify, "shards[0].name"),
        (source, "complete"),
    ):
        lines = outcome.error_lines()
        assert outcome.returncode == EXIT_BAD_INPUT and len(lines) == 1, outcome.stderr
        assert lines[0].startswith("error: ") and f": not a valid manifest: {field}: expected" in lines[0], lines[0]
    assert "all files match" not in verify.stdout
    assert not (tmp_path / "run").exists() and not (tmp_path / "sheet.png").exists()


def test_read_samples_of_a_bare_shard_uses_its_folder_manifest(stores):
    samples = list(read_samples(stores / "tgt" / "tgt-000000.tar"))
    assert [s["__key__"] for s in samples] == ["t0_0", "t0_1"] and samples[0]["frame0"].shape == (64, 128, 3)
    _edited(stores, _set("size_wh", [64, 32]))  # the manifest now says 64x32: the members' headers disagree
    with pytest.raises(InputError, match="declares 128x64 pixels, the store holds 64x32"):
        list(read_samples(stores / "tgt" / "tgt-000000.tar"))
