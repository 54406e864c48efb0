"""Layer 2 of the shard format: one tar file of encoded samples, written atomically, read back raw.

`raw_samples(shard)` is the one reader of shard tars: `read_samples`, the trainer's streams and the tools all go
through it, so a damaged tar is the same one-line InputError everywhere. It iterates the tar and groups members
into samples with WebDataset's own functions (`tar_file_iterator`, `group_by_keys`), so any WebDataset pipeline
reads our shards the same way. Given the manifest's entry for the shard (`expected`), it also checks what reading
costs nothing extra: the file's size before the first sample, and its sample count and sha256 once read to the end,
so a tar cut at a member boundary or another shard copied over it is refused, not silently trained on.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from webdataset.tariterators import group_by_keys, tar_file_iterator

from pipeline.atomic import HASH_CHUNK_BYTES, atomic_path, file_sha256
from pipeline.errors import InputError
from pipeline.shards.remote import is_remote, open_file
from pipeline.shards.samples import check_key

SHARD_SUFFIX = ".tar"
# Tar headers carry no time, owner or permissions of the machine that wrote them, so reruns are byte-identical.
TAR_MTIME = 0
TAR_MODE = 0o644
# What WebDataset appends to a failing member's message (" @ <stream>"); the one-line error drops it.
_WDS_WHERE = " @ "


def shard_name(store_name: str, index: int) -> str:
    """File name of shard `index` of a store: `<name>-000000.tar`."""
    return f"{store_name}-{index:06d}{SHARD_SUFFIX}"


def write_shard(path: str | os.PathLike, samples: Iterable[Mapping]) -> dict:
    """Write encoded samples to a tar at `path` atomically (temporary name, then rename); -> {name, samples, bytes,
    sha256}. On any error the temporary file is removed and nothing appears under `path`."""
    path = Path(path)
    count = 0
    with atomic_path(path) as partial:
        with open(partial, "wb") as raw, tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                key = check_key(sample["__key__"])
                for field in sorted(k for k in sample if not k.startswith("__")):
                    info = tarfile.TarInfo(f"{key}.{field}")
                    info.size, info.mtime, info.mode = len(sample[field]), TAR_MTIME, TAR_MODE
                    tar.addfile(info, io.BytesIO(sample[field]))
                count += 1
        info = {"name": path.name, "samples": count, "bytes": partial.stat().st_size, "sha256": file_sha256(partial)}
    return info


def _bad_shard(shard: str, exc: BaseException) -> InputError:
    reason = str(exc.args[0]).split(_WDS_WHERE)[0] if exc.args else type(exc).__name__
    return InputError(f"{shard}: unreadable or truncated shard ({reason})")


class _HashingReader:
    """A read-only file wrapper that hashes and counts the bytes read through it."""

    def __init__(self, raw):
        self.raw, self.digest, self.bytes_read = raw, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.bytes_read += len(data)
        return data

    def read_to_end(self) -> None:
        """Hash what the tar reader left unread (the end-of-archive blocks)."""
        while self.read(HASH_CHUNK_BYTES):
            pass


def damaged_shard(shard: str, what: str) -> InputError:
    """The one-line error for a shard that differs from its manifest entry."""
    return InputError(f"{shard}: {what}; the shard is damaged or was replaced, rebuild the store with i2vda-prep")


def check_shard_size(shard: str | os.PathLike, expected) -> None:
    """Refuse a shard whose file size is not the manifest's `expected.bytes` (a cheap check: one stat)."""
    size = os.stat(shard).st_size
    if expected.bytes and size != expected.bytes:
        raise damaged_shard(str(shard), f"{size} bytes, the manifest says {expected.bytes}")


def raw_samples(shard: str | os.PathLike, expected=None) -> Iterator[dict]:
    """The undecoded samples of one tar, a local file or a URL (`pipeline.shards.remote`), in tar order:
    {"__key__", "__url__", "<field>.<ext>": bytes}.

    A missing, unreadable or truncated tar raises a one-line InputError naming it. `expected` (the manifest's
    `ShardEntry`: samples, bytes, sha256) adds the checks of the module docstring (a URL's size is checked when the
    server sends it, and always on the bytes read); the count, the bytes read and the sha256 are checked only when
    the caller reads the shard to its end."""
    shard = str(shard)

    def fail(exc: BaseException) -> bool:  # WebDataset's handler hook: turn any member error into our one line
        raise _bad_shard(shard, exc)

    def members(stream) -> Iterator[dict]:
        for member in tar_file_iterator(stream, handler=fail):
            yield {**member, "__url__": shard}

    count = 0
    try:
        if expected is not None and not is_remote(shard):
            check_shard_size(shard, expected)
        with open_file(shard) as raw:
            served = getattr(raw, "size", None)  # a URL's size, when the server says it
            if expected is not None and expected.bytes and served is not None and served != expected.bytes:
                raise damaged_shard(shard, f"{served} bytes, the manifest says {expected.bytes}")
            stream = _HashingReader(raw)
            for sample in group_by_keys(members(stream), handler=fail):
                count += 1
                yield sample
            stream.read_to_end()
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise _bad_shard(shard, exc) from None
    if expected is None:
        return
    if expected.bytes and stream.bytes_read != expected.bytes:
        raise damaged_shard(shard, f"{stream.bytes_read} bytes read, the manifest says {expected.bytes}")
    if count != expected.samples:
        raise damaged_shard(shard, f"holds {count} samples, the manifest says {expected.samples}")
    if expected.sha256 and stream.digest.hexdigest() != expected.sha256:
        raise damaged_shard(shard, "its sha256 differs from the manifest's")
