"""Shard layout 3 (runs of consecutive frames): the same pairs as layout 2, byte for byte, and the same training.

A store of each layout is built from one plan of a tiny Cityscapes tree (two snippets, a corrupt frame skipped, shards
of 4 pairs that cut a snippet); layout 2's one-sample-per-pair encoder is the independent reference.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from prep_trees import frame_path, write_cityscapes
from test_train_loop import SIZE_HW, SOURCE, load, make_stores, tiny_config

from pipeline.build import Builder
from pipeline.errors import InputError
from pipeline.plan import PrepConfig, plan_sha256, plan_shards, previous_manifest, resolve, store_manifest
from pipeline.shards import (
    PAIR_LAYOUT,
    RUN_LAYOUT,
    TARGET_KIND,
    RunEncoder,
    encode_target_sample,
    expand_run,
    open_store,
    raw_items,
    raw_samples,
    read_manifest,
    read_samples,
    store_shards,
    write_manifest,
)
from pipeline.sources.cityscapes import list_pairs
from trainer.training.data import iteration_batches, open_stores
from trainer.training.loop import train

H, W = SIZE_HW  # the training tests' stores: a target store of this size trains with their source store
# (city, seq, first frame, frames, annotated frame): pairs aachen 1..6 and bochum 11..14; aachen's frame 3 is corrupt,
# so pairs 3 and 4 are skipped. Shards of 4 planned pairs: [a1 a2 (a3 a4)] [a5 a6 b11 b12] [b13 b14].
SNIPPETS = [("aachen", "000000", 0, 7, 5), ("bochum", "000001", 10, 5, 12)]
CORRUPT = ("aachen", "000000", 3)
PER_SHARD = 4
KEPT = [f"aachen_000000_{f:06d}" for f in (1, 2, 5, 6)] + [f"bochum_000001_{f:06d}" for f in (11, 12, 13, 14)]
RUNS_PER_SHARD = [1, 2, 1]  # maximal runs of consecutive kept pairs within each shard, from the plan above


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_cityscapes(root, "train", SNIPPETS, (H, W), seed=3)
    frame_path(root, "train", *CORRUPT).write_bytes(b"not a png")
    return root


def build_store(root: Path, out: Path, layout: int, pairs: str = "all") -> Path:
    """A target store of `layout`, written shard by shard by the prep Builder (no Ray), with its manifest."""
    config = resolve(
        PrepConfig(
            kind=TARGET_KIND,
            src="cityscapes_seq",
            root=str(root),
            out=str(out),
            size_wh=(W, H),
            pairs=pairs,
            samples_per_shard=PER_SHARD,
            on_error="skip",
            layout=layout,
        )
    )
    tasks = plan_shards(list_pairs(root, "train", pairs), config.src, config.samples_per_shard)
    config.store_dir.mkdir(parents=True)
    builder = Builder(config)
    done = {task.name: builder.shard(task) for task in tasks}
    planned = sum(len(t.records) for t in tasks)
    write_manifest(config.store_dir, store_manifest(config, plan_sha256(tasks), planned, done, complete=True))
    return config.store_dir


@pytest.fixture(scope="module")
def stores(tree, tmp_path_factory) -> dict[int, Path]:
    """{layout: stores folder holding `cityscapes_seq` of that layout and the training tests' source store}."""
    source = make_stores(tmp_path_factory.mktemp("source")) / SOURCE
    out = {}
    for layout in (PAIR_LAYOUT, RUN_LAYOUT):
        folder = tmp_path_factory.mktemp(f"layout{layout}")
        build_store(tree, folder, layout)
        shutil.copytree(source, folder / SOURCE)
        out[layout] = folder
    return out


def _without_url(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k != "__url__"}


def test_a_run_expands_into_the_members_layout_2_stores_for_each_pair():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, H, W, 3), dtype=np.uint8)
    flows = rng.uniform(-20, 20, size=(3, 2, 2, H, W)).astype(np.float32)  # per pair: F_0->1, F_1->0
    # Fields shared by every pair, fields that vary, and one only the middle pair has.
    metas = [{"estimator": "dis", "frame1": i + 1, "source_paths": [f"f{i}.png", f"f{i + 1}.png"]} for i in range(3)]
    metas[1]["note"] = "only here"
    keys = [f"city_000000_{i + 1:06d}" for i in range(3)]
    run = RunEncoder(frames[0])
    for i in range(3):
        run.add(keys[i], frames[i + 1], flows[i, 0], flows[i, 1], metas[i])
    sample = run.sample()
    expected = [encode_target_sample(keys[i], frames[i], frames[i + 1], *flows[i], metas[i]) for i in range(3)]
    assert expand_run(sample) == expected
    assert sample["__key__"] == keys[0]
    assert sum(name.startswith("frame") for name in sample) == 4  # each frame once: 4 frames for 3 pairs
    assert json.loads(sample["run.json"])["shared"] == {"estimator": "dis", "codec": "zstd-dx16x64", "size_wh": [W, H]}


def test_a_run_that_disagrees_with_its_description_is_one_line():
    rng = np.random.default_rng(1)
    run = RunEncoder(rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8))
    flow = np.zeros((2, H, W), np.float32)
    for i in range(2):
        run.add(f"c_000000_{i:06d}", rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8), flow, flow, {})
    sample = {**run.sample(), "__url__": "s-000000.tar"}
    missing = {k: v for k, v in sample.items() if k != "frame000001.png"}
    with pytest.raises(InputError, match="s-000000.tar: c_000000_000000: a run of 2 pairs has 8 members"):
        expand_run(missing)
    renamed = {**missing, "frame000009.png": sample["frame000001.png"]}
    with pytest.raises(InputError, match="lacks its member frame000001.png"):
        expand_run(renamed)
    for bad in (b"{", json.dumps({"keys": ["a"], "shared": {}, "pairs": []}).encode()):
        with pytest.raises(InputError, match=r"run.json: not a run description of layout 3") as err:
            expand_run({**sample, "run.json": bad})
        assert "\n" not in str(err.value)


def test_every_pair_of_a_run_store_equals_the_pair_store_bit_for_bit(stores):
    pair_store, run_store = (stores[layout] / "cityscapes_seq" for layout in (PAIR_LAYOUT, RUN_LAYOUT))
    pairs = [_without_url(s) for shard in store_shards(pair_store) for s in raw_items(shard)]
    runs = [_without_url(s) for shard in store_shards(run_store) for s in raw_items(shard)]
    assert [s["__key__"] for s in pairs] == KEPT and runs == pairs  # every member, meta.json included
    for a, b in zip(read_samples(pair_store), read_samples(run_store), strict=True):
        assert a.keys() == b.keys()
        for field in ("frame0", "frame1", "flow01", "flow10"):
            assert a[field].dtype == b[field].dtype and a[field].tobytes() == b[field].tobytes()
        assert a["meta"] == b["meta"]
    # The shards hold the same pairs, as runs cut at shard ends, the skipped pairs and the snippet's end.
    info_pairs, info_runs = open_store(pair_store), open_store(run_store)
    assert [s.pairs for s in info_runs.shards] == [s.samples for s in info_pairs.shards] == [2, 4, 2]
    assert [s.samples for s in info_runs.shards] == RUNS_PER_SHARD
    assert (info_runs.layout, info_pairs.layout) == (RUN_LAYOUT, PAIR_LAYOUT)
    assert info_runs.num_pairs == info_pairs.num_pairs == len(KEPT) and info_runs.num_samples == sum(RUNS_PER_SHARD)
    frames = {
        store: [v for shard in store_shards(store) for s in raw_samples(shard) for n, v in s.items() if "frame" in n]
        for store in (pair_store, run_store)
    }
    assert len(frames[pair_store]) == 2 * len(KEPT)
    assert len(frames[run_store]) == len(KEPT) + sum(RUNS_PER_SHARD)  # n + 1 frames per run of n pairs
    assert {len(f) for f in frames[pair_store] + frames[run_store]} == {len(frames[pair_store][0])}  # stored PNGs


def test_annotated_pairs_are_runs_of_one_pair(tree, tmp_path):
    for layout in (PAIR_LAYOUT, RUN_LAYOUT):
        build_store(tree, tmp_path / str(layout), layout, pairs="annotated")
    stores = [tmp_path / str(layout) / "cityscapes_seq" for layout in (PAIR_LAYOUT, RUN_LAYOUT)]
    pairs, runs = ([_without_url(s) for shard in store_shards(st) for s in raw_items(shard)] for st in stores)
    assert [s["__key__"] for s in pairs] == ["aachen_000000_000005", "bochum_000001_000012"] and runs == pairs
    assert open_store(stores[1]).num_samples == 2


def test_a_shard_whose_pairs_differ_from_the_manifest_is_refused(stores, tmp_path):
    store = tmp_path / "cityscapes_seq"
    shutil.copytree(stores[RUN_LAYOUT] / "cityscapes_seq", store)
    manifest = read_manifest(store)
    manifest["shards"][1]["pairs"] = 5
    write_manifest(store, manifest)
    with pytest.raises(InputError, match="holds 4 items, the manifest says 5; the shard is damaged"):
        list(read_samples(store))


def test_stores_of_an_unknown_layout_are_refused_and_old_ones_are_not_rebuilt_in_place(stores, tree, tmp_path):
    store = tmp_path / "cityscapes_seq"
    shutil.copytree(stores[RUN_LAYOUT] / "cityscapes_seq", store)
    manifest = read_manifest(store)
    write_manifest(store, {**manifest, "layout": 9})
    with pytest.raises(InputError, match="shard layout 9, this i2vda reads 2, 3; rebuild the store"):
        open_store(store)
    # A store written before layouts were recorded reads as layout 2, and a prep rerun into it is refused.
    old = {k: v for k, v in manifest.items() if k not in ("layout", "num_pairs")}
    old["config"] = {k: v for k, v in manifest["config"].items() if k != "layout"}
    write_manifest(store, old)
    assert open_store(store).layout == PAIR_LAYOUT and open_store(store).num_pairs == manifest["num_samples"]
    config = PrepConfig(kind=TARGET_KIND, src="cityscapes_seq", root=str(tree), out=str(tmp_path), size_wh=(W, H))
    with pytest.raises(InputError, match=r"layout=None \(now 3\)"):
        previous_manifest(replace(config, samples_per_shard=PER_SHARD), manifest["config"]["plan_sha256"])


@pytest.mark.usefixtures("one_thread")
def test_both_layouts_stream_the_same_batches_to_every_rank_and_resume(stores, tmp_path):
    def batches(layout, rank, start, count):
        config, plan = open_stores(tiny_config(stores[layout], tmp_path, target="cityscapes_seq", batch_size=2))
        stream = iteration_batches(config, plan, rank=rank, world=2, start=start)
        return [next(stream)["target"] for _ in range(count)]

    for rank, start in ((0, 0), (1, 0), (0, 5)):  # both DDP ranks; a resume in the middle of block 1
        pairs, runs = batches(PAIR_LAYOUT, rank, start, 7), batches(RUN_LAYOUT, rank, start, 7)
        for a, b in zip(pairs, runs):
            assert a["keys"] == b["keys"]
            assert all(torch.equal(a[f], b[f]) for f in ("frame0", "frame1", "flow_01", "flow_10"))


@pytest.mark.usefixtures("one_thread")
def test_a_training_run_on_either_layout_ends_with_the_same_weights(stores, tmp_path):
    settings = dict(target="cityscapes_seq", max_iter=6, batch_size=2, iter_copy=2, iter_launch=2, delta=1.0)
    ends = []
    for layout in (PAIR_LAYOUT, RUN_LAYOUT):
        run = tmp_path / str(layout)
        train(tiny_config(stores[layout], run, checkpoint_interval=6, **settings))
        ends.append(load(run / "checkpoints" / "iter_0000006.pt"))
    leaves = [_leaves(end, ("model", "proxy", "disc", "opt_seg", "opt_disc", "rng", "data")) for end in ends]
    assert leaves[0].keys() == leaves[1].keys()
    assert sum(isinstance(v, torch.Tensor) for v in leaves[0].values()) > 50
    for path, a in leaves[0].items():
        b = leaves[1][path]
        same = torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b)
        assert same, path


def _leaves(state, parts) -> dict:
    """{path: value} of every tensor, array, number or string under `parts` of a checkpoint."""
    out = {}

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{path}/{i}")
        else:
            out[path] = value

    for part in parts:
        walk(state[part], part)
    return out
