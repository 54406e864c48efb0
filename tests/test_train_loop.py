"""Algorithm 1 on tiny learnable stores: the proxy copy, the launch of L_tc, the baselines, and learning itself.

`make_stores` (also used by test_resume, test_ddp, test_train_cli and others; written with `write_store`) writes a
source and a target store of 64x32 pictures made of 8x8 blocks whose class sets their colour, so the label is a
function of the colour.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import InputError
from pipeline.shards import SOURCE_KIND, TARGET_KIND, encode_source_sample, encode_target_sample, write_store
from trainer.training.config import TrainConfig
from trainer.training.loop import train

SIZE_HW = (32, 64)
BLOCK_PX = 8
NUM_CLASSES = 15  # viper15
PALETTE = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [220, 220, 60]], np.uint8)  # train ids 0..3
NOISE = 20  # +- grey levels on every pixel, so that colour (not exact value) decides the class
SHIFT_XY = (2, 1)  # frame 1 is frame 0 moved by this many pixels: F_0->1 = SHIFT_XY, F_1->0 = -SHIFT_XY
SOURCE, TARGET = "src", "tgt"


def _blocks(rng: np.random.Generator, size_hw=SIZE_HW) -> tuple[np.ndarray, np.ndarray]:
    """A (H, W, 3) uint8 picture of coloured blocks and its (H, W) uint8 label."""
    h, w = size_hw
    classes = rng.integers(0, len(PALETTE), size=(h // BLOCK_PX, w // BLOCK_PX))
    label = np.kron(classes, np.ones((BLOCK_PX, BLOCK_PX), np.int64)).astype(np.uint8)
    image = PALETTE[label].astype(np.int16) + rng.integers(-NOISE, NOISE + 1, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_stores(root: Path, shards: int = 2, per_shard: int = 6, seed: int = 0, size_hw=SIZE_HW) -> Path:
    """root/src (source, viper15) and root/tgt (target pairs, DIS flows) with `shards` shards each, pictures of
    `size_hw` (multiples of BLOCK_PX); -> root."""
    rng = np.random.default_rng(seed)
    h, w = size_hw
    flow_01 = np.broadcast_to(np.array(SHIFT_XY, np.float32).reshape(2, 1, 1), (2, h, w)).copy()
    source, target = [], []
    for s in range(shards):
        source += [encode_source_sample(f"s{s}_{j}", *_blocks(rng, size_hw), {}) for j in range(per_shard)]
        for j in range(per_shard):
            frame0, _ = _blocks(rng, size_hw)
            frame1 = np.roll(frame0, SHIFT_XY[::-1], axis=(0, 1))
            target.append(encode_target_sample(f"t{s}_{j}", frame0, frame1, flow_01, -flow_01, {}))
    write_store(root / SOURCE, SOURCE_KIND, source, per_shard, protocol="viper15", size_wh=[w, h])
    options = {"preset": "ultrafast"}
    write_store(
        root / TARGET, TARGET_KIND, target, per_shard, size_wh=[w, h], estimator="dis", estimator_options=options
    )
    return root


def tiny_config(stores: Path, out: Path, **overrides) -> TrainConfig:
    """A CPU run of deeplab_tiny on the tiny stores, logging every iteration."""
    settings = dict(
        out=str(out),
        shards=str(stores),
        source=SOURCE,
        target=TARGET,
        arch="deeplab_tiny",
        device="cpu",
        num_workers=0,
        log_interval=1,
        shuffle_buffer=4,
        block_iters=4,
        lr=1e-3,
    )
    return TrainConfig(**{**settings, **overrides})


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    return make_stores(tmp_path_factory.mktemp("stores"))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_proxy_is_a_frozen_copy_and_tc_starts_at_launch(stores, tmp_path):
    run = tmp_path / "run"
    # Copies at iterations 0, 2, 4; L_tc from iteration 2 on; the online flow is DIS, as the store's.
    # delta = 1 keeps every confident-or-not, non-occluded pixel in PL, so L_tc is not zero from the start.
    train(tiny_config(stores, run, max_iter=5, iter_copy=2, iter_launch=2, checkpoint_interval=1, delta=1.0))
    ckpt = {k: load(run / "checkpoints" / f"iter_{k:07d}.pt") for k in range(1, 6)}
    # Checkpoint k holds M after k iterations; the copy at iteration c happens before its update: M' = M(c).
    assert same_state(ckpt[2]["proxy"], ckpt[1]["proxy"])  # untouched by the step of iteration 1
    for k in (3, 4):
        assert same_state(ckpt[k]["proxy"], ckpt[2]["model"])  # equal to M right after the copy at 2, then frozen
    assert same_state(ckpt[5]["proxy"], ckpt[4]["model"])
    assert not same_state(ckpt[3]["model"], ckpt[2]["model"])  # M moved, so the equalities above are not trivial
    assert not same_state(ckpt[2]["proxy"], ckpt[3]["proxy"])
    log = read_log(run)
    assert [e["iteration"] for e in log] == list(range(5))
    assert all("loss_tc" not in e and "pl_coverage" not in e for e in log[:2])
    assert all(e["loss_tc"] > 0 and 0.5 < e["pl_coverage"] <= 1.0 for e in log[2:])
    assert all({"loss_seg", "loss_adv", "loss_d", "t", "lr", "lr_d"} <= e.keys() for e in log)
    config = ckpt[5]["config"]
    assert (config["arch"], config["num_classes"], config["protocol"]) == ("deeplab_tiny", NUM_CLASSES, "viper15")
    assert config["target_size_hw"] == list(SIZE_HW) and config["flow_estimator"] == "dis"
    assert json.loads((run / "config.json").read_text()) == config
    assert ckpt[5]["iteration"] == 5 and {"disc", "opt_seg", "opt_disc", "rng", "data"} <= ckpt[5].keys()


def test_a_fixed_proxy_checkpoint_is_loaded_once_and_never_copied(stores, tmp_path):
    teacher = tmp_path / "teacher"
    train(tiny_config(stores, teacher, method="source_only", max_iter=2, checkpoint_interval=2, seed=7))
    teacher_weights = load(teacher / "checkpoints" / "iter_0000002.pt")["model"]
    run = tmp_path / "run"
    train(
        tiny_config(
            stores,
            run,
            max_iter=4,
            iter_copy=2,
            iter_launch=1,
            checkpoint_interval=1,
            delta=1.0,
            proxy_ckpt=str(teacher / "checkpoints" / "iter_0000002.pt"),
        )
    )
    ckpt = {k: load(run / "checkpoints" / f"iter_{k:07d}.pt") for k in range(1, 5)}
    for k in range(1, 5):  # the teacher's weights throughout: no copy of M at iterations 0 and 2
        assert same_state(ckpt[k]["proxy"], teacher_weights)
    assert not same_state(ckpt[2]["model"], teacher_weights) and not same_state(ckpt[3]["model"], ckpt[2]["model"])
    assert all(e["loss_tc"] > 0 for e in read_log(run)[1:])
    with pytest.raises(InputError, match="--proxy-ckpt"):
        tiny_config(stores, run, method="adv_only", proxy_ckpt=str(teacher / "checkpoints" / "iter_0000002.pt"))


@pytest.mark.parametrize("method", ["source_only", "adv_only"])
def test_baselines_train_only_their_losses(stores, tmp_path, method):
    run = tmp_path / method
    train(tiny_config(stores, run, method=method, max_iter=2, checkpoint_interval=2))
    keys = set().union(*(e.keys() for e in read_log(run)))
    losses = {k for k in keys if k.startswith("loss_")}
    assert losses == ({"loss_seg"} if method == "source_only" else {"loss_seg", "loss_adv", "loss_d"})
    assert "t" not in keys  # no It is synthesized
    state = load(run / "checkpoints" / "iter_0000002.pt")
    assert state["proxy"] is None and (state["disc"] is None) == (method == "source_only")


def test_no_temporal_aug_keeps_tc_without_synthesis(stores, tmp_path):
    run = tmp_path / "no_ta"
    train(tiny_config(stores, run, max_iter=2, iter_launch=0, iter_copy=1, no_temporal_aug=True))
    log = read_log(run)
    assert all("loss_tc" in e and "t" not in e for e in log)


def test_a_few_dozen_iterations_lower_the_segmentation_loss(stores, tmp_path):
    run = tmp_path / "learn"
    train(
        tiny_config(
            stores,
            run,
            max_iter=24,
            batch_size=2,
            iter_copy=8,
            iter_launch=8,
            online_flow="linear",
            checkpoint_interval=24,
        )
    )
    seg = [e["loss_seg"] for e in read_log(run)]
    # N(0, 0.01) weights predict a near-uniform distribution: CE = ln(15) at the start.
    assert seg[0] == pytest.approx(math.log(NUM_CLASSES), abs=0.15)
    assert np.mean(seg[-6:]) < 0.5 * math.log(NUM_CLASSES)
