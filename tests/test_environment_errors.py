"""The world around the commands: a full disk, a read-only folder, a damaged val.h5, an --out that is a file, a second
prep run on the same store, a checkpoint save killed mid-write. Each is one `error:` line naming the path and the
cause with exit 2, or is handled, and nothing is left that a rerun would trust.

The full-disk and read-only cases mount a small tmpfs; where mounting is not allowed (not root, no CAP_SYS_ADMIN)
they are skipped, saying so."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray
from prep_trees import write_cityscapes

from pipeline.errors import EXIT_BAD_INPUT, InputError
from pipeline.plan import store_lock
from pipeline.shards import MANIFEST_NAME, ValStore, ValWriter, file_sha256, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
TRAIN = [("aachen", "000000", 0, 17, None)]  # 16 pairs: about 4 MB of shards at 256x128
NATIVE_HW = (128, 256)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1"}


def _flows(root: Path, out: Path) -> list[str]:
    return [
        "flows",
        "--root",
        str(root),
        "--out",
        str(out),
        "--size",
        "256x128",
        "--samples-per-shard",
        "4",
        "--workers",
        "1",
        "--dis-preset",
        "ultrafast",
    ]


def _prep(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=_env()
    )


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_cityscapes(root, "train", TRAIN, NATIVE_HW, seed=3)
    return root


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs folder of that size; skipped where this process may not mount."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}): needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_is_one_line_and_leaves_nothing_a_rerun_would_trust(root, tmpfs):
    out = tmpfs("2m")
    proc = _prep(_flows(root, out))
    line = _one_line(proc)
    assert "No space left on device (ENOSPC)" in line and str(out) in line, line
    assert "Error" not in proc.stdout and "Traceback" not in proc.stdout  # no Ray task-failure line either
    store = out / "cityscapes_seq"
    manifest = read_manifest(store)
    assert not manifest["complete"]
    for entry in manifest["shards"]:  # every shard it lists is whole; nothing else carries a shard's name
        assert file_sha256(store / entry["name"]) == entry["sha256"]
    assert sorted(p.name for p in store.glob("*.tar")) == sorted(e["name"] for e in manifest["shards"])


def test_a_complete_read_only_store_reruns_and_a_read_only_out_is_one_line(root, tmpfs):
    out = tmpfs("64m")
    assert _prep(_flows(root, out)).returncode == 0
    store = out / "cityscapes_seq"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.iterdir()}
    subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
    again = _prep(_flows(root, out))
    assert again.returncode == 0, again.stderr
    assert "16 pairs of 16" in again.stdout and "(4 verified from a previous run)" in again.stdout
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.iterdir()} == before
    line = _one_line(_prep(_flows(root, out / "more")))
    assert line.startswith(f"error: {out / 'more'}") and "(EROFS)" in line, line


def test_out_naming_an_existing_file_is_one_line(root, tmp_path, capsys):
    from trainer.training.cli import main as train_main

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    line = _one_line(_prep(_flows(root, a_file)))
    assert str(a_file) in line and ("(EEXIST)" in line or "(ENOTDIR)" in line), line
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--out", str(a_file), "--shards", str(tmp_path / "nowhere")])
    assert exit_info.value.code == EXIT_BAD_INPUT
    assert a_file.read_text() == "not a folder"


def test_a_damaged_val_store_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "cityscapes_val"
    folder.mkdir()
    with ValWriter(folder / "val.h5") as writer:
        path = writer.commit()
    write_manifest(
        folder,
        {
            "name": "cityscapes_val",
            "kind": "val",
            "complete": True,
            "protocols": [],
            "shards": [{"name": "val.h5", "samples": 0, "bytes": path.stat().st_size, "sha256": file_sha256(path)}],
        },
    )
    ValStore(folder).close()
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(InputError, match=f"^{path}: .* bytes, the manifest says"):
        ValStore(folder)
    (folder / MANIFEST_NAME).unlink()
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(InputError, match=f"^{path}: not a readable HDF5 val store") as err:
        ValStore(folder)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def local_ray():
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, _temp_dir=temp)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def test_a_second_prep_run_on_a_locked_store_is_refused_with_one_line(root, tmp_path, capsys, local_ray):
    from pipeline.cli import main as prep_main

    store = tmp_path / "out" / "cityscapes_seq"
    store.mkdir(parents=True)
    with store_lock(store):  # a first run holds the store
        with pytest.raises(SystemExit) as exit_info:
            prep_main(_flows(root, tmp_path / "out"))
        assert exit_info.value.code == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.startswith(f"error: {store}: another i2vda-prep (pid {os.getpid()}) is writing this store")
        assert err.count("\n") == 1
    assert sorted(p.name for p in store.iterdir()) == [".lock"]  # the refused run wrote nothing
    assert prep_main(_flows(root, tmp_path / "out")) is None  # released: the next run builds it
    assert json.loads((store / MANIFEST_NAME).read_text())["complete"]


def test_a_checkpoint_save_killed_mid_write_is_cleaned_on_start(tmp_path):
    from test_train_loop import make_stores, tiny_config

    from trainer.training.loop import train

    stores = make_stores(tmp_path / "stores", shards=1, per_shard=2)
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    dead = checkpoints / "iter_0000001.pt.4194305.partial"  # above Linux's largest pid: no such writer runs
    live = checkpoints / f"iter_0000001.pt.{os.getppid()}.partial"  # a writer that still runs keeps its file
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    train(tiny_config(stores, tmp_path / "run", method="source_only", max_iter=1))
    assert not dead.exists() and live.exists()
    assert (checkpoints / "iter_0000001.pt").is_file()
