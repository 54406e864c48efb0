"""The Ray prep job end to end on tiny Cityscapes trees: content, crash + resume, a two-node cluster, bad input, val.

One local Ray instance (2 CPUs) serves the in-process runs; the crash and cluster tests run the CLI in subprocesses.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
from prep_trees import frame_path, label_path, write_cityscapes

from pipeline.flow.dis import DISEstimator
from pipeline.flow.viz import flow_key
from pipeline.job import run_shards, run_val
from pipeline.plan import PrepConfig
from pipeline.shards import TARGET_KIND, VAL_KIND, ValStore, check_manifest, file_sha256, read_manifest, read_samples
from pipeline.sources import TITLE_HEIGHT
from pipeline.sources.images import read_rgb

NATIVE_HW, STORE_WH = (160, 320), (256, 128)  # frames are shrunk (area interpolation) into the store
TRAIN = [("aachen", "000000", 14, 10, None), ("bochum", "000001", 3, 8, None)]
PAIR_FRAMES = [("aachen", "000000", f) for f in range(15, 24)] + [("bochum", "000001", f) for f in range(4, 11)]
PAIR_KEYS = [f"{c}_{s}_{f:06d}" for c, s, f in PAIR_FRAMES]
HALF_STEP_PX = 1 / 128  # the flow codec stores 1/64 px steps, rounded to nearest
RAY_BIN = str(Path(sys.executable).with_name("ray"))
PROCESS_GONE_S = 30  # how long Ray processes may take to notice their raylet died
FIRST_SHARD_S = 120  # how long the crash test waits for the first shard (Ray start + actor start)


def _short_tmp() -> str:
    return tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under 107 bytes


def _config(root, out, **kw) -> PrepConfig:
    return PrepConfig(
        **{
            "kind": TARGET_KIND,
            "src": "cityscapes_seq",
            "root": str(root),
            "out": str(out),
            "size_wh": STORE_WH,
            "samples_per_shard": 1,
            "workers": 2,
            **kw,
        }
    )


def _flows_args(root, out) -> list[str]:
    return [
        "flows",
        "--root",
        str(root),
        "--out",
        str(out),
        "--size",
        "256x128",
        "--samples-per-shard",
        "1",
        "--workers",
        "2",
    ]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1", **extra}


def _tars(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("*.tar"))}


def _without_timing(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in ("timing", "resumed_shards")}


@pytest.fixture(scope="module")
def local_ray():
    temp = _short_tmp()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, _temp_dir=temp)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def train_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_cityscapes(root, "train", TRAIN, NATIVE_HW, seed=1)
    return root


@pytest.fixture(scope="module")
def reference(train_root, local_ray, tmp_path_factory):
    """An uninterrupted local run: (store folder, manifest)."""
    out = tmp_path_factory.mktemp("reference")
    return out / "cityscapes_seq", run_shards(_config(train_root, out))


def _resized(root, city, seq, frame) -> np.ndarray:
    bgr = cv2.imread(str(frame_path(root, "train", city, seq, frame)))
    return np.ascontiguousarray(cv2.resize(bgr, STORE_WH, interpolation=cv2.INTER_AREA)[..., ::-1])


def test_every_pair_once_with_resized_frames_and_the_estimators_flows(train_root, reference):
    store, manifest = reference
    samples = list(read_samples(store))
    assert [s["__key__"] for s in samples] == PAIR_KEYS
    dis = DISEstimator("medium")
    for (city, seq, frame), sample in zip(PAIR_FRAMES, samples):
        frame0, frame1 = _resized(train_root, city, seq, frame - 1), _resized(train_root, city, seq, frame)
        assert np.array_equal(sample["frame0"], frame0) and np.array_equal(sample["frame1"], frame1)
        assert np.abs(sample["flow01"] - dis.flows(frame0, frame1)).max() <= HALF_STEP_PX + 1e-6
        assert np.abs(sample["flow10"] - dis.flows(frame1, frame0)).max() <= HALF_STEP_PX + 1e-6
        assert (
            sample["meta"]["source_paths"][1]
            == frame_path(train_root, "train", city, seq, frame).relative_to(train_root).as_posix()
        )
    on_disk = read_manifest(store)
    assert on_disk["complete"] and on_disk["num_samples"] == len(PAIR_KEYS) == on_disk["num_planned"]
    assert [e["name"] for e in on_disk["shards"]] == sorted(_tars(store))
    for entry in on_disk["shards"]:
        assert entry["sha256"] == file_sha256(store / entry["name"]) and entry["samples"] == 1
    assert _without_timing(on_disk) == _without_timing(manifest)


def _session_pids(session: int) -> list[int]:
    """Live (non-zombie) processes of a session, from /proc/<pid>/stat."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _wait_gone(session: int) -> list[int]:
    deadline = time.monotonic() + PROCESS_GONE_S
    while _session_pids(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _session_pids(session)
    _kill_session(session)  # clean up before failing the test
    return left


def test_the_builder_decodes_each_frame_once_across_shards(train_root, tmp_path, monkeypatch):
    import pipeline.build as build
    from pipeline.plan import plan_shards
    from pipeline.sources.cityscapes import list_pairs

    reads = []
    monkeypatch.setattr(build, "read_rgb", lambda path: reads.append(path) or read_rgb(path))
    config = _config(train_root, tmp_path, samples_per_shard=4)
    (tmp_path / "cityscapes_seq").mkdir()
    builder = build.Builder(config)
    for task in plan_shards(list_pairs(train_root, "train"), config.src, config.samples_per_shard):
        builder.shard(task)
    frames = {(c, s, f) for c, s, f in PAIR_FRAMES} | {(c, s, f - 1) for c, s, f in PAIR_FRAMES}
    assert sorted(reads) == sorted(str(frame_path(train_root, "train", *f)) for f in frames)  # 18 reads, not 32
    samples = list(read_samples(tmp_path / "cityscapes_seq"))
    assert [s["__key__"] for s in samples] == PAIR_KEYS
    dis = DISEstimator("medium")
    for (city, seq, frame), sample in zip(PAIR_FRAMES, samples):  # against frames read and resized here
        frame0, frame1 = _resized(train_root, city, seq, frame - 1), _resized(train_root, city, seq, frame)
        assert np.array_equal(sample["frame0"], frame0) and np.array_equal(sample["frame1"], frame1)
        assert np.abs(sample["flow01"] - dis.flows(frame0, frame1)).max() <= HALF_STEP_PX + 1e-6


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(train_root, reference, tmp_path):
    ref_store, ref_manifest = reference
    store = tmp_path / "cityscapes_seq"
    temp = _short_tmp()
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *_flows_args(train_root, tmp_path)],
        env=_env(RAY_TMPDIR=temp),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + FIRST_SHARD_S
        while not list(store.glob("*.tar")) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    finally:
        leaked = _wait_gone(job.pid)
        shutil.rmtree(temp, ignore_errors=True)
    assert not leaked, f"Ray processes outlived the killed job: {leaked}"
    partial = read_manifest(store)
    assert not partial["complete"], "the job finished before it was killed; the test needs a slower job"
    assert set(_tars(store)) < set(_tars(ref_store))
    resumed = run_shards(_config(train_root, tmp_path))
    assert resumed["resumed_shards"] == len(partial["shards"])
    assert _tars(store) == _tars(ref_store)
    assert _without_timing(read_manifest(store)) == _without_timing(ref_manifest)
    assert not list(store.glob("*.partial"))


@pytest.fixture
def two_node_cluster():
    """A head and a second node started with `ray start`, each in its own session; yields the address."""
    temp = _short_tmp()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(RAY_TMPDIR=temp)
    common = ["--num-cpus=1", "--disable-usage-stats"]
    sessions = []
    try:
        for args in (["--head", f"--port={port}", "--include-dashboard=false"], [f"--address=127.0.0.1:{port}"]):
            starter = subprocess.Popen(
                [RAY_BIN, "start", *args, *common],
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            sessions.append(starter.pid)
            _, err = starter.communicate(timeout=120)
            assert starter.returncode == 0, err.decode()[-2000:]
        yield f"127.0.0.1:{port}", temp
    finally:
        # `ray stop --force` would also stop every other Ray instance on this machine (this module's own, other
        # users'); the cluster's processes are exactly those of the two sessions its `ray start` calls opened.
        for session in sessions:
            _kill_session(session)
        shutil.rmtree(temp, ignore_errors=True)


def _kill_session(session: int) -> None:
    for pid in _session_pids(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_same_command_on_a_two_node_cluster_writes_the_same_shards(
    train_root, reference, two_node_cluster, tmp_path
):
    address, temp = two_node_cluster
    sessions_before = sorted((Path(temp) / "ray").glob("session_2*"))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *_flows_args(train_root, tmp_path)],
        env=_env(RAY_ADDRESS=address, RAY_TMPDIR=temp),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted((Path(temp) / "ray").glob("session_2*")) == sessions_before  # joined, started no Ray of its own
    assert _tars(tmp_path / "cityscapes_seq") == _tars(reference[0])


def _broken_tree(train_root, tmp_path) -> tuple[Path, Path, Path]:
    """The train tree with one truncated PNG (bochum 5) and one frame of another size (aachen 20)."""
    root = tmp_path / "broken"
    shutil.copytree(train_root, root)
    truncated = frame_path(root, "train", "bochum", "000001", 5)
    truncated.write_bytes(truncated.read_bytes()[:500])
    resized = frame_path(root, "train", "aachen", "000000", 20)
    cv2.imwrite(str(resized), cv2.resize(cv2.imread(str(resized)), (NATIVE_HW[1] // 2, NATIVE_HW[0] // 2)))
    return root, truncated, resized


def _run_cli(args, capsys) -> tuple[int, str]:
    """Exit code and stderr of `i2vda-prep ARGS` run in this process (stdout stays in capsys)."""
    from pipeline.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    print(captured.out, end="")
    return code, captured.err


def test_bad_files_fail_with_one_line_or_are_skipped_and_listed(train_root, local_ray, tmp_path, capsys):
    root, truncated, resized = _broken_tree(train_root, tmp_path)
    code, err = _run_cli(_flows_args(root, tmp_path / "fail"), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert str(truncated) in lines[0] or str(resized) in lines[0]
    store = tmp_path / "fail" / "cityscapes_seq"
    assert not list(store.glob("*.partial")) and not read_manifest(store)["complete"]
    for entry in read_manifest(store)["shards"]:
        assert file_sha256(store / entry["name"]) == entry["sha256"]
    # No half shard: every file under a shard name is whole (a worker may finish one the manifest did not record).
    whole = {p.name: list(read_samples(p)) for p in store.glob("*.tar")}
    assert all(len(samples) == 1 for samples in whole.values())
    code, err = _run_cli([*_flows_args(root, tmp_path / "skip"), "--on-error", "skip"], capsys)
    assert code == 0, err
    manifest = read_manifest(tmp_path / "skip" / "cityscapes_seq")
    skipped = {(s["key"], s["path"]) for s in manifest["skipped"]}
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    after_resized = frame_path(root, "train", "aachen", "000000", 21)  # the pair (20, 21) names its second frame
    assert skipped == {
        ("bochum_000001_000005", rel(truncated)),
        ("bochum_000001_000006", rel(truncated)),
        ("aachen_000000_000020", rel(resized)),
        ("aachen_000000_000021", rel(after_resized)),
    }
    assert all(str(resized) in s["reason"] for s in manifest["skipped"] if s["key"].startswith("aachen"))
    assert manifest["complete"] and manifest["num_samples"] == len(PAIR_KEYS) - 4
    keys = [s["__key__"] for s in read_samples(tmp_path / "skip" / "cityscapes_seq")]
    assert keys == [k for k in PAIR_KEYS if k not in {key for key, _ in skipped}]


def test_compressed_frames_hold_the_same_pixels_in_fewer_bytes_and_cannot_resume_a_stored_store(
    train_root, reference, local_ray, tmp_path, capsys
):
    store, _ = reference
    code, err = _run_cli([*_flows_args(train_root, tmp_path / "small"), "--frames", "compressed"], capsys)
    assert code == 0, err
    small = tmp_path / "small" / "cityscapes_seq"
    assert read_manifest(small)["config"]["frames"] == "compressed"
    assert read_manifest(store)["config"]["frames"] == "stored"
    for a, b in zip(read_samples(store), read_samples(small), strict=True):
        assert a["__key__"] == b["__key__"] and all(np.array_equal(a[k], b[k]) for k in ("frame0", "frame1", "flow01"))
    assert sum(p.stat().st_size for p in small.glob("*.tar")) < sum(p.stat().st_size for p in store.glob("*.tar"))
    shutil.copytree(store, tmp_path / "copy" / "cityscapes_seq")
    before = _tars(tmp_path / "copy" / "cityscapes_seq")
    code, err = _run_cli([*_flows_args(train_root, tmp_path / "copy"), "--frames", "compressed"], capsys)
    assert code == 2 and err.count("\n") == 1 and "frames='stored' (now 'compressed')" in err
    assert _tars(tmp_path / "copy" / "cityscapes_seq") == before
    code, err = _run_cli([*_flows_args(train_root, tmp_path / "bad"), "--frames", "jpeg"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--frames jpeg" in err


def test_a_wrong_root_is_one_line(tmp_path, capsys):
    for root in (tmp_path / "nowhere", tmp_path):
        code, err = _run_cli(_flows_args(root, tmp_path / "out"), capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and str(root) in err


@pytest.mark.parametrize("size", ["1x1", "8x64", "0x0", "64"])
def test_a_size_too_small_for_the_flow_is_one_line(tmp_path, capsys, size):
    code, err = _run_cli(["flows", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--size", size], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: --size {size}: ")
    assert not (tmp_path / "out").exists()


def test_val_command_compresses_frames_by_default_with_the_same_pixels(local_ray, tmp_path, capsys):
    root = tmp_path / "cs"
    write_cityscapes(root, "val", [("lindau", "000003", 10, 4, 13)], (48, 96), seed=5)
    code, err = _run_cli(
        ["val", "--root", str(root), "--out", str(tmp_path / "cli"), "--size", "64x32", "--workers", "1"], capsys
    )
    assert code == 0, err
    assert read_manifest(tmp_path / "cli" / "cityscapes_val")["config"]["frames"] == "compressed"
    stored = PrepConfig(
        kind=VAL_KIND,
        src="cityscapes_val",
        root=str(root),
        out=str(tmp_path / "api"),
        size_wh=(64, 32),
        split="val",
        workers=1,
    )
    run_val(stored)
    a = ValStore(tmp_path / "cli" / "cityscapes_val").sample("lindau_000003_000013")
    b = ValStore(tmp_path / "api" / "cityscapes_val").sample("lindau_000003_000013")
    assert np.array_equal(a["clip"], b["clip"]) and np.array_equal(a["clip_flows"], b["clip_flows"])


def test_val_job_writes_every_annotated_frame_with_its_clip(local_ray, tmp_path):
    root = tmp_path / "cs"
    write_cityscapes(root, "val", [("lindau", "000003", 10, 6, 13), ("munster", "000007", 0, 4, 2)], (48, 96), seed=4)
    config = PrepConfig(
        kind=VAL_KIND, src="cityscapes_val", root=str(root), out=str(tmp_path), size_wh=(64, 32), split="val", workers=2
    )
    manifest = run_val(config)
    stamp = (tmp_path / "cityscapes_val" / "val.h5").stat().st_mtime_ns
    assert run_val(config)["resumed_shards"] == 1  # complete and verified: nothing redone
    assert (tmp_path / "cityscapes_val" / "val.h5").stat().st_mtime_ns == stamp
    store = ValStore(tmp_path / "cityscapes_val")
    assert store.keys() == ["lindau_000003_000013", "munster_000007_000002"] and manifest["num_samples"] == 2
    assert manifest["shards"][0]["sha256"] == file_sha256(tmp_path / "cityscapes_val" / "val.h5")
    sample = store.sample("munster_000007_000002")
    assert sample["frames"] == [0, 1, 2, 3] and sample["annotated_index"] == 2 and sample["clip_flows"].shape[0] == 3
    label_ids = cv2.imread(str(label_path(root, "val", "munster", "000007", 2)), cv2.IMREAD_UNCHANGED)
    road, sky = label_ids == 7, label_ids == 23  # Cityscapes labelIds of road and sky: viper15 train ids 0 and 8
    assert (sample["labels"]["viper15"][road] == 0).all() and (sample["labels"]["viper15"][sky] == 8).all()
    assert (sample["labels"]["viper15"][label_ids == 0] == 255).all()


SYNTHIA11_IDS = {3: 0, 4: 1, 2: 2, 7: 3, 15: 4, 9: 5, 6: 6, 1: 7, 10: 8, 11: 9, 8: 10}  # reference §2.2, fence ignored


def test_source_store_holds_resized_images_and_protocol_labels(local_ray, tmp_path, capsys):
    from pipeline.world.world import WorldConfig, write_world

    tiny = WorldConfig(
        target_size_wh=(64, 32),
        viper_size_wh=(64, 32),
        synthia_size_wh=(64, 32),
        train_snippets=1,
        val_snippets=1,
        snippet_frames=3,
        annotated_index=2,
        viper_sequences=1,
        viper_frames=3,
        synthia_frames=3,
    )
    write_world(tmp_path / "world", seed=0, config=tiny)
    root = tmp_path / "world" / "synthia" / "SYNTHIA-SEQS-04-DAWN"
    code, err = _run_cli(
        [
            "source",
            "--src",
            "synthia",
            "--root",
            str(root),
            "--out",
            str(tmp_path / "stores"),
            "--size",
            "32x16",
            "--workers",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    check_manifest(tmp_path / "stores" / "synthia", kind="source", protocol="synthia11", size_wh=(32, 16))
    samples = list(read_samples(tmp_path / "stores" / "synthia"))
    assert [s["__key__"] for s in samples] == ["synthia_000000", "synthia_000001", "synthia_000002"]
    for i, sample in enumerate(samples):
        bgr = cv2.imread(str(root / "RGB" / "Stereo_Left" / "Omni_F" / f"{i:06d}.png"))
        assert np.array_equal(sample["image"], cv2.resize(bgr, (32, 16), interpolation=cv2.INTER_AREA)[..., ::-1])
        raw = cv2.imread(str(root / "GT" / "LABELS" / "Stereo_Left" / "Omni_F" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        train_ids = np.vectorize(lambda v: SYNTHIA11_IDS.get(int(v), 255))(raw[:, :, 2]).astype(np.uint8)  # R
        expected = cv2.resize(train_ids, (32, 16), interpolation=cv2.INTER_NEAREST_EXACT)
        assert sample["label"].dtype == np.uint8 and np.array_equal(sample["label"], expected)
        assert sample["meta"]["protocol"] == "synthia11"
    code, err = _run_cli(["inspect", str(tmp_path / "stores" / "synthia"), "--sheet", str(tmp_path / "s.png")], capsys)
    assert code == 0, err
    height, width, _ = cv2.imread(str(tmp_path / "s.png")).shape  # titles, image | coloured label, 3 rows, legend
    assert width == 2 * 320 and height > TITLE_HEIGHT + 3 * 160


def test_inspect_describes_a_store_and_draws_its_sheet(reference, tmp_path, capsys):
    store, _ = reference
    sheet_path = tmp_path / "sheet.png"
    code, err = _run_cli(["inspect", str(store), "--sheet", str(sheet_path), "--rows", "3", "--verify"], capsys)
    out = capsys.readouterr().out
    assert code == 0, err
    assert f"{len(PAIR_KEYS)} of {len(PAIR_KEYS)} planned" in out and "all files match" in out and "dis" in out
    assert "codec      zstd-dx16x64" in out and "frames     stored PNG" in out
    sheet = cv2.imread(str(sheet_path))[..., ::-1]
    tile_wh = (320, 160)  # STORE_WH scaled to the sheet's 320-pixel columns
    # Titles over 3 pairs (frame0, frame1, flow01, flow10) spread over the store: PAIR_KEYS 2, 8 and 13; the key of
    # the flow colours below.
    assert sheet.shape == (TITLE_HEIGHT + 3 * tile_wh[1] + flow_key(4 * tile_wh[0]).shape[0], 4 * tile_wh[0], 3)
    first = next(s for s in read_samples(store) if s["__key__"] == PAIR_KEYS[2])
    assert np.array_equal(
        sheet[TITLE_HEIGHT : TITLE_HEIGHT + tile_wh[1], : tile_wh[0]],
        cv2.resize(first["frame0"], tile_wh, interpolation=cv2.INTER_AREA),
    )
