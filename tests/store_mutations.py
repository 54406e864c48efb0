"""Seeded mutations of a tiny store pair for the fuzz test (tests/test_fuzz_stores.py): one edit of a manifest (a
field's value or type, the JSON text itself), of a tar header (type, size, name, checksum), of a shard's bytes
(cut, flipped, compressed) or of a member (flow and PNG headers that lie, labels outside the protocol, bad JSON,
members missing or added). After a shard edit the manifest is usually updated to the new bytes and sha256, as a
hostile store would be, so that the readers meet the edit itself and not only the sha256 check.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zstandard
from hostile_stores import (
    BLOCK,
    flow_bytes,
    png_bytes,
    read_members,
    replace_shard,
    shard_path,
    sparse_tar,
    tar_bytes,
    tar_header,
    update_manifest,
    with_member,
)

from pipeline.shards import MANIFEST_NAME
from pipeline.shards import png_bytes as encode_png
from pipeline.shards.schema import MAX_MANIFEST_BYTES

STORES = ("src", "tgt")
HOSTILE_VALUES = [
    None,
    True,
    False,
    "false",
    "",
    "x" * 5000,
    -1,
    0,
    1,
    2**31,
    10**30,
    1.5,
    float(2**53),
    [],
    [0, 0],
    [64, 32],
    [100000, 100000],
    [1, 2, 3],
    {},
    {"a": [1, {"b": None}]},
    "../outside.tar",
    "/etc/hostname",
    "sub/x.tar",
    "..",
    "target_pairs",
    "source",
    "val",
    "viper15",
    "synthia11",
    "no-such-protocol",
]
FIELDS = [
    "format",
    "name",
    "kind",
    "complete",
    "size_wh",
    "protocol",
    "protocols",
    "estimator",
    "estimator_options",
    "checkpoint_sha256",
    "codec",
    "frames",
    "num_samples",
    "num_planned",
    "num_skipped",
    "bytes",
    "shards",
    "skipped",
    "timing",
    "config",
    "run",
    "tool_version",
]
SHARD_FIELDS = ["name", "samples", "bytes", "sha256", "skipped"]
TYPEFLAGS = [b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"S", b"x", b"g", b"L", b"K", b"V", b"Z"]
NAMES = [
    "../t0_0.frame0.png",
    "/abs.frame0.png",
    "t0_0",
    "t0_0.frame0",
    "t0_0.frame0.exe",
    "a/b.frame0.png",
    ".hidden.png",
    "t0_0..png",
    "__key__.json",
    "T0_0.FRAME0.PNG",
]


def _manifest_path(stores: Path, store: str) -> Path:
    return stores / store / MANIFEST_NAME


def manifest_field(stores: Path, rng: random.Random) -> str:
    store, value = rng.choice(STORES), rng.choice(HOSTILE_VALUES)
    manifest = json.loads(_manifest_path(stores, store).read_text())
    if rng.random() < 0.4:
        field = rng.choice(SHARD_FIELDS)
        manifest["shards"][0][field] = value
        where = f"shards[0].{field}"
    else:
        field = rng.choice(FIELDS)
        manifest[field] = value
        where = field
    _manifest_path(stores, store).write_text(json.dumps(manifest))
    return f"{store} manifest {where} = {json.dumps(value)[:40]}"


def manifest_delete(stores: Path, rng: random.Random) -> str:
    store = rng.choice(STORES)
    manifest = json.loads(_manifest_path(stores, store).read_text())
    if rng.random() < 0.4:
        field = rng.choice(sorted(manifest["shards"][0]))
        del manifest["shards"][0][field]
        where = f"shards[0].{field}"
    else:
        where = rng.choice(sorted(manifest))
        del manifest[where]
    _manifest_path(stores, store).write_text(json.dumps(manifest))
    return f"{store} manifest without {where}"


def manifest_text(stores: Path, rng: random.Random) -> str:
    store = rng.choice(STORES)
    path = _manifest_path(stores, store)
    text = path.read_text()
    edits: dict[str, Callable[[], bytes]] = {
        "cut": lambda: text[: rng.randrange(len(text))].encode(),
        "NaN for a number": lambda: text.replace('"samples": ', '"samples": NaN, "_": ', 1).encode(),
        "Infinity for bytes": lambda: text.replace('"bytes": ', '"bytes": Infinity, "_": ', 1).encode(),
        "1e400": lambda: text.replace('"samples": ', '"samples": 1e400, "_": ', 1).encode(),
        "nested 100k deep": lambda: ("[" * 100_000 + "]" * 100_000).encode(),
        "nested inside": lambda: text.replace('"timing"', '"deep": ' + "[" * 50 + "]" * 50 + ', "timing"', 1).encode(),
        "flipped bytes": lambda: _flip(text.encode(), rng, 3),
        "empty": lambda: b"",
        "not UTF-8": lambda: b"\xff\xfe\xfd" + text.encode(),
        "a list": lambda: b"[]",
        "huge": lambda: text.encode() + b" " * (MAX_MANIFEST_BYTES + 1),
        "duplicate key": lambda: text.replace("{", '{"complete": false, ', 1).encode(),
    }
    name = rng.choice(sorted(edits))
    path.write_bytes(edits[name]())
    return f"{store} manifest text: {name}"


def _flip(data: bytes, rng: random.Random, count: int, start: int = 0) -> bytes:
    buf = bytearray(data)
    for _ in range(count):
        i = rng.randrange(start, len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _headers(data: bytes) -> list[int]:
    """Offsets of the member headers of a plain ustar archive."""
    offsets, pos = [], 0
    while pos + BLOCK <= len(data) and data[pos : pos + BLOCK] != bytes(BLOCK):
        offsets.append(pos)
        size = int(data[pos + 124 : pos + 136].strip(b"\0 ") or b"0", 8)
        pos += BLOCK + -(-size // BLOCK) * BLOCK
    return offsets


def _checksum(header: bytearray) -> None:
    header[148:156] = b"        "
    header[148:156] = f"{sum(header):06o}\0 ".encode()


def tar_header_field(stores: Path, rng: random.Random) -> str:
    store = rng.choice(STORES)
    shard = shard_path(stores, store)
    data = bytearray(shard.read_bytes())
    offset = rng.choice(_headers(bytes(data)))
    header = data[offset : offset + BLOCK]
    what = rng.choice(["typeflag", "size", "name", "checksum", "magic", "mode"])
    if what == "typeflag":
        value = rng.choice(TYPEFLAGS)
        header[156:157] = value
    elif what == "size":
        size = int(header[124:136].strip(b"\0 "), 8)
        value = rng.choice([0, max(size - 1, 0), size + 1, size + 512, 10**9, 8**11 - 1, 2**40, 2**64])
        header[124:136] = tar_header("x", value)[124:136]
    elif what == "name":
        value = rng.choice(NAMES)
        header[0:100] = value.encode().ljust(100, b"\0")
    elif what == "checksum":
        value = "garbage"
        header[148:156] = b"1234567\0"
    elif what == "magic":
        value = "ustar  \\0"
        header[257:265] = b"ustar  \0"
    else:
        value = "garbage"
        header[100:108] = b"zzzzzzz\0"
    if what != "checksum":
        _checksum(header)
    data[offset : offset + BLOCK] = header
    shard.write_bytes(bytes(data))
    return f"{store} tar header at {offset}: {what} = {value!r}" + _maybe_update(stores, store, rng)


def _maybe_update(stores: Path, store: str, rng: random.Random) -> str:
    if rng.random() < 0.8:
        update_manifest(stores, store)
        return " (manifest updated)"
    return ""


def shard_bytes(stores: Path, rng: random.Random) -> str:
    store = rng.choice(STORES)
    shard = shard_path(stores, store)
    data = shard.read_bytes()
    edits: dict[str, Callable[[], bytes]] = {
        "cut": lambda: data[: rng.randrange(len(data))],
        "cut at a block": lambda: data[: BLOCK * rng.randrange(len(data) // BLOCK)],
        "flipped bytes": lambda: _flip(data, rng, rng.choice([1, 4, 64])),
        "flipped header bytes": lambda: _flip(data, rng, 2, 0) if len(data) > BLOCK else data,
        "garbage appended": lambda: data + rng.randbytes(rng.choice([1, 511, 4096])),
        "gzip": lambda: gzip.compress(data),
        "bzip2": lambda: bz2.compress(data),
        "xz": lambda: lzma.compress(data),
        "zstd": lambda: zstandard.ZstdCompressor().compress(data),
        "random": lambda: rng.randbytes(len(data)),
        "empty": lambda: b"",
        "sparse 4 GiB member": lambda: sparse_tar(f"{_first_key(stores, store)}.meta.json", 4 << 30, 4096),
        "members twice": lambda: data[: -2 * BLOCK] + data,
    }
    name = rng.choice(sorted(edits))
    shard.write_bytes(edits[name]())
    return f"{store} shard bytes: {name}" + _maybe_update(stores, store, rng)


def _first_key(stores: Path, store: str) -> str:
    return read_members(shard_path(stores, store))[0][0].split(".")[0]


def _label(value: int) -> bytes:
    label = np.zeros((32, 64), np.uint8)
    label[3, 5] = value
    return encode_png(label)


# name: (stores it applies to, the kind of member it replaces, the new bytes or None to remove it)
MEMBER_EDITS: dict[str, tuple[tuple[str, ...], str, Callable[[random.Random], bytes | None]]] = {
    "flow of another size": (("tgt",), "flow", lambda rng: flow_bytes(rng.choice([1, 63, 65, 128, 16384]), 32)),
    "flow header 0x0": (("tgt",), "flow", lambda rng: flow_bytes(64, 32)[:8] + bytes(8) + flow_bytes(64, 32)[16:]),
    "flow header 4294967295x4294967295": (("tgt",), "flow", lambda rng: flow_bytes(2**32 - 1, 2**32 - 1, 1)),
    "flow of 16384x16384 (a real 1 GiB frame)": (("tgt",), "flow", lambda rng: flow_bytes(16384, 16384)),
    "flow whose frame lies": (("tgt",), "flow", lambda rng: flow_bytes(64, 32, rng.choice([1, 2047, 4096, 1 << 26]))),
    "flow cut": (("tgt",), "flow", lambda rng: flow_bytes(64, 32)[: rng.randrange(40)]),
    "flow of another version": (
        ("tgt",),
        "flow",
        lambda rng: flow_bytes(64, 32)[:4] + b"\x07" + flow_bytes(64, 32)[5:],
    ),
    "flow flipped": (("tgt",), "flow", lambda rng: _flip(flow_bytes(64, 32), rng, 3, 16)),
    "random bytes for a flow": (("tgt",), "flow", lambda rng: rng.randbytes(rng.choice([0, 10, 5000]))),
    "PNG of 20000x20000": (STORES, "png", lambda rng: png_bytes(20000, 20000, rows=0)),
    "PNG of another size": (STORES, "png", lambda rng: png_bytes(rng.choice([63, 65, 128]), 32)),
    "PNG of 16 bits": (STORES, "png", lambda rng: png_bytes(64, 32, depth=16)),
    "PNG with alpha or palette": (STORES, "png", lambda rng: png_bytes(64, 32, colour=rng.choice([3, 4, 6]))),
    "PNG cut": (STORES, "png", lambda rng: png_bytes(64, 32)[: rng.randrange(60)]),
    "PNG flipped": (STORES, "png", lambda rng: _flip(png_bytes(64, 32), rng, 3, 33)),
    "random bytes for a PNG": (STORES, "png", lambda rng: rng.randbytes(rng.choice([0, 8, 33, 4000]))),
    "label id 200": (("src",), "label", lambda rng: _label(200)),
    "label id 15": (("src",), "label", lambda rng: _label(15)),
    "label id 255 (ignore)": (("src",), "label", lambda rng: _label(255)),
    "meta not JSON": (STORES, "meta", lambda rng: b"{not json"),
    "meta a list": (STORES, "meta", lambda rng: b"[1, 2]"),
    "meta nested 100k deep": (STORES, "meta", lambda rng: b"[" * 100_000 + b"]" * 100_000),
    "meta of 2 MiB": (STORES, "meta", lambda rng: b" " * (2 << 20)),
    "member removed": (STORES, "any", lambda rng: None),
}


def member_content(stores: Path, rng: random.Random) -> str:
    name = rng.choice(sorted(MEMBER_EDITS))
    allowed, kind, make = MEMBER_EDITS[name]
    store = rng.choice(allowed)
    fields = sorted({n.split(".", 1)[1] for n, _ in read_members(shard_path(stores, store))})
    choices = {
        "flow": [f for f in fields if f.endswith(".zflow")],
        "png": [f for f in fields if f.endswith(".png")],
        "label": ["label.png"],
        "meta": [f for f in fields if f.endswith(".json")],  # a pair's meta.json, a run's run.json
        "any": fields,
    }[kind]
    field = rng.choice(choices)
    with_member(stores, store, field, make(rng), sample=rng.randrange(2))
    return f"{store} member {field}: {name}"


def member_added(stores: Path, rng: random.Random) -> str:
    store = rng.choice(STORES)
    entries = read_members(shard_path(stores, store))
    key = entries[0][0].split(".")[0]
    added = {
        "an unknown type": [(f"{key}.extra.bin", b"x")],
        "an extra PNG": [(f"{key}.extra.png", png_bytes(64, 32))],
        "a duplicate": [entries[0]],
        "20 members": [(f"{key}.m{i}.json", b"{}") for i in range(20)],
    }
    name = rng.choice(sorted(added))
    replace_shard(stores, store, tar_bytes([*entries[:1], *added[name], *entries[1:]]))
    return f"{store} shard with {name} in sample {key}"


MUTATIONS = [
    manifest_field,
    manifest_field,
    manifest_delete,
    manifest_text,
    tar_header_field,
    tar_header_field,
    shard_bytes,
    shard_bytes,
    member_content,
    member_content,
    member_content,
    member_added,
]


def mutate(stores: Path, rng: random.Random) -> str:
    """Apply one mutation, drawn by `rng`, to the stores in place; -> what it did."""
    return rng.choice(MUTATIONS)(stores, rng)
