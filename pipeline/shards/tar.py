"""Layer 2 of the shard format: one tar file of encoded samples, written atomically, read back raw.

`raw_samples(shard)` is the one reader of shard tars: `read_samples`, the trainer's streams and the tools all go
through it, so a damaged or hostile tar is the same one-line InputError everywhere. It reads the tar as a plain stream
(`tarfile` mode "r|", which never decompresses) and checks each member's header before it reads the member's bytes:
a compressed shard (gzip, bzip2, xz or zstd magic) is refused, and so is a member that is not a regular file (sparse,
a link, a folder, a device), whose name is not `<key>.<field>.<ext>` with a store's member type, or whose declared
size exceeds what a store of that size allows (`samples.member_byte_limit`); a sample has at most
MAX_SAMPLE_MEMBERS members (a run of layout 3, as many as its pairs take). So reading never allocates more than the
store's size allows, whatever the tar declares. Members are grouped into samples by WebDataset's own
`group_by_keys`, so any WebDataset pipeline reads our shards the same way. Given the manifest's entry for the shard
(`expected`), it also checks what reading costs nothing extra: the file's size before the first sample, and its
sample count and sha256 once read to the end, so a tar cut at a member boundary or another shard copied over it is
refused, not silently trained on; the entry's `size_hw` (the store's size) sets the member limits.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from webdataset.tariterators import group_by_keys

from pipeline.atomic import HASH_CHUNK_BYTES, atomic_path, file_sha256
from pipeline.errors import InputError
from pipeline.shards.remote import is_remote, open_file
from pipeline.shards.samples import MAX_SAMPLE_MEMBERS, MEMBER_TYPES, check_key, member_byte_limit

SHARD_SUFFIX = ".tar"
# Tar headers carry no time, owner or permissions of the machine that wrote them, so reruns are byte-identical.
TAR_MTIME = 0
TAR_MODE = 0o644
# What WebDataset appends to a failing member's message (" @ <stream>"); the one-line error drops it.
_WDS_WHERE = " @ "
# The first bytes of a compressed file: a shard is a plain tar, and a compressed one could hide any size.
COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_MAGIC_BYTES = max(len(m) for m in COMPRESSION_MAGIC)
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_MEMBER_KINDS = {
    tarfile.GNUTYPE_SPARSE: "a sparse file",
    tarfile.LNKTYPE: "a hard link",
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.DIRTYPE: "a folder",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
}
_NAME_SHOWN = 80  # characters of a refused member's name in the error line
MAX_RUN_PAIRS = 1024  # pairs of a run read without its manifest entry (a run is one snippet: Cityscapes' give 29)


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
    """A read-only file wrapper that hashes and counts the bytes read through it; `peek` looks ahead (a stream from a
    URL cannot seek back)."""

    def __init__(self, raw):
        self.raw, self.digest, self.bytes_read, self._ahead = raw, hashlib.sha256(), 0, b""

    def peek(self, size: int) -> bytes:
        """The next `size` bytes (fewer at the end), left to be read."""
        while len(self._ahead) < size and (more := self.raw.read(size - len(self._ahead))):
            self._ahead += more
        return self._ahead[:size]

    def read(self, size: int = -1) -> bytes:
        ahead, self._ahead = self._ahead, b""
        if size is None or size < 0:
            data = ahead + self.raw.read()
        elif len(ahead) >= size:
            data, self._ahead = ahead[:size], ahead[size:]
        else:
            data = ahead + self.raw.read(size - len(ahead))
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


def _compression(head: bytes) -> str | None:
    """The compression format whose magic starts a file whose first bytes are `head`, or None."""
    return next((name for magic, name in COMPRESSION_MAGIC.items() if head.startswith(magic)), None)


def _member_cap(expected) -> int:
    """Members one sample may have: MAX_SAMPLE_MEMBERS in a store of one sample per pair, 3n + 2 for a run of layout
    3 as long as its shard's n pairs (n + 1 frames, 2n flows, run.json; `pipeline.shards.runs`), and, for a shard
    read without its manifest entry, a run of MAX_RUN_PAIRS."""
    if expected is None:
        return 3 * MAX_RUN_PAIRS + 2
    pairs = getattr(expected, "pairs", None)
    return MAX_SAMPLE_MEMBERS if pairs is None else max(MAX_SAMPLE_MEMBERS, 3 * pairs + 2)


def check_member(info: tarfile.TarInfo, shard: str, size_hw: tuple[int, int] | None) -> None:
    """Refuse a member, from its header alone, that a store never holds: not a regular file, not named
    `<key>.<field>.<ext>` with a store's member type, or larger than a member of a `size_hw` store may be."""
    where = f"{shard}: member {info.name[:_NAME_SHOWN]!r}"
    if info.type not in _REGULAR or info.sparse is not None:
        kind = "a sparse file" if info.sparse is not None else _MEMBER_KINDS.get(info.type, f"of type {info.type!r}")
        raise InputError(f"{where} is {kind}; a shard holds regular files only")
    key, _, member = info.name.partition(".")
    ext = member.rsplit(".", 1)[-1].lower()
    if "/" in info.name or not key or "." not in member or ext not in MEMBER_TYPES:
        raise InputError(
            f"{where}: not a store member (expected <key>.<field>.<ext> with ext one of {', '.join(MEMBER_TYPES)})"
        )
    limit = member_byte_limit(info.name, size_hw)
    if info.size > limit:
        store = f"a {size_hw[1]}x{size_hw[0]} store" if size_hw is not None else "a store"
        raise InputError(
            f"{where} declares {info.size} bytes in its tar header; .{ext} members of {store} take at most {limit}; "
            f"refused before reading it"
        )


def _members(tar: tarfile.TarFile, shard: str, size_hw: tuple[int, int] | None, cap: int) -> Iterator[dict]:
    """The members of a tar stream as WebDataset's {"fname", "data", "__url__"}, each header checked first, at most
    `cap` per sample."""
    key, fields = None, set()
    for info in tar:
        check_member(info, shard, size_hw)
        member_key, _, field = info.name.partition(".")
        if member_key != key:
            key, fields = member_key, set()
        if field.lower() in fields:
            raise InputError(f"{shard}: member {info.name[:_NAME_SHOWN]!r} appears twice in its sample")
        fields.add(field.lower())  # WebDataset's group_by_keys lower-cases the extension
        if len(fields) > cap:
            raise InputError(f"{shard}: sample {key[:_NAME_SHOWN]!r} has more than {cap} members")
        yield {"fname": info.name, "data": tar.extractfile(info).read(), "__url__": shard}
        tar.members = []  # a stream's TarInfos are not needed again: keep memory flat over long shards


def raw_samples(shard: str | os.PathLike, expected=None) -> Iterator[dict]:
    """The undecoded samples of one tar, a local file or a URL (`pipeline.shards.remote`), in tar order:
    {"__key__", "__url__", "<field>.<ext>": bytes}.

    A missing, unreadable, truncated, compressed or hostile tar raises a one-line InputError naming it (module
    docstring). `expected` (the manifest's `ShardEntry`: samples, bytes, sha256, pairs, size_hw) adds the checks of
    the module docstring (a URL's size is checked when the server sends it, and always on the bytes read); the count,
    the bytes read and the sha256 are checked only when the caller reads the shard to its end."""
    shard = str(shard)
    size_hw = getattr(expected, "size_hw", None)

    def fail(exc: BaseException) -> bool:  # WebDataset's handler hook: turn any member error into our one line
        if isinstance(exc, InputError):
            raise exc
        raise _bad_shard(shard, exc)

    count = 0
    try:
        if expected is not None and not is_remote(shard):
            check_shard_size(shard, expected)
        with open_file(shard) as raw:
            served = getattr(raw, "size", None)  # a URL's size, when the server says it
            if expected is not None and expected.bytes and served is not None and served != expected.bytes:
                raise damaged_shard(shard, f"{served} bytes, the manifest says {expected.bytes}")
            stream = _HashingReader(raw)
            compression = _compression(stream.peek(_MAGIC_BYTES))
            if compression is not None:
                raise InputError(f"{shard}: a {compression}-compressed file; shards are plain (uncompressed) tar files")
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for sample in group_by_keys(_members(tar, shard, size_hw, _member_cap(expected)), handler=fail):
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
