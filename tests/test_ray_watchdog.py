"""A local Ray dies with the command that started it, even one killed with SIGKILL (pipeline/ray_watchdog.py)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from prep_trees import frame_path, write_cityscapes

GONE_S = 15  # how long the killed driver's helpers may take to die
START_S = 120  # how long Ray and the actors may take to start on a busy machine
POLL_S = 0.05


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1"}


def _stat(pid: int) -> tuple[int, str, str, str] | None:
    """(parent pid, start ticks, state, name) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, rest = text.split("(", 1)[1].rsplit(")", 1)
    fields = rest.split()
    return int(fields[1]), fields[19], fields[0], name


def _tree(pid: int) -> dict[tuple[int, str], str]:
    """{(pid, start ticks): name} of every live process below `pid`."""
    stats = {int(e.name): _stat(int(e.name)) for e in Path("/proc").glob("[0-9]*")}
    below, stack = {}, [pid]
    while stack:
        parent = stack.pop()
        for child, stat in stats.items():
            if stat is not None and stat[0] == parent and stat[2] != "Z":
                below[(child, stat[1])] = stat[3]
                stack.append(child)
    return below


def _alive(processes: dict) -> list[str]:
    """The processes still running (a zombie is dead, waiting for init to reap it)."""
    left = []
    for (pid, start), name in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == start and stat[2] != "Z":
            left.append(f"{pid} {name}")
    return left


def _kill(processes: dict) -> None:
    for pid, start in processes:
        if _alive({(pid, start): ""}):
            os.kill(pid, signal.SIGKILL)


def _kill_driver(driver: subprocess.Popen, processes: dict) -> list[str]:
    """SIGKILL the driver alone (not its process group); -> its descendants still alive GONE_S later (then killed).
    The watchdog is among them: it exits once it has killed the rest."""
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + GONE_S
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _alive(processes)
    _kill(processes)  # clean up before failing the test
    return left


def test_the_watchdog_kills_the_killed_drivers_descendants_and_nothing_else():
    """Without Ray: a child started before the watchdog and a grandchild started after it die with the driver; a
    process that is not the driver's descendant lives on."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    script = textwrap.dedent("""
        import subprocess, sys, time
        from pipeline.ray_watchdog import watch_local_ray
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        child = subprocess.Popen(sleeper)
        watch_local_ray()
        spawner = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(60)"
        later = subprocess.Popen([sys.executable, "-c", spawner, *sleeper])
        print("started", flush=True)
        time.sleep(60)
    """)
    driver = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    try:
        assert driver.stdout.readline() == "started\n"
        deadline = time.monotonic() + 30
        descendants: dict = {}
        while len(descendants) < 4 and time.monotonic() < deadline:  # child, watchdog, spawner, its child
            time.sleep(POLL_S * 4)
            descendants = _tree(driver.pid)
        assert len(descendants) == 4, descendants
        time.sleep(1.0)  # two of the watchdog's polls: it has seen the grandchild
        assert not _kill_driver(driver, descendants)
        assert bystander.poll() is None
    finally:
        driver.kill()
        bystander.kill()
        driver.wait()
        bystander.wait()


def _blocked_tree(root: Path) -> None:
    """Two tiny snippets; one frame is a FIFO that nobody writes, so the actor that reads it waits until killed."""
    write_cityscapes(root, "train", [("aachen", "000000", 0, 4, None), ("bochum", "000001", 0, 4, None)], (32, 64))
    fifo = frame_path(root, "train", "bochum", "000001", 2)
    fifo.unlink()
    os.mkfifo(fifo)


def test_a_prep_run_killed_with_sigkill_leaves_no_ray_process(tmp_path):
    root, out = tmp_path / "cityscapes", tmp_path / "out"
    _blocked_tree(root)
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    args = [
        "flows",
        "--root",
        str(root),
        "--out",
        str(out),
        "--size",
        "64x32",
        "--samples-per-shard",
        "1",
        "--workers",
        "2",
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env={**_env(), "RAY_TMPDIR": temp},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    descendants: dict = {}
    try:
        deadline = time.monotonic() + START_S
        while not list((out / "cityscapes_seq").glob("*.tar")) and driver.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"no shard within {START_S} s")
            time.sleep(POLL_S)
        if driver.poll() is not None:
            pytest.fail(f"the prep run ended (exit {driver.returncode}): {driver.stderr.read()[-2000:]}")
        descendants = _tree(driver.pid)
        names = " ".join(descendants.values())
        assert "raylet" in names and "ray::PrepActor" in names, names
        left = _kill_driver(driver, descendants)
        assert not left, f"Ray processes outlived the killed prep run: {left}"
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        _kill(descendants)
        shutil.rmtree(temp, ignore_errors=True)
