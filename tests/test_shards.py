"""The shard format without Ray: sample round trips, atomic byte-stable shards, manifests, WebDataset compatibility."""

import hashlib
import io
import json
import os
import tarfile
import zlib

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pipeline.errors import InputError
from pipeline.flow.codec import FLOW_EXT
from pipeline.shards import (
    PARTIAL_SUFFIX,
    StoreInfo,
    atomic_path,
    check_manifest,
    decode_sample,
    encode_source_sample,
    encode_target_sample,
    file_sha256,
    open_store,
    png_bytes,
    png_pixels,
    raw_samples,
    read_manifest,
    read_samples,
    shard_name,
    write_manifest,
    write_shard,
)

H, W = 24, 40
FLOW_STEP_PX = 1 / 64  # the precision the design requires of the codec; round-to-nearest errs by half a step


def _pair(seed):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(2, H, W, 3), dtype=np.uint8)
    flows = rng.uniform(-30, 30, size=(2, 2, H, W)).astype(np.float32)  # F_0->1, F_1->0: (2, H, W) each
    return frames, flows


def _target(seed, key=None):
    (f0, f1), (fl01, fl10) = _pair(seed)
    key = key or f"city_000000_{seed:06d}"
    return encode_target_sample(key, f0, f1, fl01, fl10, {"source_paths": [f"a/{seed}.png", f"b/{seed}.png"]})


def test_target_sample_round_trip_exact_frames_and_flows_within_half_a_step():
    (f0, f1), (fl01, fl10) = _pair(1)
    raw = encode_target_sample("aachen_000001_000019", f0, f1, fl01, fl10, {"estimator": "dis"})
    assert sorted(raw) == sorted(
        ["__key__", "frame0.png", "frame1.png", f"flow01.{FLOW_EXT}", f"flow10.{FLOW_EXT}", "meta.json"]
    )
    out = decode_sample(raw)
    assert out["__key__"] == "aachen_000001_000019"
    assert out["frame0"].dtype == np.uint8 and np.array_equal(out["frame0"], f0) and np.array_equal(out["frame1"], f1)
    for name, flow in (("flow01", fl01), ("flow10", fl10)):
        assert out[name].dtype == np.float32 and out[name].shape == (2, H, W)
        assert np.abs(out[name] - flow).max() <= FLOW_STEP_PX / 2 + 1e-6
    assert out["meta"]["estimator"] == "dis" and out["meta"]["size_wh"] == [W, H] and "codec" in out["meta"]


def test_source_sample_round_trip_keeps_a_two_dimensional_label():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    label = rng.choice(np.array([0, 3, 14, 255], np.uint8), size=(H, W))
    out = decode_sample(encode_source_sample("viper_001_00010", image, label, {"protocol": "viper15"}))
    assert np.array_equal(out["image"], image)
    assert out["label"].shape == (H, W) and out["label"].dtype == np.uint8 and np.array_equal(out["label"], label)
    assert out["meta"] == {"protocol": "viper15", "size_wh": [W, H]}


def test_keys_with_a_dot_are_refused():
    (f0, f1), (fl01, fl10) = _pair(3)
    with pytest.raises(ValueError):
        encode_target_sample("a.b", f0, f1, fl01, fl10, {})


def test_write_shard_is_byte_stable_hashed_and_ordered(tmp_path):
    samples = [_target(s) for s in range(3)]
    info_a = write_shard(tmp_path / "a.tar", samples)
    info_b = write_shard(tmp_path / "b.tar", [_target(s) for s in range(3)])
    data = (tmp_path / "a.tar").read_bytes()
    assert data == (tmp_path / "b.tar").read_bytes()
    assert info_a == {"name": "a.tar", "samples": 3, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert info_b["sha256"] == info_a["sha256"]
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    expected = [f"{s['__key__']}.{field}" for s in samples for field in sorted(k for k in s if k != "__key__")]
    assert [m.name for m in members] == expected
    assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}
    for member, name in zip(members, expected):
        key, field = name.split(".", 1)
        sample = next(s for s in samples if s["__key__"] == key)
        assert member.size == len(sample[field])


def test_webdataset_reads_our_shards_with_the_same_members(tmp_path):
    samples = [_target(s) for s in range(4)]
    write_shard(tmp_path / shard_name("st", 0), samples)
    ours = list(read_samples(tmp_path / shard_name("st", 0)))
    theirs = [decode_sample(s) for s in wds.WebDataset(str(tmp_path / shard_name("st", 0)), shardshuffle=False)]
    assert [s["__key__"] for s in theirs] == [s["__key__"] for s in samples] == [s["__key__"] for s in ours]
    for a, b in zip(ours, theirs):
        for field in ("frame0", "frame1", "flow01", "flow10"):
            assert np.array_equal(a[field], b[field])
        assert a["meta"] == b["meta"]


def test_a_failing_writer_leaves_no_file(tmp_path):
    def broken():
        yield _target(0)
        raise RuntimeError("estimator crashed")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "st-000000.tar", broken())
    assert list(tmp_path.iterdir()) == []


def test_store_folder_reads_shards_in_manifest_order(tmp_path):
    infos = [write_shard(tmp_path / shard_name("st", i), [_target(10 * i + j) for j in range(2)]) for i in (1, 0)]
    write_manifest(
        tmp_path,
        {"name": "st", "kind": "target_pairs", "complete": True, "shards": sorted(infos, key=lambda s: s["name"])},
    )
    keys = [s["__key__"] for s in read_samples(tmp_path)]
    assert keys == [f"city_000000_{n:06d}" for n in (0, 1, 10, 11)]
    keys_list = [s["__key__"] for s in read_samples([tmp_path / shard_name("st", 1)])]
    assert keys_list == [f"city_000000_{n:06d}" for n in (10, 11)]


def test_a_truncated_shard_is_an_input_error_naming_it(tmp_path):
    write_shard(tmp_path / "st-000000.tar", [_target(s) for s in range(2)])
    path = tmp_path / "st-000000.tar"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(InputError, match="st-000000.tar"):
        list(read_samples(path))


def test_manifest_round_trip_and_checks(tmp_path):
    write_manifest(
        tmp_path,
        {
            "name": "viper",
            "kind": "source",
            "protocol": "viper15",
            "size_wh": [896, 512],
            "complete": True,
            "shards": [],
        },
    )
    manifest = read_manifest(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["tool_version"] and manifest["size_wh"] == [896, 512]
    check_manifest(manifest, kind="source", protocol="viper15", size_wh=(896, 512), estimator=None)
    check_manifest(tmp_path, size_hw=(512, 896))
    for wrong in ({"protocol": "synthia11"}, {"size_wh": (1024, 512)}, {"kind": "target_pairs"}):
        with pytest.raises(InputError) as err:
            check_manifest(manifest, **wrong)
        field = next(iter(wrong))
        assert field in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="incomplete"):
        check_manifest({**manifest, "complete": False})


def test_missing_or_foreign_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not an i2vda store"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match="no such store"):
        list(read_samples(tmp_path / "nowhere"))


def test_decode_sample_names_a_corrupt_member():
    raw = dict(_target(5))
    raw["frame0.png"] = io.BytesIO(b"not a png").getvalue()
    with pytest.raises(InputError, match="frame0.png"):
        decode_sample(raw)


def _png_chunks(data: bytes) -> dict[bytes, list[bytes]]:
    """PNG chunk type -> bodies, parsed by hand (length, type, body, CRC)."""
    chunks: dict[bytes, list[bytes]] = {}
    pos = 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.setdefault(data[pos + 4 : pos + 8], []).append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return chunks


def test_stored_frames_are_plain_rgb_rows_and_compressed_frames_are_smaller():
    rng = np.random.default_rng(5)
    smooth = np.clip(np.cumsum(rng.integers(-2, 3, size=(H, W, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    stored, compressed = png_bytes(smooth), png_bytes(smooth, "compressed")
    # Stored: zlib's first deflate block is uncompressed (BTYPE 00) and every row is filter 0 + the raw RGB bytes.
    idat = b"".join(_png_chunks(stored)[b"IDAT"])
    assert (idat[2] >> 1) & 0b11 == 0
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(H, 1 + 3 * W)
    assert not rows[:, 0].any() and np.array_equal(rows[:, 1:].reshape(H, W, 3), smooth)
    assert len(compressed) < len(stored)
    for data in (stored, compressed):  # both are standard PNGs: an independent decoder reads the same pixels
        with Image.open(io.BytesIO(data)) as png:
            assert png.mode == "RGB" and np.array_equal(np.asarray(png), smooth)
        assert np.array_equal(png_pixels(data, "frame"), smooth)
    with pytest.raises(ValueError, match="frames must be one of"):
        png_bytes(smooth, "jpeg")


def test_frame_mode_changes_the_bytes_not_the_decoded_sample():
    (f0, f1), (fl01, fl10) = _pair(6)
    stored = encode_target_sample("k", f0, f1, fl01, fl10, {})
    compressed = encode_target_sample("k", f0, f1, fl01, fl10, {}, frames="compressed")
    assert stored["frame0.png"] != compressed["frame0.png"]
    a, b = decode_sample(stored), decode_sample(compressed)
    for name in ("frame0", "frame1", "flow01", "flow10"):
        assert np.array_equal(a[name], b[name])


def test_open_store_types_the_manifest_and_lists_its_shards(tmp_path):
    infos = [write_shard(tmp_path / shard_name("st", i), [_target(10 * i + j) for j in range(2)]) for i in (0, 1)]
    empty = write_shard(tmp_path / shard_name("st", 2), [])
    write_manifest(
        tmp_path,
        {
            "name": "st",
            "kind": "target_pairs",
            "complete": True,
            "size_wh": [W, H],
            "estimator": "dis",
            "config": {"estimator_options": {"preset": "fast"}, "plan_sha256": "abc"},
            "num_samples": 4,
            "shards": [*infos, empty],
        },
    )
    info = open_store(tmp_path)
    assert isinstance(info, StoreInfo) and info.kind == "target_pairs" and info.complete
    assert info.size_wh == (W, H) and info.size_hw == (H, W) and info.estimator == "dis"
    assert dict(info.estimator_options) == {"preset": "fast"} and info.plan_sha256 == "abc" and info.num_samples == 4
    assert [s.path.name for s in info.shards] == [shard_name("st", i) for i in range(3)]
    assert info.shards[0].sha256 == infos[0]["sha256"] and info.shards[2].samples == 0
    assert info.sample_shards() == tuple(str(tmp_path / shard_name("st", i)) for i in (0, 1))  # the empty one left out
    assert info.check(kind="target_pairs", size_hw=(H, W)) is info
    with pytest.raises(InputError, match="estimator='dis', expected 'flownet2'"):
        info.check(estimator="flownet2")
    (tmp_path / shard_name("st", 1)).unlink()
    with pytest.raises(InputError, match="listed in the manifest is missing"):
        info.sample_shards()


def test_raw_samples_groups_members_by_key_and_names_a_bad_tar(tmp_path):
    path = tmp_path / "st-000000.tar"
    write_shard(path, [_target(s) for s in range(3)])
    raws = list(raw_samples(path))
    assert [r["__key__"] for r in raws] == [f"city_000000_{s:06d}" for s in range(3)]
    assert all(r["__url__"] == str(path) and isinstance(r["frame0.png"], bytes) for r in raws)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    for bad in (tmp_path / "junk.tar", tmp_path / "absent.tar"):
        with pytest.raises(InputError) as err:
            list(raw_samples(bad))
        assert str(err.value).startswith(f"{bad}: unreadable or truncated shard") and "\n" not in str(err.value)


def test_atomic_path_renames_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "file.bin"
    with atomic_path(target) as partial:
        assert partial.parent == tmp_path and partial.name.endswith(PARTIAL_SUFFIX) and str(os.getpid()) in partial.name
        partial.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and file_sha256(target) == hashlib.sha256(b"whole").hexdigest()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "other.bin") as partial:
        partial.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]
