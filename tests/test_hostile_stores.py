"""Stores whose sizes and sha256 match their manifest but whose headers lie (issue 19, §1): each is refused with one
`error:` line and exit 2 before anything it declares is allocated or decompressed, by i2vda-train (with and without
DataLoader workers), i2vda-prep inspect and i2vda-eval. Each run is a child process whose address space may grow by
at most 1 GiB (`hostile_stores.forked`): the bombs declare 1 to 16 GiB, so a reader that decoded one would die of a
MemoryError, not pass; its peak resident memory must stay within MAX_GROWTH_MIB of what it had when it started."""

from __future__ import annotations

import bz2
import lzma

import h5py
import numpy as np
import pytest
import zstandard
from hostile_stores import (
    SIZE_HW,
    TAR_END,
    VAL_FILE,
    clean_stores,
    flow_bytes,
    forked,
    forked_many,
    gzip_tar_chunks,
    png_bytes,
    read_members,
    replace_shard,
    segmenter_checkpoint,
    shard_path,
    sparse_tar,
    tar_bytes,
    tar_member,
    train_args,
    update_manifest,
    update_val_manifest,
    val_store,
    with_member,
)

from pipeline.cli import main as prep_main
from pipeline.errors import EXIT_BAD_INPUT
from trainer.evaluation.eval_cli import main as eval_main
from trainer.training.cli import main as train_main

# A refused run grows by ~40 MiB (networks built, then the first batch refused); a normal 2-iteration run by ~110.
MAX_GROWTH_MIB = 256
GIB = 1 << 30

pytestmark = pytest.mark.usefixtures("one_thread")


def refused(outcome, *fragments: str) -> str:
    """The one `error:` line of a run that exited 2 within the memory bound; it must hold every fragment."""
    lines = outcome.error_lines()
    assert outcome.returncode == EXIT_BAD_INPUT, outcome.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.stderr[-3000:]
    assert outcome.peak_rss_mib < MAX_GROWTH_MIB, outcome.peak_rss_mib
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _ustar_member(name: str, data: bytes, typeflag: bytes = b"0", linkname: str = "") -> bytes:
    """A tar of one member of another type, with its end blocks."""
    return tar_member(name, data, typeflag=typeflag, linkname=linkname) + TAR_END


# What a 128x64 store refuses, planted in its target shard: (member or None for the whole shard, bytes, line).
FLOW = "flow01.zflow"
CASES = {
    "flow header 16384x16384 (a real 1 GiB zstd frame)": (
        FLOW,
        lambda: flow_bytes(16384, 16384),
        "t0_0.flow01.zflow: its zstd-dx16x64 header declares 16384x16384 pixels, the store holds 128x64 (W x H); "
        "refused before decoding",
    ),
    "flow header 4294967295x4294967295": (
        FLOW,
        lambda: flow_bytes(2**32 - 1, 2**32 - 1, payload_px=1),
        "declares 4294967295x4294967295 pixels",
    ),
    "flow header of the store's size, zstd frame of 1 GiB": (
        FLOW,
        lambda: flow_bytes(128, 64, payload_px=16384 * 16384),
        "its zstd frame declares 1073741824 bytes, a 128x64 flow has 32768; refused before decompressing",
    ),
    "PNG IHDR 20000x20000": (
        "frame0.png",
        lambda: png_bytes(20000, 20000, rows=0),
        "t0_0.frame0.png: its PNG header declares 20000x20000 pixels, the store holds 128x64",
    ),
    "PNG of 16 bits": ("frame1.png", lambda: png_bytes(128, 64, depth=16), "a PNG of bit depth 16, colour type 2"),
    "PNG with alpha": ("frame1.png", lambda: png_bytes(128, 64, colour=6), "a PNG of bit depth 8, colour type 6"),
    "a member larger than a 128x64 store allows": (
        "meta.json",
        lambda: b" " * (2 << 20),
        "member 't0_0.meta.json' declares 2097152 bytes in its tar header; .json members of a 128x64 store take at "
        "most 1048576; refused before reading it",
    ),
    "gzipped shard holding a 64 MiB member": (
        None,
        lambda: b"".join(gzip_tar_chunks("t0_0.meta.json", 64 << 20)),
        "tgt-000000.tar: a gzip-compressed file; shards are plain (uncompressed) tar files",
    ),
    "bzip2 shard": (None, lambda: bz2.compress(TAR_END), "a bzip2-compressed file"),
    "xz shard": (None, lambda: lzma.compress(TAR_END), "a xz-compressed file"),
    "zstd shard": (None, lambda: zstandard.ZstdCompressor().compress(TAR_END), "a zstd-compressed file"),
    "GNU sparse member of 4 GiB in a 420 KB shard": (
        None,
        lambda: sparse_tar("t0_0.frame0.png", 4 * GIB),
        "member 't0_0.frame0.png' is a sparse file; a shard holds regular files only",
    ),
    "symbolic link": (None, lambda: _ustar_member("t0_0.frame0.png", b"", b"2", "/etc/passwd"), "a symbolic link"),
    "hard link": (None, lambda: _ustar_member("t0_0.frame0.png", b"", b"1", "t0_0.frame1.png"), "a hard link"),
    "folder": (None, lambda: _ustar_member("t0_0.frame0.png", b"", b"5"), "a folder"),
    "character device": (None, lambda: _ustar_member("t0_0.frame0.png", b"", b"3"), "a character device"),
    "FIFO": (None, lambda: _ustar_member("t0_0.frame0.png", b"", b"6"), "a FIFO"),
    "a member outside its sample's name": (
        None,
        lambda: tar_bytes([("../t0_0.frame0.png", b"x")]),
        "member '../t0_0.frame0.png': not a store member",
    ),
    "a member of no store's type": (None, lambda: tar_bytes([("t0_0.frame0.exe", b"x")]), "not a store member"),
}


def _plant(stores, case: str) -> None:
    member, make, _ = CASES[case]
    data = make()
    if member is None:
        replace_shard(stores, "tgt", data)
    else:
        with_member(stores, "tgt", member, data)


@pytest.mark.parametrize("case", list(CASES))
def test_i2vda_train_refuses_a_hostile_target_shard_before_allocating(stores, tmp_path, case):
    _plant(stores, case)
    refused(forked(train_main, train_args(stores, tmp_path / "run")), str(shard_path(stores, "tgt")), CASES[case][2])
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "case", ["flow header 16384x16384 (a real 1 GiB zstd frame)", "GNU sparse member of 4 GiB in a 420 KB shard"]
)
def test_the_line_is_the_same_with_dataloader_workers_and_in_inspect(stores, tmp_path, case):
    _plant(stores, case)
    sheet = str(tmp_path / "sheet.png")
    train, inspect = forked_many(
        [
            (train_main, train_args(stores, tmp_path / "run", 2)),
            (prep_main, ["inspect", str(stores / "tgt"), "--sheet", sheet]),
        ]
    )
    refused(train, CASES[case][2])
    assert "worker" not in train.stderr
    refused(inspect, CASES[case][2])
    assert not (tmp_path / "sheet.png").exists()


# The same checks on a target store of runs (layout 3, what `i2vda-prep flows` writes): members named per frame.
# Planted in both runs, in members every pair decodes (frame 1 belongs to both pairs of a run of 2); a refusal names
# the pair and its member, as the reader sees the run (`pipeline.shards.expand_run`).
RUN_CASES = {
    "flow bomb in a run": (
        ("flow01_000000.zflow", "flow01_000001.zflow"),
        lambda: flow_bytes(16384, 16384),
        ".flow01.zflow: its zstd-dx16x64 header declares 16384x16384 pixels, the store holds 128x64",  # named per pair
        "refused before decoding",
    ),
    "PNG header 20000x20000 in a run": (
        ("frame000001.png",),
        lambda: png_bytes(20000, 20000, rows=0),
        ".png: its PNG header declares 20000x20000 pixels",  # the pair's frame0.png or frame1.png
        "refused before decoding",
    ),
    "run.json nested 100k deep": (
        ("run.json",),
        lambda: b"[" * 100_000 + b"]" * 100_000,
        ".run.json: not a run description of layout 3",
        "",
    ),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_a_store_of_runs_is_checked_the_same_way(tmp_path, case):
    stores = clean_stores(tmp_path / "stores", per_shard=4, layout=3)
    members, make, *fragments = RUN_CASES[case]
    data = make()
    for sample in (0, 1):
        for member in members:
            with_member(stores, "tgt", member, data, sample=sample)
    refused(forked(train_main, train_args(stores, tmp_path / "run")), *fragments)


def test_a_run_with_more_members_than_its_pairs_take_is_refused(tmp_path):
    stores = clean_stores(tmp_path / "stores", per_shard=4, layout=3)  # 4 pairs in the shard: at most 16 members
    entries = read_members(shard_path(stores, "tgt"))
    extra = [(f"r0_0.extra{i:02d}.json", b"{}") for i in range(9)]  # the first run's 8 members + 9
    replace_shard(stores, "tgt", tar_bytes([*entries[:8], *extra, *entries[8:]]))
    refused(forked(train_main, train_args(stores, tmp_path / "run")), "sample 'r0_0' has more than 16 members")


@pytest.fixture
def checkpoint(tmp_path):
    return segmenter_checkpoint(tmp_path / "ckpt" / "iter_0000001.pt")


def _eval(checkpoint, val, out):
    return ["--ckpt", str(checkpoint), "--val", str(val), "--out", str(out), "--device", "cpu", "--save-pred", "0"]


def test_i2vda_eval_refuses_a_flow_bomb_in_val_h5(tmp_path, checkpoint):
    val = val_store(tmp_path / "val", flow=flow_bytes(16384, 16384))
    line = refused(
        forked(eval_main, _eval(checkpoint, val, tmp_path / "eval")), f"{val / VAL_FILE}:aachen_000000_000019"
    )
    assert "declares 16384x16384 pixels, the store holds 128x64" in line


def test_i2vda_eval_refuses_a_label_dataset_declaring_10_gigapixels(tmp_path, checkpoint):
    val = val_store(tmp_path / "val")
    with h5py.File(val / VAL_FILE, "a") as f:  # a gzip-chunked dataset of 100000 x 100000 takes bytes only when written
        labels = f["samples/aachen_000000_000019/labels"]
        del labels["viper15"]
        labels.create_dataset("viper15", shape=(100_000, 100_000), dtype=np.uint8, chunks=(64, 64), compression="gzip")
    update_val_manifest(val)
    line = refused(forked(eval_main, _eval(checkpoint, val, tmp_path / "eval")), "labels/viper15 is (100000, 100000)")
    assert "refused before reading it" in line


def test_clean_stores_still_train_and_score(stores, tmp_path, checkpoint):
    val = val_store(tmp_path / "val")
    train, score = forked_many(
        [(train_main, train_args(stores, tmp_path / "run", 2)), (eval_main, _eval(checkpoint, val, tmp_path / "eval"))]
    )
    assert train.returncode == 0 and (tmp_path / "run" / "checkpoints" / "iter_0000002.pt").is_file(), train.stderr
    assert score.returncode == 0 and (tmp_path / "eval" / "metrics.json").is_file(), score.stderr
    assert read_members(shard_path(stores, "tgt"))[0][0] == "t0_0.flow01.zflow"  # the planting helpers' layout
    assert SIZE_HW == (64, 128)


def test_update_manifest_makes_a_replaced_shard_match(stores):
    # The premise of every case above: the hostile shard passes the size and sha256 checks; only its headers lie.
    from pipeline.shards import open_store

    replace_shard(stores, "tgt", TAR_END)
    update_manifest(stores, "tgt")
    entry = open_store(stores / "tgt").shards[0]
    assert entry.bytes == len(TAR_END) and entry.size_hw == SIZE_HW
