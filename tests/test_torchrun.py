"""`i2vda-train` as a multi-process DDP job: docker/torchrun-multinode.sh (torchrun, c10d rendezvous) starts two gloo
ranks on the CPU over a tiny store written here; only rank 0 writes, and its checkpoint loads with weights_only."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.flow.codec import FLOW_CODEC
from pipeline.shards import SOURCE_KIND, TARGET_KIND, encode_source_sample, encode_target_sample, write_store
from pipeline.sources import get_protocol

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "docker" / "torchrun-multinode.sh"
BIN = Path(sys.executable).parent  # torchrun and i2vda-train of this environment
SIZE_HW = (48, 64)  # tiny frames: the discriminator's five stride-2 convolutions still leave a 2x2 map
SHARDS, SAMPLES_PER_SHARD = 4, 2  # four shards: each of the two ranks streams its own two
WORLD = 2
MAX_ITER = 3
PROTOCOL = get_protocol("viper15")
CHECKPOINT_KEYS = {"model", "proxy", "disc", "opt_seg", "opt_disc", "iteration", "rng", "config"}  # docs/DEVELOPING.md
RUN_TIMEOUT_S = 240  # torch import, rendezvous and 3 tiny iterations take about 20 s on 2 shared cores


def make_stores(shards_dir: Path, seed: int = 0) -> None:
    """A VIPER-like source store (random images, labels of viper15 with ignore) and a target pair store whose I1 is
    I0 moved 2 px right (flows +-2 px)."""
    rng = np.random.default_rng(seed)
    total = SHARDS * SAMPLES_PER_SHARD
    source = []
    for i in range(total):
        image = rng.integers(0, 256, (*SIZE_HW, 3), dtype=np.uint8)
        label = rng.integers(0, PROTOCOL.num_classes, SIZE_HW).astype(np.uint8)
        label[rng.random(SIZE_HW) < 0.1] = 255
        source.append(encode_source_sample(f"src{i:03d}", image, label, {"protocol": PROTOCOL.name}))
    target = []
    for i in range(total):
        frame0 = rng.integers(0, 256, (*SIZE_HW, 3), dtype=np.uint8)
        frame1 = np.roll(frame0, 2, axis=1)
        flow_01 = np.zeros((2, *SIZE_HW), np.float32)
        flow_01[0] = 2.0
        target.append(encode_target_sample(f"city_{i:03d}", frame0, frame1, flow_01, -flow_01, {"estimator": "dis"}))
    size_wh = [SIZE_HW[1], SIZE_HW[0]]
    write_store(shards_dir / "viper", SOURCE_KIND, source, SAMPLES_PER_SHARD, size_wh=size_wh, protocol=PROTOCOL.name)
    write_store(
        shards_dir / "cityscapes_seq",
        TARGET_KIND,
        target,
        SAMPLES_PER_SHARD,
        size_wh=size_wh,
        estimator="dis",
        codec=FLOW_CODEC,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _launch(tmp_path: Path, max_iter: int) -> tuple[dict, list[str]]:
    """The environment and arguments of docker/torchrun-multinode.sh for WORLD gloo ranks on the tiny stores."""
    shards = tmp_path / "stores"
    make_stores(shards)
    # Each rank starts in its own folder and is given the same relative --out: whatever a rank writes lands in
    # rank<N>/run, so the folders show who wrote what.
    wrapper = tmp_path / "rank_dir.sh"
    wrapper.write_text('#!/usr/bin/env bash\nmkdir -p "rank${RANK}" && cd "rank${RANK}" && exec i2vda-train "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "NNODES": "1",
        "NPROC_PER_NODE": str(WORLD),
        "RDZV_ENDPOINT": f"127.0.0.1:{_free_port()}",
        "RUN_ID": "test",
        "TRAIN_COMMAND": str(wrapper),
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    flags = {"--shards": shards, "--source": "viper", "--target": "cityscapes_seq", "--out": "run"}
    flags |= {"--method": "i2vda", "--arch": "deeplab_tiny", "--max-iter": max_iter, "--iter-copy": 1}
    flags |= {"--iter-launch": 1, "--checkpoint-interval": MAX_ITER, "--log-interval": 1, "--image-interval": 100}
    flags |= {"--num-workers": 0, "--shuffle-buffer": 2, "--device": "cpu"}
    return env, [str(v) for pair in flags.items() for v in pair]


def test_two_ranks_train_and_only_rank_0_writes(tmp_path):
    env, args = _launch(tmp_path, MAX_ITER)
    result = subprocess.run(
        ["bash", str(LAUNCHER), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    rank1 = tmp_path / "rank1"
    assert rank1.is_dir(), "rank 1 never started"
    assert _files(rank1) == [], f"rank 1 wrote {_files(rank1)}"
    run = tmp_path / "rank0" / "run"
    written = _files(run)
    checkpoint = run / "checkpoints" / f"iter_{MAX_ITER:07d}.pt"
    assert [f for f in written if f.startswith("checkpoints/")] == [checkpoint.relative_to(run).as_posix()]
    assert "config.json" in written and "log.jsonl" in written
    assert len([f for f in written if "tfevents" in f]) == 1, "one TensorBoard writer (rank 0)"

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert CHECKPOINT_KEYS <= set(state)
    assert state["iteration"] == MAX_ITER
    assert len(state["rng"]) == WORLD, "the checkpoint keeps every rank's RNG: both ranks were in one DDP job"
    assert state["data"]["world_size"] == WORLD
    assert state["config"]["arch"] == "deeplab_tiny" and state["config"]["protocol"] == PROTOCOL.name
    assert list(state["config"]["target_size_hw"]) == list(SIZE_HW)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    logged = [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(MAX_ITER)), f"expected one log line per iteration, got {logged}"


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the training process of `rank` among torchrun's children (from its RANK variable), or None."""
    children = [
        int(c) for task in Path(f"/proc/{launcher_pid}/task").iterdir() for c in (task / "children").read_text().split()
    ]
    for pid in children:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


def test_sigusr1_to_one_rank_stops_both_after_the_same_iteration(tmp_path):
    # Slurm's `--signal` may reach any process of the step first: here rank 1 alone gets SIGUSR1. The ranks agree
    # (one all-reduce per iteration), stop after the same iteration, rank 0 writes its checkpoint, both exit 75, and
    # torchrun reports the failed workers.
    env, args = _launch(tmp_path, 100_000)
    args[args.index("--checkpoint-interval") + 1] = "100000"
    proc = subprocess.Popen(
        ["bash", str(LAUNCHER), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = tmp_path / "rank0" / "run" / "log.jsonl"
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        rank1 = _rank_pid(proc.pid, 1)  # the script exec's torchrun: proc.pid is torchrun's
        assert rank1 is not None
        os.kill(rank1, signal.SIGUSR1)
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    checkpoints = sorted((tmp_path / "rank0" / "run" / "checkpoints").iterdir())
    assert len(checkpoints) == 1, err[-3000:]
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    done = state["iteration"]
    assert 2 <= done < 100_000 and len(state["rng"]) == WORLD
    assert (
        err.count(f"stopped on SIGUSR1 after {done} iterations; checkpoint run/checkpoints/{checkpoints[0].name}") == 1
    )
    assert err.count("exitcode  : 75") == WORLD, err[-3000:]  # torchrun's report: both ranks exited 75
    assert not list((tmp_path / "rank1").rglob("*.pt")), "rank 1 wrote a checkpoint"
