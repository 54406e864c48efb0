"""The shard flow codec (zstd-dx16x64): precision, range, hand-worked bytes, legacy png16x64 reading, size bound,
corrupt bytes."""

import io

import cv2
import numpy as np
import pytest
import skimage.data
import webdataset as wds
import zstandard
from PIL import Image

from pipeline.errors import InputError
from pipeline.flow.codec import (
    FLOW_CODEC,
    FLOW_EXT,
    FLOW_MAX_PX,
    FLOW_MIN_PX,
    LEGACY_EXT,
    decode_flow,
    encode_flow,
    encode_legacy_png16,
)
from pipeline.flow.dis import DISEstimator
from pipeline.shards import decode_sample

STEP_PX = 1.0 / 64  # the precision the design requires
NPY_BUDGET = 0.40  # at most 40% of DA-VSN's int16 x10 .npy bytes


def test_round_trip_within_half_a_step_for_large_negative_and_odd_sized_flows():
    rng = np.random.default_rng(0)
    for size_hw in [(1, 1), (7, 5), (3, 513), (64, 48)]:
        flow = rng.uniform(-511.0, 511.0, (2, *size_hw)).astype(np.float32)
        decoded = decode_flow(encode_flow(flow))
        assert decoded.shape == (2, *size_hw) and decoded.dtype == np.float32
        assert np.abs(decoded - flow).max() <= STEP_PX / 2 + 1e-4  # float32 inputs near 511 carry 3e-5 px
        assert np.all(decoded * 64 == np.round(decoded * 64))  # every value lies on the 1/64 px grid


def test_hand_worked_values_and_range_limits():
    flow = np.array([[[0.3, -512.0, 1000.0, 0.0]], [[-0.3, 511.984375, -1000.0, 2.0 / 64]]], np.float32)  # (2, 1, 4)
    decoded = decode_flow(encode_flow(flow))
    # 0.3 * 64 = 19.2 -> 19 -> 0.296875; the range ends are exact; beyond them the flow is clipped.
    expected = [[[0.296875, -512.0, 511.984375, 0.0]], [[-0.296875, 511.984375, -512.0, 0.03125]]]
    np.testing.assert_array_equal(decoded, np.array(expected, np.float32))
    assert (FLOW_MIN_PX, FLOW_MAX_PX) == (-512.0, 511.984375)


def test_layout_hand_worked_bytes():
    flow = np.zeros((2, 2, 3), np.float32)  # (2, H, W): u, then v
    flow[0] = [[1.0, -1.0, 0.5], [0.0, 2.25, -0.015625]]  # codes 64 -64 32 / 0 144 -1
    flow[1] = [[-3.0, 0.0, 4.0], [7.5, -0.5, 100.0]]  # codes -192 0 256 / 480 -32 6400
    data = encode_flow(flow)
    assert data[:16] == b"I2VF\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00"  # magic, version 1, H = 2, W = 3
    payload = zstandard.ZstdDecompressor().decompress(data[16:])
    # Left differences per row (first pixel from 0): u 64 -128 96 / 0 144 -145, v -192 192 256 / 480 -512 6432;
    # zigzag: 128 255 192 / 0 288 289, 383 384 512 / 960 1023 12864; low bytes of all twelve, then high bytes.
    low = [128, 255, 192, 0, 32, 33, 127, 128, 0, 192, 255, 64]
    high = [0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 50]
    assert list(payload) == low + high
    np.testing.assert_array_equal(decode_flow(data), flow)


def test_legacy_png16_stores_still_decode():
    flow = np.zeros((2, 2, 3), np.float32)
    flow[0] = [[1.0, -1.0, 0.5], [0.0, 2.25, -0.015625]]
    flow[1] = [[-3.0, 0.0, 4.0], [7.5, -0.5, 100.0]]
    legacy = encode_legacy_png16(flow)
    with Image.open(io.BytesIO(legacy)) as png:  # the shard layout v1 codec, read by an independent decoder
        assert png.format == "PNG" and png.size == (3, 4)  # W, 2H
        codes = np.array(png).astype(np.int64)
    expected = np.concatenate((flow[0], flow[1]), axis=0) * 64 + 2**15  # u rows on top of v rows
    np.testing.assert_array_equal(codes, expected.astype(np.int64))
    np.testing.assert_array_equal(decode_flow(legacy), flow)
    member = {"__key__": "k", f"flow01.{LEGACY_EXT}": legacy}
    np.testing.assert_array_equal(decode_sample(member)["flow01"], flow)


def test_out_of_range_can_raise_and_non_finite_always_raises():
    flow = np.zeros((2, 4, 4), np.float32)
    flow[0, 1, 2] = -600.0
    with pytest.raises(InputError, match="beyond the zstd-dx16x64 range"):
        encode_flow(flow, on_overflow="raise")
    assert decode_flow(encode_flow(flow, on_overflow="clip"))[0, 1, 2] == FLOW_MIN_PX
    flow[1, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        encode_flow(flow)


def test_corrupt_bytes_raise_input_error():
    data = encode_flow(np.random.default_rng(1).normal(0, 5, (2, 40, 30)))
    truncated = data[: len(data) // 2]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    eight_bit = cv2.imencode(".png", np.zeros((80, 30), np.uint8))[1].tobytes()
    odd_height = cv2.imencode(".png", np.zeros((81, 30), np.uint16))[1].tobytes()
    version_2 = data[:4] + b"\x02" + data[5:]
    wrong_size = data[:8] + (41).to_bytes(4, "little") + data[12:]  # the header claims 41 rows, the payload has 40
    for bad in [b"", b"not a flow", truncated, bytes(flipped), version_2, wrong_size, eight_bit, odd_height]:
        with pytest.raises(InputError, match="shard_0.tar:key.flow01"):
            decode_flow(bad, name="shard_0.tar:key.flow01")


def test_real_flow_fits_the_size_budget():
    left, right, _ = skimage.data.stereo_motorcycle()
    flow = DISEstimator("medium").flows(left, right)  # a real estimated flow, 741x500
    npy = io.BytesIO()
    np.save(npy, np.int16(flow * 10))  # DA-VSN's format
    assert len(encode_flow(flow)) < NPY_BUDGET * len(npy.getvalue())


def test_webdataset_autodecoder_leaves_the_member_alone():
    data = encode_flow(np.ones((2, 8, 8), np.float32))
    sample = {"__key__": "k", f"flow01.{FLOW_EXT}": data, "frame0.png": cv2.imencode(".png", np.zeros((8, 8, 3)))[1]}
    sample["frame0.png"] = sample["frame0.png"].tobytes()
    decoded = wds.autodecode.Decoder([wds.autodecode.imagehandler("rgb8")])(sample)
    assert decoded[f"flow01.{FLOW_EXT}"] == data and isinstance(decoded["frame0.png"], np.ndarray)
    assert FLOW_CODEC == "zstd-dx16x64" and FLOW_EXT == "zflow"
