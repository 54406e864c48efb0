"""Kill the Ray that a command started on this machine when the command dies, even by SIGKILL.

`ray.init()` without an address starts gcs_server, raylet and their helpers as descendants of the driver. Ray ties
gcs_server and raylet to the driver's life, but not what raylet starts: its agents (ray::DashboardAgent,
ray::RuntimeEnvAgent) outlive a driver killed with SIGKILL, when neither `ray.shutdown()` nor an atexit hook runs.

`watch_local_ray()` starts `python -m pipeline.ray_watchdog` in a session of its own (a signal to the driver's
process group does not reach it). It reads a pipe whose write end only the driver holds: end of file means the driver
is gone, however it ended. Meanwhile it records the driver's descendants every POLL_S (actors are started after
`ray.init()`); then it kills every recorded process still alive, and their descendants. Only descendants of the driver
are ever killed, so joining a cluster (RAY_ADDRESS) or a Ray started elsewhere leaves that Ray alone. Process groups are
not signalled: Ray's agents share the driver's group, which may hold the user's shell pipeline.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

POLL_S = 0.5  # how often the driver's new descendants (actor workers) are recorded
SWEEPS = 3  # kill rounds: a process still starting children while the first round kills it is caught by the next
PROC = Path("/proc")  # Linux; elsewhere nothing is recorded and nothing killed (Ray's own fate sharing is Linux-only)

# A process is named by (pid, start time in clock ticks since boot): a pid reused by a later process is another one.
Process = tuple[int, int]


def watch_local_ray() -> subprocess.Popen:
    """Start the watchdog for this process's Ray (call right after a local `ray.init()`; `stop_watchdog` once Ray is
    shut down). The processes Ray has started so far go on its command line: a driver killed before the watchdog has
    looked still has them killed."""
    helpers = [f"{pid}:{start}" for pid, start in descendants({_self()}, _process_table())]
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.ray_watchdog", str(os.getpid()), *helpers],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_watchdog(watchdog: subprocess.Popen, timeout_s: float = 5.0) -> None:
    """After `ray.shutdown()`: close the pipe, so the watchdog kills what Ray left behind, and wait for it."""
    watchdog.stdin.close()
    try:
        watchdog.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass


def _process_table() -> dict[int, tuple[int, int, str]]:
    """{pid: (parent pid, start ticks, state letter)} of every process, from /proc/<pid>/stat."""
    table = {}
    for entry in PROC.glob("[0-9]*"):
        try:  # the command name, in parentheses, may itself hold spaces and parentheses
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def _self() -> Process:
    return os.getpid(), _process_table()[os.getpid()][1]


def _alive(process: Process, table: dict) -> bool:
    pid, start = process
    return pid in table and table[pid][1] == start and table[pid][2] != "Z"


def descendants(roots: set[Process], table: dict) -> set[Process]:
    """Every live process below the live `roots` in the process tree (the roots not included)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[Process] = set()
    stack = [pid for pid, start in roots if _alive((pid, start), table)]
    while stack:
        for child in children.get(stack.pop(), []):
            if (child, table[child][1]) not in found:
                found.add((child, table[child][1]))
                stack.append(child)
    return {p for p in found if _alive(p, table)}


def _driver_gone(driver: Process, timeout_s: float) -> bool:
    """True once the pipe from the driver is at end of file or the driver has exited; waits up to timeout_s."""
    readable, _, _ = select.select([sys.stdin.fileno()], [], [], timeout_s)
    if readable and not os.read(sys.stdin.fileno(), 4096):
        return True
    return not _alive(driver, _process_table())  # also if the pipe's write end leaked into a longer-lived process


def kill_all(processes: set[Process]) -> None:
    """SIGKILL each process still alive and its descendants, in SWEEPS rounds."""
    killed: set[Process] = set()
    for _ in range(SWEEPS):
        table = _process_table()
        targets = {p for p in processes if _alive(p, table)} | descendants(processes | killed, table)
        targets -= killed
        if not targets:
            return
        for pid, _ in targets:  # checked alive just above: a pid reused since is, at worst, a few ms away
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed |= targets


def main(argv: list[str]) -> None:
    table = _process_table()
    driver = (int(argv[0]), table[int(argv[0])][1]) if int(argv[0]) in table else (int(argv[0]), -1)
    tracked = {(int(pid), int(start)) for pid, start in (item.split(":") for item in argv[1:])}
    me = _self()
    while not _driver_gone(driver, POLL_S):
        tracked |= descendants({driver}, _process_table()) - {me}
    kill_all(tracked)


if __name__ == "__main__":
    main(sys.argv[1:])
