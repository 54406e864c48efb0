"""Hostile stores for the reliability tests, the fuzz test and `bench/bench_hostile.py`, made from a clean tiny store:
members whose headers declare sizes far beyond the store's (flow codec header, zstd frame, PNG IHDR), tar headers of
other member types or sizes, compressed shards, edited manifests. After each edit the manifest's entry is updated to
the new file's bytes and sha256, as a hostile store's would be (its sizes and sha256 match, so only reading tells).

`run_limited` runs a command in a subprocess under an address-space limit and reports its peak resident memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import zstandard
from test_train_loop import SHIFT_XY, SOURCE, TARGET, _blocks, make_stores

from pipeline.shards import (
    MANIFEST_NAME,
    RUN_LAYOUT,
    VAL_FILE,
    RunEncoder,
    ValWriter,
    encode_val_item,
    shard_name,
    write_manifest,
    write_shard,
)

REPO = Path(__file__).resolve().parents[1]
SIZE_HW = (64, 128)  # the 128x64 store
BLOCK = 512  # tar block
CHUNK = 1 << 20  # bytes per write when a bomb is streamed out
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLOW_HEADER = struct.Struct("<4sB3xII")  # as pipeline/flow/codec.py writes it
VAL_KEYS = ("aachen_000000_000019", "bochum_000001_000019")
VAL_CLIP = 3  # frames per val clip


def clean_stores(root: Path, size_hw=SIZE_HW, per_shard: int = 4, layout: int = 2) -> Path:
    """root/src and root/tgt (one shard each, `per_shard` samples of `size_hw`) as tests/test_train_loop.py makes
    them; with `layout` 3 the target shard holds its pairs as two runs of consecutive frames instead, as
    `i2vda-prep flows` writes them (`pipeline.shards.runs`); -> root."""
    make_stores(root, shards=1, per_shard=per_shard, size_hw=size_hw)
    if layout == 3:
        rng = np.random.default_rng(1)
        flow_01 = np.broadcast_to(np.array(SHIFT_XY, np.float32).reshape(2, 1, 1), (2, *size_hw)).copy()
        runs = []
        for r in range(2):
            frame = _blocks(rng, size_hw)[0]
            run = RunEncoder(frame)
            for j in range(per_shard // 2):
                frame = np.roll(frame, SHIFT_XY[::-1], axis=(0, 1))
                run.add(f"r{r}_{j}", frame, flow_01, -flow_01, {})
            runs.append(run.sample())
        target = root / TARGET
        entry = write_shard(target / shard_name(TARGET, 0), runs)
        pairs = 2 * (per_shard // 2)
        edit_manifest(
            root,
            TARGET,
            lambda m: m.update(layout=RUN_LAYOUT, num_pairs=pairs, shards=[{**entry, "pairs": pairs, "skipped": []}]),
        )
    return root


def shard_path(stores: Path, store: str, index: int = 0) -> Path:
    return stores / store / shard_name(store, index)


def read_members(shard: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member of a trusted (clean) tar, in order."""
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def tar_bytes(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """A plain ustar archive of regular files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _number(value: int, width: int) -> bytes:
    """A tar header number field: octal, or GNU base-256 when it does not fit."""
    if value < 8 ** (width - 1):
        return f"{value:0{width - 1}o}".encode() + b"\0"
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def tar_header(name: str, size: int, typeflag: bytes = b"0", linkname: str = "", gnu_sparse=None) -> bytes:
    """One 512-byte header with a correct checksum. `gnu_sparse` = (realsize, [(offset, numbytes), ...]) makes an
    old-GNU sparse member (typeflag "S"): `size` bytes of data standing for `realsize` bytes."""
    block = bytearray(BLOCK)
    block[0:100] = name.encode().ljust(100, b"\0")[:100]
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = _number(size, 12)
    block[136:148] = b"00000000000\0"
    block[156:157] = typeflag
    block[157:257] = linkname.encode().ljust(100, b"\0")[:100]
    if gnu_sparse is None:
        block[257:265] = b"ustar\x0000"
    else:
        realsize, pieces = gnu_sparse
        block[257:265] = b"ustar  \0"
        for i, (offset, numbytes) in enumerate(pieces[:4]):
            block[386 + 24 * i : 398 + 24 * i] = _number(offset, 12)
            block[398 + 24 * i : 410 + 24 * i] = _number(numbytes, 12)
        block[483:495] = _number(realsize, 12)
    block[148:156] = b"        "
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def tar_member(name: str, data: bytes, **header) -> bytes:
    """Header and data blocks of one member."""
    return tar_header(name, len(data), **header) + data + bytes(-len(data) % BLOCK)


TAR_END = bytes(2 * BLOCK)


def update_manifest(stores: Path, store: str, index: int = 0) -> None:
    """Make the manifest's entry of shard `index` match the file now there (bytes, sha256)."""
    path = stores / store / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    entry = manifest["shards"][index]
    shard = stores / store / entry["name"]
    entry["bytes"] = shard.stat().st_size
    entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))


def replace_shard(stores: Path, store: str, chunks: bytes | Iterable[bytes], index: int = 0) -> Path:
    """Write new bytes (or chunks of them) as shard `index` and update the manifest to match; -> the shard."""
    shard = shard_path(stores, store, index)
    with open(shard, "wb") as f:
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            f.write(chunk)
    update_manifest(stores, store, index)
    return shard


def with_member(stores: Path, store: str, field: str, data: bytes | None, sample: int = 0) -> Path:
    """Shard 0 with member `<key>.<field>` of its `sample`-th sample replaced by `data` (None: removed)."""
    entries, keys = [], []
    for name, blob in read_members(shard_path(stores, store)):
        key, member = name.split(".", 1)
        keys += [key] if key not in keys else []
        if len(keys) == sample + 1 and member == field:  # a member of the `sample`-th key
            if data is None:
                continue
            blob = data
        entries.append((name, blob))
    return replace_shard(stores, store, tar_bytes(entries))


def edit_manifest(stores: Path, store: str, edit: Callable[[dict], object]) -> None:
    """Apply `edit` to the store's manifest dict in place and write it back."""
    path = stores / store / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


# Members whose headers lie.


def flow_bytes(width: int, height: int, payload_px: int | None = None) -> bytes:
    """A zstd-dx16x64 flow member declaring `width` x `height`: a real zstd frame of zeros (a zero flow) that really
    decompresses to 4 * width * height bytes, streamed (a 1 GiB frame takes ~32 KB); or, given `payload_px`, one
    holding that many pixels' bytes (a header that lies about its frame)."""
    raw = 4 * (width * height if payload_px is None else payload_px)
    out = io.BytesIO()
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=True, write_checksum=True)
    with compressor.stream_writer(out, size=raw, closefd=False) as writer:
        zeros = bytes(min(raw, CHUNK))
        for start in range(0, raw, CHUNK):
            writer.write(zeros[: min(CHUNK, raw - start)])
    return FLOW_HEADER.pack(b"I2VF", 1, height, width) + out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int, height: int, depth: int = 8, colour: int = 2, rows: int | None = None) -> bytes:
    """A PNG declaring `width` x `height` whose IDAT holds `rows` zero rows (default all: a real image of that
    size, zlib level 1, streamed); `rows=0` gives a header with an empty picture."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = bytes(1 + width * channels * depth // 8)
    compressor = zlib.compressobj(1)
    data = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def gzip_tar_chunks(name: str, member_bytes: int) -> Iterable[bytes]:
    """A gzipped tar of one member of `member_bytes` zeros, streamed (1 GiB makes ~1 MB)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    yield compressor.compress(tar_header(name, member_bytes))
    zeros = bytes(CHUNK)
    for start in range(0, member_bytes, CHUNK):
        yield compressor.compress(zeros[: min(CHUNK, member_bytes - start)])
    yield compressor.compress(bytes(-member_bytes % BLOCK) + TAR_END) + compressor.flush()


def sparse_tar(name: str, realsize: int, data_bytes: int = 420_000) -> bytes:
    """A tar of one old-GNU sparse member: `data_bytes` of data declaring `realsize` bytes (the rest holes)."""
    data = bytes(data_bytes)
    header = tar_header(name, len(data), typeflag=b"S", gnu_sparse=(realsize, [(0, len(data))]))
    return header + data + bytes(-len(data) % BLOCK) + TAR_END


# A val store and a checkpoint to score on it.


def val_store(folder: Path, size_hw=SIZE_HW, seed: int = 0, flow: bytes | None = None) -> Path:
    """A val store of two annotated frames with 3-frame clips and viper15 labels at `size_hw`; `flow` replaces the
    first clip's first flow (a hostile member). The manifest records the size and the file's bytes and sha256."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    with ValWriter(folder / VAL_FILE) as writer:
        for i, key in enumerate(VAL_KEYS):
            clip = rng.integers(0, 256, (VAL_CLIP, *size_hw, 3), dtype=np.uint8)
            flows = rng.uniform(-3, 3, (VAL_CLIP - 1, 2, *size_hw)).astype(np.float32)
            label = rng.integers(0, 15, size_hw).astype(np.uint8)
            item = encode_val_item(key, clip, flows, {"viper15": label}, range(17, 17 + VAL_CLIP), VAL_CLIP - 1, {})
            if flow is not None and i == 0:
                item["clip_flows"][0] = np.frombuffer(flow, np.uint8)
            writer.add(item)
        writer.commit()
    data = (folder / VAL_FILE).read_bytes()
    entry = {"name": VAL_FILE, "samples": len(VAL_KEYS), "bytes": len(data)}
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    manifest = {"name": "cityscapes_val", "kind": "val", "complete": True, "size_wh": [size_hw[1], size_hw[0]]}
    write_manifest(folder, {**manifest, "protocols": ["viper15"], "num_samples": len(VAL_KEYS), "shards": [entry]})
    return folder


def update_val_manifest(folder: Path) -> None:
    """Make the val store's manifest entry match val.h5 as it now is (bytes, sha256)."""
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    data = (folder / VAL_FILE).read_bytes()
    manifest["shards"][0] |= {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    path.write_text(json.dumps(manifest))


def segmenter_checkpoint(path: Path, size_hw=SIZE_HW) -> Path:
    """A deeplab_tiny viper15 checkpoint (random weights) that i2vda-eval reads, trained at `size_hw`."""
    from trainer.models import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter("deeplab_tiny", 15)
    config = {"arch": "deeplab_tiny", "num_classes": 15, "protocol": "viper15", "target_size_hw": list(size_hw)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": config, "iteration": 1}, path)
    return path


# Running a tool under a memory limit.


def train_args(stores: Path, run: Path, workers: int = 0, *more: str) -> list[str]:
    """i2vda-train on the tiny stores: source-only deeplab_tiny on the CPU, 2 iterations, a checkpoint at the end."""
    flags = {"--out": run, "--shards": stores, "--source": SOURCE, "--target": TARGET, "--arch": "deeplab_tiny"}
    flags |= {"--method": "source_only", "--device": "cpu", "--max-iter": 2, "--num-workers": workers}
    flags |= {"--shuffle-buffer": 4, "--block-iters": 2, "--log-interval": 1}
    return [str(v) for pair in flags.items() for v in pair] + list(more)


@dataclasses.dataclass
class Outcome:
    """How a limited run ended: exit status (negative: killed by that signal), output, peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mib: float
    timed_out: bool = False

    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def _limits(address_space_bytes: int | None):
    def apply() -> None:
        if address_space_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_limited(
    argv: list[str], address_space_bytes: int | None = None, timeout_s: float = 120, env: dict | None = None, cwd=REPO
) -> Outcome:
    """Run `argv` with an address-space limit (RLIMIT_AS) and a time limit; -> its Outcome (peak RSS from wait4:
    the process's own high-water mark, not its children's)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **(env or {})}
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limits(address_space_bytes),
    )
    captured: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda name=name, pipe=pipe: captured.__setitem__(name, pipe.read()))
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return Outcome(
        proc.returncode,
        captured["out"].decode(errors="replace"),
        captured["err"].decode(errors="replace"),
        usage.ru_maxrss / 1024,
        timed_out,
    )


def tool(module: str, *args: str) -> list[str]:
    """argv of one of our entry points run as `python -m module`."""
    return [sys.executable, "-m", module, *args]


# Running an entry point in a forked child: no import cost, the same limits.


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def warm_up() -> None:
    """Import in this process what a training run imports lazily (TensorBoard, the optimiser's torch._dynamo, the
    evaluation code), so that forked children start in a fraction of a second instead of seconds."""
    import torch.utils.tensorboard  # noqa: F401

    import trainer.evaluation.evaluate  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


@dataclasses.dataclass
class _Child:
    pid: int
    folder: Path
    deadline: float


def _child(main: Callable, args: list[str], folder: Path, headroom_bytes: int, setup: Callable | None) -> None:
    """The forked child: `setup()`, limit, reset the memory high-water mark, run `main(args)` with stdout and stderr
    in files, record the peak; never returns."""
    import traceback

    code = 1
    try:
        # One intra-op thread: the parent may have run OpenMP regions with more, whose threads do not exist here.
        torch.set_num_threads(1)
        if setup is not None:
            setup()
        limit = _vm_kib("VmSize") * 1024 + headroom_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        start_kib = _vm_kib("VmRSS")
        sys.stdout.flush()
        sys.stderr.flush()
        streams = []
        for fd, name in ((1, "out"), (2, "err")):  # native writes (fd) and Python's (sys.stdout: pytest swaps it)
            os.dup2(os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND), fd)
            streams.append(open(fd, "w", buffering=1, closefd=False))
        sys.stdout, sys.stderr = streams
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        (folder / "peak").write_text(str(_vm_kib("VmHWM") - start_kib))
    finally:
        os._exit(code)


def forked_many(jobs, parallel: int = 2, headroom_bytes: int = 1 << 30, timeout_s: float = 120) -> list[Outcome]:
    """Run each job (main, args) or (main, args, setup) in a forked child, `parallel` at a time, whose address space
    may grow by at most `headroom_bytes` over this process's (RLIMIT_AS) and which is killed after `timeout_s`; `setup`
    runs in the child first. -> one Outcome per job, in order: exit status, stdout, stderr and the child's peak
    resident memory above what it had at the fork (VmHWM, reset at its start). A bomb that the code under test decoded
    would end as a MemoryError (a traceback) or a kill, never as an exhausted machine. Forked from the main thread
    only: no other thread runs at a fork."""
    import tempfile
    import time

    jobs = list(jobs)
    outcomes: list[Outcome | None] = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="forked_") as tmp:
        running: dict[int, tuple[int, _Child]] = {}
        todo = iter(enumerate(jobs))
        while True:
            while len(running) < parallel and (job := next(todo, None)) is not None:
                index, (main, args, *setup) = job
                folder = Path(tmp) / str(index)
                folder.mkdir()
                pid = os.fork()
                if pid == 0:
                    _child(main, args, folder, headroom_bytes, setup[0] if setup else None)
                running[pid] = (index, _Child(pid, folder, time.monotonic() + timeout_s))
            if not running:
                return outcomes
            finished = [(pid, status) for pid, status in (os.waitpid(pid, os.WNOHANG) for pid in list(running)) if pid]
            if not finished:
                for _, child in running.values():
                    if time.monotonic() > child.deadline:
                        os.kill(child.pid, 9)
                time.sleep(0.01)
            for pid, status in finished:  # every child reaped above: each is collected once
                index, child = running.pop(pid)
                peak = child.folder / "peak"
                outcomes[index] = Outcome(
                    os.waitstatus_to_exitcode(status),
                    (child.folder / "out").read_text(errors="replace"),
                    (child.folder / "err").read_text(errors="replace"),
                    int(peak.read_text()) / 1024 if peak.is_file() else float("nan"),
                    time.monotonic() > child.deadline,
                )


def forked(
    main: Callable, args: list[str], setup: Callable | None = None, headroom_bytes: int = 1 << 30, timeout_s=120
) -> Outcome:
    """`forked_many` of one job."""
    return forked_many([(main, args, setup)], 1, headroom_bytes, timeout_s)[0]
