"""Dataset readers and image files on small trees written here (cv2 and hand-built PNGs), checked by hand."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from label_tables import (
    SYNTHIA11_FROM_CITYSCAPES,
    SYNTHIA12_FROM_SYNTHIA,
    VIPER15_FROM_CITYSCAPES,
    VIPER15_FROM_VIPER,
)

from pipeline.errors import InputError
from pipeline.sources import cityscapes, get_protocol, list_source, read_source_label, synthia, viper
from pipeline.sources.images import (
    read_palette_png,
    read_png_unchanged,
    read_rgb,
    resize_label,
    resize_rgb,
    write_palette_png,
)

# ---------------------------------------------------------------- hand-built PNGs (PNG spec, written with zlib)


def _chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width, height, bit_depth, color_type, rows, extra=()):
    """A PNG from already filtered scanlines (each starting with its filter type byte)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", ihdr),
            *extra,
            _chunk(b"IDAT", zlib.compress(b"".join(rows))),
            _chunk(b"IEND", b""),
        ]
    )


def _filter_row(kind, row, prev):
    """PNG filter `kind` (0-4) of one scanline with 1 byte per pixel, as the spec defines it."""
    out = []
    for i, x in enumerate(row):
        a, b, c = (row[i - 1] if i else 0), prev[i], (prev[i - 1] if i else 0)
        if kind == 0:
            pred = 0
        elif kind == 1:
            pred = a
        elif kind == 2:
            pred = b
        elif kind == 3:
            pred = (a + b) // 2
        else:
            p = a + b - c
            pred = min((abs(p - a), 0, a), (abs(p - b), 1, b), (abs(p - c), 2, c))[2]
        out.append((x - pred) % 256)
    return bytes([kind] + out)


def _indexed_png_all_filters(indices, palette_rgb):
    rows, prev = [], [0] * indices.shape[1]
    for r, row in enumerate(indices.tolist()):
        rows.append(_filter_row(r % 5, row, prev))
        prev = row
    extra = [_chunk(b"PLTE", bytes(np.asarray(palette_rgb, np.uint8).ravel())), _chunk(b"tRNS", b"\x00\x80")]
    return _png(indices.shape[1], indices.shape[0], 8, 3, rows, [_chunk(b"gAMA", struct.pack(">I", 45455))] + extra)


def _rgb16_png(rgb):
    """16-bit RGB PNG (colour type 2), channels in R, G, B order, big-endian."""
    rows = [b"\x00" + row.astype(">u2").tobytes() for row in rgb]
    return _png(rgb.shape[1], rgb.shape[0], 16, 2, rows)


def _assert_one_line_error(call, *names):
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message
    return message


# ---------------------------------------------------------------- images.py


def test_read_rgb_is_rgb_order(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    (tmp_path / "a.png").write_bytes(_png(4, 3, 8, 2, [b"\x00" + row.tobytes() for row in rgb]))
    assert np.array_equal(read_rgb(tmp_path / "a.png"), rgb)
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((16, 16, 3), (30, 20, 10), np.uint8))  # BGR on disk
    assert np.abs(read_rgb(tmp_path / "a.jpg").astype(int) - [10, 20, 30]).max() <= 2


def test_palette_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 32, (9, 13)).astype(np.uint8)
    palette = [(i, 255 - i, (7 * i) % 256) for i in range(32)]
    write_palette_png(tmp_path / "cls.png", indices, palette)
    assert np.array_equal(read_palette_png(tmp_path / "cls.png"), indices)
    # libpng (through OpenCV) sees the palette colours the writer stored: BGR of palette[index].
    bgr = cv2.imread(str(tmp_path / "cls.png"), cv2.IMREAD_COLOR)
    assert np.array_equal(bgr[..., ::-1], np.asarray(palette, np.uint8)[indices])
    with pytest.raises(ValueError):
        write_palette_png(tmp_path / "bad.png", np.array([[3]]), [(0, 0, 0)] * 3)


def test_hand_built_indexed_pngs(tmp_path):
    indices = np.array(
        [
            [0, 1, 2, 30, 31, 5, 9],
            [9, 9, 0, 1, 31, 31, 2],
            [4, 4, 4, 4, 4, 4, 4],
            [31, 0, 31, 0, 31, 0, 31],
            [1, 2, 3, 4, 5, 6, 7],
            [7, 6, 5, 4, 3, 2, 1],
        ],
        np.uint8,
    )
    palette = [(200, 200, 200)] * 32  # every index has the same colour: only the index tells them apart
    (tmp_path / "filters.png").write_bytes(_indexed_png_all_filters(indices, palette))
    assert np.array_equal(read_palette_png(tmp_path / "filters.png"), indices)
    # 4-bit indexed: two pixels per byte, high nibble first.
    nibbles = np.array([[1, 15, 0], [7, 3, 12]], np.uint8)
    rows = [b"\x00" + bytes([r[0] << 4 | r[1], r[2] << 4]) for r in nibbles.tolist()]
    plte = _chunk(b"PLTE", bytes(16 * 3))
    (tmp_path / "nibbles.png").write_bytes(_png(3, 2, 4, 3, rows, [plte]))
    assert np.array_equal(read_palette_png(tmp_path / "nibbles.png"), nibbles)
    # An 8-bit grayscale PNG whose values are the ids is accepted as is.
    cv2.imwrite(str(tmp_path / "gray.png"), indices)
    assert np.array_equal(read_palette_png(tmp_path / "gray.png"), indices)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((2, 2, 3), np.uint8))
    _assert_one_line_error(lambda: read_palette_png(tmp_path / "rgb.png"), tmp_path / "rgb.png", "indexed")


def test_bad_image_files_raise_input_error(tmp_path):
    cv2.imwrite(str(tmp_path / "ok.png"), np.random.default_rng(1).integers(0, 255, (40, 50), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "ok.jpg"), np.random.default_rng(2).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    png, jpg = (tmp_path / "ok.png").read_bytes(), (tmp_path / "ok.jpg").read_bytes()
    idat = png.index(b"IDAT") + 8
    bad = {
        "half.png": png[: len(png) // 2],
        "no_iend.png": png[:-12],
        "flipped.png": png[:idat] + bytes([png[idat] ^ 0xFF]) + png[idat + 1 :],
        "garbage.png": bytes(range(256)) * 4,
        "empty.png": b"",
        "half.jpg": jpg[: len(jpg) * 6 // 10],
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        path = tmp_path / name
        _assert_one_line_error(lambda p=path: read_rgb(p), path)
        if name.endswith(".png"):
            _assert_one_line_error(lambda p=path: read_png_unchanged(p), path)
            _assert_one_line_error(lambda p=path: read_palette_png(p), path)
    assert "not found" in _assert_one_line_error(lambda: read_rgb(tmp_path / "nope.png"), tmp_path / "nope.png")
    _assert_one_line_error(lambda: read_rgb(tmp_path), tmp_path)  # a directory
    _assert_one_line_error(lambda: read_png_unchanged(tmp_path / "ok.jpg"), tmp_path / "ok.jpg", "not a PNG")


def test_read_png_unchanged_keeps_16_bit(tmp_path):
    values = np.array([[0, 1, 256], [4095, 65535, 300]], np.uint16)
    (tmp_path / "g16.png").write_bytes(_png(3, 2, 16, 0, [b"\x00" + r.astype(">u2").tobytes() for r in values]))
    out = read_png_unchanged(tmp_path / "g16.png")
    assert out.dtype == np.uint16 and np.array_equal(out, values)


def test_resize_label_is_pixel_centre_nearest():
    label = np.arange(54, dtype=np.uint8).reshape(6, 9)
    for out_h, out_w in [(4, 6), (3, 3), (12, 27), (5, 7)]:
        rows = np.floor((np.arange(out_h) + 0.5) * 6 / out_h).astype(int)
        cols = np.floor((np.arange(out_w) + 0.5) * 9 / out_w).astype(int)
        assert np.array_equal(resize_label(label, (out_w, out_h)), label[rows][:, cols])


def test_resize_rgb_area_when_shrinking_cubic_when_enlarging():
    img = np.random.default_rng(3).integers(0, 256, (8, 12, 3)).astype(np.uint8)
    block_mean = img.reshape(4, 2, 6, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(resize_rgb(img, (6, 4)).astype(float) - block_mean).max() <= 0.5 + 1e-9
    big = resize_rgb(img, (24, 16))
    assert big.shape == (16, 24, 3)
    assert np.array_equal(big, cv2.resize(img, (24, 16), interpolation=cv2.INTER_CUBIC))
    assert resize_rgb(img, (12, 8)) is img


# ---------------------------------------------------------------- VIPER


def _viper_tree(root, cls_ids):
    img = cv2.imencode(".jpg", np.zeros((4, 8, 3), np.uint8))[1].tobytes()
    palette = [(i, i, i) for i in range(32)]
    for seq, frames, labelled in [("001", range(0, 13), [0, 5, 10]), ("002", range(0, 21), [10, 20])]:
        (root / "train/img" / seq).mkdir(parents=True)
        (root / "train/cls" / seq).mkdir(parents=True)
        for f in frames:
            (root / "train/img" / seq / f"{seq}_{f:05d}.jpg").write_bytes(img)
        for f in labelled:
            write_palette_png(root / "train/cls" / seq / f"{seq}_{f:05d}.png", cls_ids, palette)
    write_palette_png(root / "train/cls/001/001_00030.png", cls_ids, palette)  # no image: skipped


def test_viper_listing_and_labels(tmp_path):
    ids = np.arange(32, dtype=np.uint8).reshape(4, 8)  # bottom-row centre holds 28 (not car): nothing removed
    _viper_tree(tmp_path, ids)
    records = viper.list_samples(tmp_path)
    assert [r.key for r in records] == ["viper_001_00000", "viper_001_00010", "viper_002_00010", "viper_002_00020"]
    assert records[1].rel_image == "train/img/001/001_00010.jpg"
    assert records[1].rel_label == "train/cls/001/001_00010.png"
    assert list_source("viper", tmp_path) == records
    expected = np.array(VIPER15_FROM_VIPER, np.uint8)[ids]
    assert np.array_equal(viper.read_label(records[0].label_path, get_protocol("viper15")), expected)
    assert np.array_equal(read_source_label("viper", records[0].label_path, get_protocol("viper15")), expected)
    _assert_one_line_error(lambda: viper.read_label(records[0].label_path, get_protocol("synthia11")), "synthia11")


def test_ego_vehicle_removal_hand_example(tmp_path):
    ids = np.array(
        [
            [0, 24, 24, 0, 0, 0, 0, 0],
            [0, 24, 24, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 24, 0, 0, 0, 0],  # touches the ego blob only diagonally: 8-connected, removed
            [0, 0, 0, 0, 24, 24, 24, 0],
            [0, 3, 3, 3, 24, 24, 24, 24],  # bottom-row centre (5, 4) is car
        ],
        np.uint8,
    )
    expected = np.array(
        [
            [0, 24, 24, 0, 0, 0, 0, 0],
            [0, 24, 24, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 3, 3, 3, 0, 0, 0, 0],
        ],
        np.uint8,
    )
    out = viper.remove_ego_vehicle(ids)
    assert np.array_equal(out, expected) and ids[5, 4] == 24  # input untouched
    no_ego = ids.copy()
    no_ego[5, 4] = 3
    assert np.array_equal(viper.remove_ego_vehicle(no_ego), no_ego)
    write_palette_png(tmp_path / "ego.png", ids, [(0, 0, 0)] * 32)
    train = viper.read_label(tmp_path / "ego.png", get_protocol("viper15"))
    assert (train[:2, 1:3] == 10).all() and (train[3:5] == 255).all() and (train[5, 4:] == 255).all()
    assert (train[5, 1:4] == 0).all()  # VIPER road (3) -> train id 0


def test_viper_bad_roots(tmp_path):
    _assert_one_line_error(lambda: viper.list_samples(tmp_path / "missing"), tmp_path / "missing")
    (tmp_path / "train/img").mkdir(parents=True)
    _assert_one_line_error(lambda: viper.list_samples(tmp_path), "train/cls/<seq>/<seq>_<frame5>.png")
    (tmp_path / "train/cls/001").mkdir(parents=True)
    _assert_one_line_error(lambda: viper.list_samples(tmp_path), "no labelled VIPER frames")
    _assert_one_line_error(lambda: list_source("gta5", tmp_path), "gta5", "viper", "synthia")


# ---------------------------------------------------------------- Cityscapes-Seq

IMG = "leftImg8bit_sequence/train"


def _cityscapes_tree(root, labelled):
    """frankfurt 000000: snippets 10-14 and 20-23 (a gap); frankfurt 000001: 5-6; aachen 000000: 17-19."""
    frame = cv2.imencode(".png", np.zeros((2, 3, 3), np.uint8))[1].tobytes()
    label = cv2.imencode(".png", np.zeros((2, 3), np.uint8))[1].tobytes()
    for city, seq, frames in [
        ("frankfurt", "000000", [*range(10, 15), *range(20, 24)]),
        ("frankfurt", "000001", [5, 6]),
        ("aachen", "000000", [17, 18, 19]),
    ]:
        (root / IMG / city).mkdir(parents=True, exist_ok=True)
        for f in frames:
            (root / IMG / city / f"{city}_{seq}_{f:06d}_leftImg8bit.png").write_bytes(frame)
    (root / IMG / "frankfurt/frankfurt_000000_000015_leftImg8bit.json").write_text("{}")  # not a frame
    for name in labelled:
        city = name.split("_")[0]
        (root / "gtFine/train" / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine/train" / city / f"{name}_gtFine_labelIds.png").write_bytes(label)


def test_cityscapes_all_pairs(tmp_path):
    _cityscapes_tree(tmp_path, ["aachen_000000_000019"])
    pairs = cityscapes.list_pairs(tmp_path)
    expected = [("aachen", "000000", f) for f in (18, 19)] + [("frankfurt", "000000", f) for f in (11, 12, 13, 14)]
    expected += [("frankfurt", "000000", f) for f in (21, 22, 23)] + [("frankfurt", "000001", 6)]
    assert [(p.city, p.seq, p.frame) for p in pairs] == expected
    first = pairs[0]
    assert first.key == "aachen_000000_000018"
    assert first.rel0 == f"{IMG}/aachen/aachen_000000_000017_leftImg8bit.png"
    assert first.rel1 == f"{IMG}/aachen/aachen_000000_000018_leftImg8bit.png"
    assert first.path1 == str(tmp_path.absolute() / first.rel1)


def test_cityscapes_annotated_pairs_and_snippets(tmp_path):
    _cityscapes_tree(tmp_path, ["frankfurt_000000_000022", "aachen_000000_000019", "frankfurt_000000_000013"])
    pairs = cityscapes.list_pairs(tmp_path, "train", pairs="annotated")
    assert [p.key for p in pairs] == ["aachen_000000_000019", "frankfurt_000000_000013", "frankfurt_000000_000022"]
    assert pairs[2].rel0 == f"{IMG}/frankfurt/frankfurt_000000_000021_leftImg8bit.png"
    frames = cityscapes.list_annotated(tmp_path, "train")
    assert [f.key for f in frames] == [p.key for p in pairs]
    assert [n for n, _ in frames[2].snippet] == [20, 21, 22, 23]
    assert [n for n, _ in frames[1].snippet] == [10, 11, 12, 13, 14]
    assert frames[0].snippet[0][1].endswith("aachen_000000_000017_leftImg8bit.png")
    assert frames[2].label_path.endswith("gtFine/train/frankfurt/frankfurt_000000_000022_gtFine_labelIds.png")


def test_cityscapes_labelled_frames_as_a_source(tmp_path):
    _cityscapes_tree(tmp_path, ["frankfurt_000000_000022", "aachen_000000_000019"])
    records = list_source("cityscapes", tmp_path)
    assert [r.key for r in records] == ["cityscapes_aachen_000000_000019", "cityscapes_frankfurt_000000_000022"]
    assert records[1].rel_image == f"{IMG}/frankfurt/frankfurt_000000_000022_leftImg8bit.png"
    assert records[1].rel_label == "gtFine/train/frankfurt/frankfurt_000000_000022_gtFine_labelIds.png"
    road_label_id, road_train_id = 7, 0  # Table 1's first column
    cv2.imwrite(str(tmp_path / "l.png"), np.full((2, 3), road_label_id, np.uint8))
    assert (read_source_label("cityscapes", tmp_path / "l.png", get_protocol("synthia11")) == road_train_id).all()


def test_cityscapes_errors(tmp_path):
    _assert_one_line_error(lambda: cityscapes.list_pairs(tmp_path / "nope"), tmp_path / "nope")
    _assert_one_line_error(
        lambda: cityscapes.list_pairs(tmp_path),
        f"{tmp_path}/leftImg8bit_sequence/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png",
    )
    (tmp_path / IMG / "aachen").mkdir(parents=True)
    _assert_one_line_error(lambda: cityscapes.list_pairs(tmp_path), "no frames found")
    _cityscapes_tree(tmp_path, ["frankfurt_000000_000020"])  # first frame of its snippet: no frame 19
    _assert_one_line_error(
        lambda: cityscapes.list_pairs(tmp_path, pairs="annotated"),
        "frankfurt_000000_000020_leftImg8bit.png",
        "frankfurt_000000_000019_leftImg8bit.png",
    )
    _assert_one_line_error(lambda: cityscapes.list_pairs(tmp_path, pairs="some"), "--pairs")
    (tmp_path / "leftImg8bit_sequence/val/aachen").mkdir(parents=True)
    (tmp_path / "leftImg8bit_sequence/val/aachen/aachen_000000_000019_leftImg8bit.png").write_bytes(b"png")
    _assert_one_line_error(lambda: cityscapes.list_annotated(tmp_path, "val"), "gtFine/val")
    _cityscapes_tree(tmp_path, ["aachen_000000_000030"])  # a label without its image
    _assert_one_line_error(lambda: cityscapes.list_annotated(tmp_path, "train"), "aachen_000000_000030")


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    label_ids = np.array([*range(34), 255], np.uint8).reshape(5, 7)  # 255 = license plate (-1) in uint8
    cv2.imwrite(str(tmp_path / "l.png"), label_ids)
    for name, table in [("viper15", VIPER15_FROM_CITYSCAPES), ("synthia11", SYNTHIA11_FROM_CITYSCAPES)]:
        expected = np.array([*table, 255], np.uint8).reshape(5, 7)
        assert np.array_equal(cityscapes.read_label(tmp_path / "l.png", get_protocol(name)), expected)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((2, 2, 3), np.uint8))
    _assert_one_line_error(lambda: cityscapes.read_label(tmp_path / "rgb.png", get_protocol("viper15")), "rgb.png")


# ---------------------------------------------------------------- SYNTHIA-SEQS


def _synthia_tree(root, image_dir, label_dir, label_png):
    (root / image_dir).mkdir(parents=True)
    (root / label_dir).mkdir(parents=True)
    image = cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes()
    for f in range(4):
        (root / image_dir / f"{f:06d}.png").write_bytes(image)
    for f in (0, 1, 3):  # frame 2 has no label
        (root / label_dir / f"{f:06d}.png").write_bytes(label_png)


def test_synthia_both_layouts_and_labels(tmp_path):
    rng = np.random.default_rng(4)
    class_ids = np.array([*range(16), 300, 12], np.uint16).reshape(3, 6)  # 300: no class -> ignore
    rgb = np.stack([class_ids, rng.integers(0, 2000, (3, 6)), np.full((3, 6), 9)], axis=-1)  # R class, G instance
    expected = np.array([*SYNTHIA12_FROM_SYNTHIA, 255, 255], np.uint8).reshape(3, 6)
    layouts = {"orig": ("RGB/Stereo_Left/Omni_F", "GT/LABELS/Stereo_Left/Omni_F"), "flat": ("rgb", "label")}
    for name, (image_dir, label_dir) in layouts.items():
        root = tmp_path / name / "SYNTHIA-SEQS-04-DAWN"
        _synthia_tree(root, image_dir, label_dir, _rgb16_png(rgb))
        records = synthia.list_samples(root)
        assert [r.key for r in records] == ["synthia_000000", "synthia_000001", "synthia_000003"]
        assert records[2].rel_image == f"{image_dir}/000003.png" and records[2].rel_label == f"{label_dir}/000003.png"
        assert list_source("synthia", root) == records
        assert np.array_equal(synthia.read_label(records[0].label_path, get_protocol("synthia12")), expected)
    out = read_source_label("synthia", records[0].label_path, get_protocol("synthia11"))
    assert out[0].tolist() == [255, 7, 2, 0, 1, 255]  # ids 0-5 under the 11-class protocol: fence (5) ignored


def test_synthia_errors(tmp_path):
    _assert_one_line_error(lambda: synthia.list_samples(tmp_path / "nope"), tmp_path / "nope")
    (tmp_path / "RGB").mkdir()
    _assert_one_line_error(
        lambda: synthia.list_samples(tmp_path), "RGB/Stereo_Left/Omni_F", "GT/LABELS", "rgb/", "label/"
    )
    (tmp_path / "rgb").mkdir(exist_ok=True)
    (tmp_path / "label").mkdir()
    _assert_one_line_error(lambda: synthia.list_samples(tmp_path), "no SYNTHIA frames")
    cv2.imwrite(str(tmp_path / "gray.png"), np.zeros((2, 2), np.uint8))
    _assert_one_line_error(lambda: synthia.read_label(tmp_path / "gray.png", get_protocol("synthia11")), "gray.png")
    _assert_one_line_error(lambda: synthia.read_label(tmp_path / "gray.png", get_protocol("viper15")), "viper15")
