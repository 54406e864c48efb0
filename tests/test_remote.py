"""`--shards URL`: stores streamed from a real HTTP server on 127.0.0.1 (and through `pipe:`) train exactly as the
local folder does; transient failures are retried and resumed, lasting ones end with one `error:` line."""

from __future__ import annotations

import shutil
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from test_train_loop import SOURCE, TARGET, load, make_stores, tiny_config

from pipeline.errors import EXIT_BAD_INPUT, InputError
from pipeline.shards import open_store, raw_items, read_manifest, store_location
from pipeline.shards.remote import BACKOFF_ENV, RETRIES_ENV, TIMEOUT_ENV
from trainer.training.cli import main
from trainer.training.loop import train

RETRIES = 2
MAX_ITER = 4
TAR_END_BLOCKS_BYTES = 1024  # a tar ends in two zero blocks: flipping a byte there changes only the file's sha256


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch, one_thread):
    monkeypatch.setenv(RETRIES_ENV, str(RETRIES))
    monkeypatch.setenv(BACKOFF_ENV, "0.01")
    monkeypatch.setenv(TIMEOUT_ENV, "10")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    return make_stores(tmp_path_factory.mktemp("stores"), shards=3, per_shard=4)


class Server:
    """Python's http.server on 127.0.0.1 serving `folder`, recording request paths; faults to inject per file name:
    `fail[name]` answers 503 that many times, `cut[name]` sends half the body and drops the connection that many
    times; `ranges` answers Range requests with 206 (plain http.server ignores them); `stop_after` shard requests, the
    server closes its socket (connections are then refused)."""

    def __init__(self, folder: Path, port: int = 0, ranges: bool = False, stop_after: int | None = None):
        self.folder, self.ranges, self.stop_after = folder, ranges, stop_after
        self.requests: list[str] = []
        self.fail: dict[str, int] = {}
        self.cut: dict[str, int] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(_Handler, self, directory=str(folder)))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def take(self, faults: dict, name: str) -> bool:
        if faults.get(name, 0) > 0:
            faults[name] -= 1
            return True
        return False

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, server_state: Server, *args, **kwargs):
        self.state = server_state
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        state, name = self.state, self.path.rsplit("/", 1)[-1]
        state.requests.append(self.path)
        shards = sum(r.endswith(".tar") for r in state.requests)
        if state.stop_after is not None and shards > state.stop_after:
            threading.Thread(target=state.stop, daemon=True).start()
            self.close_connection = True
            return
        if state.take(state.fail, name):
            self.send_error(503, "Service Unavailable")
            return
        path = state.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "File not found")
            return
        data, start = path.read_bytes(), 0
        ranged = self.headers.get("Range", "")
        if state.ranges and ranged.startswith("bytes="):
            start = int(ranged[len("bytes=") :].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if state.take(state.cut, name):
            self.wfile.write(data[start : start + (len(data) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data[start:])


@pytest.fixture
def server(stores):
    served = Server(stores)
    yield served
    served.stop()


def _tensors(checkpoint: Path) -> dict:
    state = load(checkpoint)
    return {f"{part}/{k}": v for part in ("model", "disc", "proxy") for k, v in state[part].items()}


def _same_weights(a: Path, b: Path) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _final(run: Path) -> Path:
    return run / "checkpoints" / f"iter_{MAX_ITER:07d}.pt"


@pytest.fixture(scope="module")
def local_run(stores, tmp_path_factory) -> Path:
    """The reference: the same run from the local folder, on one torch thread as every run here."""
    run = tmp_path_factory.mktemp("local") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny_config(stores, run, **_settings()))
    finally:
        torch.set_num_threads(threads)
    return run


def _settings(**extra) -> dict:
    return dict(max_iter=MAX_ITER, batch_size=2, iter_copy=2, iter_launch=2, delta=1.0, checkpoint_interval=1, **extra)


def test_runs_from_a_url_and_a_pipe_end_with_the_weights_of_the_local_run(stores, server, local_run, tmp_path):
    train(tiny_config(server.url, tmp_path / "http", **_settings(num_workers=2)))  # DataLoader workers stream too
    assert server.requests[:2] == [f"/{SOURCE}/manifest.json", f"/{TARGET}/manifest.json"]  # manifests first
    assert {r for r in server.requests if r.endswith(".tar")} and all(_same_local(r, stores) for r in server.requests)
    train(tiny_config(f"pipe:cat {stores}/{{}}", tmp_path / "pipe", **_settings()))
    for run in ("http", "pipe"):
        assert _same_weights(_final(local_run), _final(tmp_path / run)), run


def _same_local(request: str, stores: Path) -> bool:
    return (stores / request.lstrip("/")).is_file()


@pytest.mark.parametrize("ranges", [False, True])
def test_transient_failures_are_retried_and_reading_goes_on_where_it_stopped(stores, capsys, ranges):
    served = Server(stores, ranges=ranges)
    try:
        info = open_store(store_location(served.url) / TARGET)
        entry = info.shards[1]
        served.fail[entry.path.name] = 1  # 503 on the first request
        served.cut[entry.path.name] = 1  # then half the file and a dropped connection
        remote = list(raw_items(entry.path, entry))  # checked against the manifest: size, count, sha256
    finally:
        served.stop()
    local = list(raw_items(stores / TARGET / entry.path.name))
    assert [{k: v for k, v in s.items() if k != "__url__"} for s in remote] == [
        {k: v for k, v in s.items() if k != "__url__"} for s in local
    ]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith(f"warning: {entry.path}: ") for w in warnings)
    assert "HTTP 503" in warnings[0]
    ranged = [r for r in served.requests if r.endswith(entry.path.name)]
    assert len(ranged) == 3  # the 503, the cut transfer, the rest (a Range request, or the whole file skipped)


def test_a_server_that_keeps_failing_gives_up_after_the_retries_naming_the_url(stores, capsys):
    served = Server(stores)
    served.fail["manifest.json"] = RETRIES + 1
    try:
        with pytest.raises(InputError, match=rf"{served.url}{TARGET}/manifest.json: HTTP 503 .*gave up after 3 tries"):
            read_manifest(store_location(served.url) / TARGET)
        with pytest.raises(InputError, match="no store manifest at this URL"):
            read_manifest(store_location(served.url) / "nowhere")  # a 404 is not retried
    finally:
        served.stop()
    assert len(capsys.readouterr().err.strip().splitlines()) == RETRIES
    with pytest.raises(InputError, match="one {} where the file's path"):
        store_location("pipe:cat stores/viper/manifest.json")


def _cli_fails(capsys, args: list[str]) -> list[str]:
    """Run i2vda-train in-process: exit 2, `warning:` lines (retries) and then exactly one `error:` line."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and all(line.startswith("warning: ") for line in lines[:-1])
    return lines


def _cli_args(shards: str, out: Path, *extra: str, max_iter: int = MAX_ITER) -> list[str]:
    return [
        *("--out", str(out), "--shards", shards, "--source", SOURCE, "--target", TARGET, "--arch", "deeplab_tiny"),
        *("--device", "cpu", "--num-workers", "0", "--shuffle-buffer", "4", "--block-iters", "4", "--lr", "1e-3"),
        *("--max-iter", str(max_iter), "--batch-size", "2", "--iter-copy", "2", "--iter-launch", "2"),
        *("--delta", "1.0", "--checkpoint-interval", "1", "--log-interval", "1", *extra),
    ]


@pytest.mark.parametrize("damage", ["one byte changed", "cut short"])
def test_a_damaged_shard_on_the_server_stops_with_one_line(stores, tmp_path, capsys, damage):
    damaged = tmp_path / "stores"
    shutil.copytree(stores, damaged)
    for shard in (damaged / TARGET).glob("*.tar"):
        data = bytearray(shard.read_bytes())
        if damage == "one byte changed":  # in the tar's end blocks: the same size, only the sha256 can tell
            data[-TAR_END_BLOCKS_BYTES // 2] ^= 0xFF
        else:  # the end blocks missing: the server's Content-Length differs from the manifest
            del data[-TAR_END_BLOCKS_BYTES:]
        shard.write_bytes(bytes(data))
    served = Server(damaged)
    try:
        lines = _cli_fails(capsys, _cli_args(served.url, tmp_path / "run", max_iter=1000))
    finally:
        served.stop()
    assert len(lines) == 1 and f"error: {served.url}{TARGET}/{TARGET}-00000" in lines[0]
    assert ("its sha256 differs" if damage == "one byte changed" else "bytes, the manifest says") in lines[0]


def test_a_server_stopped_mid_run_gives_the_retries_then_one_line_and_resume_finishes(
    stores, local_run, tmp_path, capsys
):
    served = Server(stores, stop_after=5)
    run = tmp_path / "run"
    lines = _cli_fails(capsys, _cli_args(served.url, run))
    assert len(lines) == RETRIES + 1 and "gave up after 3 tries" in lines[-1] and served.url in lines[-1]
    done = sorted((run / "checkpoints").glob("iter_*.pt"))
    assert 0 < len(done) < MAX_ITER
    restarted = Server(stores, port=served.port)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(_cli_args(restarted.url, run, "--resume", "latest"))
        assert exit_info.value.code == 0
    finally:
        restarted.stop()
    assert _same_weights(_final(local_run), _final(run))  # resumed exactly where the stop left it


def test_a_val_store_at_a_url_is_refused_with_one_line(stores, server, tmp_path, capsys):
    line = _cli_fails(capsys, _cli_args(server.url, tmp_path / "run", "--val", f"{server.url}cityscapes_val"))[-1]
    assert "the val store is one HDF5 file" in line


def test_identity_of_a_store_does_not_depend_on_where_it_lies(stores, server):
    assert open_store(store_location(server.url) / TARGET).identity() == open_store(stores / TARGET).identity()
