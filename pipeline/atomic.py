"""Files that appear whole or not at all, and their sha256: the one write-then-rename helper of i2vda.

Every file that a reader might see while it is being written (shards, manifests, the val store, checkpoints, the
dataset files of the demo world) is written under a temporary name in its final folder, flushed, and renamed onto
its final name; an exception removes the temporary file. The temporary name ends in PARTIAL_SUFFIX (never a shard's
`.tar`) and carries the writer's process id, so two processes writing the same path never share a temporary file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # a file being written; `remove_partials` and the shard glob rely on it
# Block size for hashing: a 620 MB FlowNet2 checkpoint or a few-hundred-MB shard without holding it in memory.
HASH_CHUNK_BYTES = 1 << 22


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name of `path` for this process: `<name>.<pid>.partial`, in the same folder."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it (when `durable`) and rename it onto `path`.

    On any exception the temporary file is removed and nothing appears under `path`; an OSError that names no file
    (a write on a full disk) is raised again naming `path`. `durable=False` skips the fsync
    for files that a rerun rewrites anyway (the demo world's thousands of frames): the rename alone still guarantees
    that no half file carries the final name."""
    path = Path(path)
    partial = partial_path(path)
    try:
        yield partial
        if durable:
            with open(partial, "rb") as written:
                os.fsync(written.fileno())
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # A failed write() names no file; a full disk must say which file it could not write.
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write `data` to `path` through `atomic_path`."""
    with atomic_path(path, durable) as partial:
        partial.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    """Write `text` (UTF-8) to `path` through `atomic_path`."""
    return write_bytes_atomic(path, text.encode(), durable)


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in `folder` whose writer (the pid in `<name>.<pid>.partial`) no longer runs, e.g.
    a checkpoint save killed mid-write; -> the files removed. Files of live writers are left alone."""
    removed = []
    for path in Path(folder).glob(f"*{PARTIAL_SUFFIX}"):
        pid = path.name.removesuffix(PARTIAL_SUFFIX).rpartition(".")[2]
        if not pid.isdigit() or (int(pid) != os.getpid() and not _alive(int(pid))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in HASH_CHUNK_BYTES blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()
