"""Preemption (issue 19, §2): a real SIGTERM (or SIGUSR1) to a real `i2vda-train` process makes it finish the
iteration, write a checkpoint of the iterations done, print one line naming it and the resume command, and exit 75;
`i2vda-train --out RUN --resume latest` alone then ends bit-identical to a run that was never stopped. DDP ranks stop
after the same iteration when only one of them is signalled (tests/test_torchrun.py). Ctrl-C (SIGINT) takes the same
path with exit 130; a second Ctrl-C stops at once and names the newest checkpoint, instead of click's `Aborted!`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_loop import SOURCE, TARGET, load, make_stores, read_log

from pipeline.errors import EXIT_BAD_INPUT
from trainer.training.preemption import EXIT_INTERRUPTED, EXIT_PREEMPTED

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

pytestmark = pytest.mark.usefixtures("one_thread")


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
def test_sigterm_checkpoints_and_the_resume_ends_bit_identical(stores, straight, tmp_path, workers, group):
    run = tmp_path / "run"
    signum = signal.SIGTERM  # SIGUSR1 takes the same path (tests/test_torchrun.py sends it to one rank of two)
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
    from hostile_stores import forked, warm_up

    from trainer.training.cli import main

    warm_up()
    run = tmp_path / "run"

    def interrupt_when_running() -> None:  # in the child: a real SIGINT to itself once 3 iterations are logged
        def check(*_):
            log = run / "log.jsonl"
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                signal.setitimer(signal.ITIMER_REAL, 0.02)

        signal.signal(signal.SIGALRM, check)
        signal.setitimer(signal.ITIMER_REAL, 0.02)

    outcome = forked(main, _command(stores, run, 0)[3:], interrupt_when_running)
    assert outcome.returncode == EXIT_INTERRUPTED, outcome.stderr
    done = len(read_log(run))  # the iteration it was in when Ctrl-C came was finished, and checkpointed
    checkpoint = run / "checkpoints" / f"iter_{done:07d}.pt"
    assert 3 <= done < MAX_ITER and load(checkpoint)["iteration"] == done
    assert outcome.error_lines() == [
        f"stopped on SIGINT after {done} iterations; checkpoint {checkpoint}; resume with: i2vda-train --out {run} "
        f"--resume latest"
    ]


def test_a_second_ctrl_c_stops_at_once_and_names_the_newest_checkpoint(stores, tmp_path):
    from hostile_stores import forked, warm_up

    from trainer.training.cli import main

    warm_up()
    run = tmp_path / "run"

    def interrupt_twice() -> None:  # in the child: two real SIGINTs inside one iteration, once 3 are logged
        import trainer.training.loop as loop

        real_step = loop.segmenter_step

        def step(nets, batch, config, iteration):
            if iteration.it == 3:
                os.kill(os.getpid(), signal.SIGINT)  # noted: stop after this iteration
                os.kill(os.getpid(), signal.SIGINT)  # not waiting: KeyboardInterrupt here
            return real_step(nets, batch, config, iteration)

        loop.segmenter_step = step

    outcome = forked(main, _command(stores, run, 0)[3:] + ["--checkpoint-interval", "2"], interrupt_twice)
    assert outcome.returncode == EXIT_INTERRUPTED, outcome.stderr
    newest = run / "checkpoints" / "iter_0000002.pt"  # written after 2 iterations; the 4th never finished
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [newest.name]
    assert outcome.error_lines() == [
        f"interrupted; the newest checkpoint is {newest}; resume with: i2vda-train --out {run} --resume latest"
    ]


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
