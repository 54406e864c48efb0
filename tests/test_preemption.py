"""Preemption (issue 19, §2): a real SIGTERM (or SIGUSR1) to a real `i2vda-train` process makes it finish the
iteration, write a checkpoint of the iterations done, print one line naming it and the resume command, and exit 75;
`i2vda-train --out RUN --resume latest` alone then ends bit-identical to a run that was never stopped. DDP ranks stop
after the same iteration when only one of them is signalled. Ctrl-C names the resume command instead of `Aborted!`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_train_loop import SOURCE, TARGET, load, make_stores, read_log, tiny_config

from pipeline.errors import EXIT_BAD_INPUT
from trainer.training.preemption import EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted

REPO = Path(__file__).resolve().parents[1]
MAX_ITER = 16
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
# I2VDA with a proxy copy every 4 iterations and L_tc from iteration 2, so the stop falls between copies and the
# resumed run must restore M', D, both optimisers and the RNGs exactly; checkpoints only at the end.
FLAGS = {
    "--arch": "deeplab_tiny",
    "--method": "i2vda",
    "--disc-width": "8",
    "--device": "cpu",
    "--max-iter": str(MAX_ITER),
    "--iter-copy": "4",
    "--iter-launch": "2",
    "--delta": "1.0",
    "--online-flow": "linear",
    "--shuffle-buffer": "4",
    "--block-iters": "4",
    "--log-interval": "1",
    "--checkpoint-interval": "1000",
}
PARTS = ("model", "proxy", "disc", "opt_seg", "opt_disc")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("stores"), shards=2, per_shard=3)


def _command(stores: Path, run: Path, workers: int) -> list[str]:
    flags = {"--out": str(run), "--shards": str(stores), "--source": SOURCE, "--target": TARGET, **FLAGS}
    flags["--num-workers"] = str(workers)
    return [sys.executable, "-m", "trainer.training.cli", *(v for pair in flags.items() for v in pair)]


@pytest.fixture(scope="module")
def straight(stores, tmp_path_factory):
    """The run that was never stopped (the data stream is the same for any number of workers)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    proc = subprocess.run(_command(stores, run, 0), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return run


def _tensors(obj, prefix=""):
    """Every tensor of a nested state dict, by path."""
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}[{i}]")


def _signal_when_running(proc: subprocess.Popen, run: Path, signum: int, group: bool) -> None:
    """Wait for the third log line (iterations are under way), then send `signum` to the process (or its group)."""
    deadline = time.monotonic() + 300
    log = run / "log.jsonl"
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.02)
    if group:  # as Slurm signals every process of a job step: the DataLoader workers too
        os.killpg(proc.pid, signum)
    else:  # as Kubernetes signals the container's main process
        proc.send_signal(signum)


@pytest.mark.parametrize(("workers", "group"), [(0, False), (2, True)])
def test_a_stop_signal_checkpoints_and_the_resume_ends_bit_identical(
    stores, straight, tmp_path, workers, signum, group
):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _command(stores, run, workers),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so that killpg reaches it and its workers only
    )
    try:
        _signal_when_running(proc, run, signum, group)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_PREEMPTED, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    done = len(read_log(run))  # log lines of the iterations that ran: the stop came after the last of them
    checkpoint = run / "checkpoints" / f"iter_{done:07d}.pt"
    assert 3 <= done < MAX_ITER
    assert lines[0] == (
        f"stopped on {signal.Signals(signum).name} after {done} iterations; checkpoint {checkpoint}; "
        f"resume with: i2vda-train --out {run} --resume latest"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [checkpoint.name]  # no partial file
    assert load(checkpoint)["iteration"] == done

    # The resume command of the line, as a batch script would run it: no other flag.
    resume = [sys.executable, "-m", "trainer.training.cli", "--out", str(run), "--resume", "latest"]
    proc = subprocess.run(resume, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {run} from {checkpoint} ({done} iterations done) at iteration {done + 1}" in proc.stdout
    final, reference = (load(r / "checkpoints" / f"iter_{MAX_ITER:07d}.pt") for r in (run, straight))
    for part in PARTS:
        got, want = dict(_tensors(final[part])), dict(_tensors(reference[part]))
        assert got.keys() == want.keys() and got, part
        assert all(torch.equal(got[k], want[k]) for k in want), part
    assert [e["iteration"] for e in read_log(run)] == list(range(MAX_ITER))
    assert json.loads((run / "config.json").read_text()) == json.loads((straight / "config.json").read_text()) | {
        "out": str(run),
        "resume": "latest",
        "num_workers": workers,
    }


def test_ctrl_c_names_the_newest_checkpoint_and_the_resume_command(stores, tmp_path):
    run = tmp_path / "run"
    command = _command(stores, run, 0) + ["--checkpoint-interval", "2"]
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _signal_when_running(proc, run, signal.SIGINT, group=False)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err
    newest = sorted((run / "checkpoints").glob("iter_*.pt"))[-1]
    assert err.strip().splitlines() == [
        f"interrupted; the newest checkpoint is {newest}; resume with: i2vda-train --out {run} --resume latest"
    ]
    assert "Aborted!" not in err


def test_resume_flags_override_only_what_a_resume_may_change(stores, tmp_path, capsys):
    from trainer.training.cli import main

    run = tmp_path / "run"
    args = _command(stores, run, 0)[3:] + ["--method", "source_only", "--max-iter", "2", "--checkpoint-interval", "1"]
    with pytest.raises(SystemExit) as done:  # click's standalone mode exits 0 after the command
        main(args)
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:  # the run's own config.json, a longer schedule: a resumable setting
        main(["--out", str(run), "--resume", "latest", "--max-iter", "3"])
    assert done.value.code == 0
    assert load(run / "checkpoints" / "iter_0000003.pt")["config"]["max_iter"] == 3
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(run), "--resume", "latest", "--max-iter", "4", "--lr", "0.1"])
    assert refused.value.code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --resume {run / 'checkpoints' / 'iter_0000003.pt'}: the checkpoint was trained with another "
        f"setting (lr: checkpoint has 0.00025, this run 0.1)"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, stores: str, run: str, out: str) -> None:
    """A torchrun-like rank; rank 1 alone receives SIGUSR1 during its iteration 1 (0-based)."""
    import trainer.training.loop as loop

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    real_step = loop.segmenter_step

    def step(nets, batch, config, iteration):
        if rank == 1 and iteration.it == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_step(nets, batch, config, iteration)

    loop.segmenter_step = step
    config = tiny_config(Path(stores), Path(run), max_iter=6, checkpoint_interval=1000, online_flow="linear")
    try:
        loop.train(config)
        stopped = None
    except Preempted as stop:
        stopped = {"iteration": stop.iteration, "checkpoint": str(stop.checkpoint), "signal": stop.signum}
    Path(out, f"rank{rank}.json").write_text(json.dumps(stopped))


def test_ddp_ranks_stop_after_the_same_iteration_when_one_is_signalled(tmp_path):
    stores = make_stores(tmp_path / "stores", shards=2, per_shard=3)
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    mp.spawn(_rank_main, args=(_free_port(), str(stores), str(run), str(out)), nprocs=2, join=True)
    stops = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    checkpoint = run / "checkpoints" / "iter_0000002.pt"
    assert stops[0] == {"iteration": 2, "checkpoint": str(checkpoint), "signal": int(signal.SIGUSR1)}
    assert stops[1] == {"iteration": 2, "checkpoint": "None", "signal": int(signal.SIGUSR1)}  # rank 1 writes nothing
    state = load(checkpoint)
    assert state["iteration"] == 2 and len(state["rng"]) == 2 and state["data"]["world_size"] == 2


def test_the_cluster_recipes_use_the_signals_and_the_exit_status():
    import yaml

    sbatch = (REPO / "docker" / "slurm-train.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@120" in sbatch and "#SBATCH --requeue" in sbatch
    assert "trap 'stop USR1' USR1" in sbatch and "trap 'stop TERM' TERM" in sbatch and "scontrol requeue" in sbatch
    launcher = (REPO / "docker" / "torchrun-multinode.sh").read_text()
    assert '--signals-to-handle "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"' in launcher
    doc = (REPO / "docs" / "CLUSTER.md").read_text()
    job = yaml.safe_load(doc.split("```yaml\n", 1)[1].split("```", 1)[0])
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [EXIT_PREEMPTED] and rules[0]["action"] == "Ignore"
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 120 and pod["containers"][0]["command"][0] == "i2vda-train"
