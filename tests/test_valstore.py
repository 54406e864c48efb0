"""The Cityscapes-val HDF5 store without Ray: TC clip bounds, a Builder -> writer -> ValStore round trip."""

import cv2
import h5py
import numpy as np
import pytest
from prep_trees import frame_path, label_path, write_cityscapes

from pipeline.build import Builder
from pipeline.errors import InputError
from pipeline.flow.dis import DISEstimator
from pipeline.plan import PrepConfig
from pipeline.shards import VAL_KIND, ValStore, ValWriter, tc_clip_bounds
from pipeline.sources.cityscapes import list_annotated

NATIVE_HW, STORE_WH = (48, 96), (64, 32)
FIRST, COUNT, ANNOTATED = 10, 6, 13  # snippet frames 10..15, label on frame 13 (index 3)
HALF_STEP_PX = 1 / 128  # the flow codec stores 1/64 px steps, rounded to nearest
# Cityscapes labelId -> train id, typed in from the datasets' published label tables (everything else: 255).
INDEPENDENT_TABLES = {
    "viper15": {
        7: 0,
        8: 1,
        11: 2,
        13: 3,
        19: 4,
        20: 5,
        21: 6,
        22: 7,
        23: 8,
        24: 9,
        25: 9,
        26: 10,
        27: 11,
        28: 12,
        32: 13,
        33: 14,
    },
    "synthia11": {7: 0, 8: 1, 11: 2, 17: 3, 19: 4, 20: 5, 21: 6, 23: 7, 24: 8, 25: 9, 26: 10},
    "synthia12": {7: 0, 8: 1, 11: 2, 13: 3, 17: 4, 19: 5, 20: 6, 21: 7, 23: 8, 24: 9, 25: 10, 26: 11},
}


def test_tc_clip_bounds_match_a_brute_force_choice():
    for length in range(1, 9):
        for annotated in range(length):
            for window in range(1, 11):
                size = min(window, length)
                holding = [s for s in range(length - size + 1) if s <= annotated < s + size]
                ending = [s for s in holding if s + size - 1 == annotated]
                start = ending[0] if ending else min(holding)
                assert tc_clip_bounds(length, annotated, window) == (start, start + size)
    assert tc_clip_bounds(30, 19, 30) == (0, 30)  # Cityscapes: the whole snippet by default
    with pytest.raises(InputError, match="--tc-window"):
        tc_clip_bounds(30, 19, 0)


def _store(tmp_path, tc_window):
    root = tmp_path / "cs"
    write_cityscapes(root, "val", [("lindau", "000003", FIRST, COUNT, ANNOTATED)], NATIVE_HW, seed=3)
    config = PrepConfig(
        kind=VAL_KIND,
        src="cityscapes_val",
        root=str(root),
        out=str(tmp_path / "stores"),
        size_wh=STORE_WH,
        split="val",
        tc_window=tc_window,
        batch_size=2,
    )
    config.store_dir.mkdir(parents=True)
    (record,) = list_annotated(root, "val")
    item = Builder(config).val_item(record)
    with ValWriter(config.store_dir / "val.h5") as writer:
        writer.add(item)
        writer.commit()
    return root, config.store_dir


def _resized(root, frame):
    bgr = cv2.imread(str(frame_path(root, "val", "lindau", "000003", frame)))
    return cv2.resize(bgr, STORE_WH, interpolation=cv2.INTER_AREA)[..., ::-1]


def test_round_trip_labels_frames_and_flows(tmp_path):
    root, store_dir = _store(tmp_path, tc_window=3)
    store = ValStore(store_dir)
    key = f"lindau_000003_{ANNOTATED:06d}"
    assert store.keys() == [key] and len(store) == 1 and store.protocols == sorted(INDEPENDENT_TABLES)
    label_ids = cv2.imread(str(label_path(root, "val", "lindau", "000003", ANNOTATED)), cv2.IMREAD_UNCHANGED)
    for protocol, table in INDEPENDENT_TABLES.items():
        expected = np.vectorize(lambda v, t=table: t.get(int(v), 255))(label_ids).astype(np.uint8)
        assert store.label(key, protocol).shape == NATIVE_HW
        assert np.array_equal(store.label(key, protocol), expected)
    sample = store.sample(key)
    assert sample["frames"] == [11, 12, 13] and sample["annotated_index"] == 2  # 3 frames ending at frame 13
    assert sample["clip"].shape == (3, STORE_WH[1], STORE_WH[0], 3)
    for i, frame in enumerate(sample["frames"]):
        assert np.array_equal(sample["clip"][i], _resized(root, frame))
    assert np.array_equal(sample["image"], _resized(root, ANNOTATED))
    assert np.array_equal(store.image(key), sample["image"])
    dis = DISEstimator("medium")
    assert sample["clip_flows"].shape == (2, 2, STORE_WH[1], STORE_WH[0])
    for i in range(2):
        direct = dis.flows(_resized(root, 11 + i).copy(), _resized(root, 12 + i).copy())
        assert np.abs(sample["clip_flows"][i] - direct).max() <= HALF_STEP_PX + 1e-6
    label_rel = label_path(root, "val", "lindau", "000003", ANNOTATED).relative_to(root).as_posix()
    assert sample["meta"]["source_paths"]["label"] == label_rel
    assert sample["meta"]["estimator"] == "dis" and sample["meta"]["size_wh"] == list(STORE_WH)


def test_a_window_longer_than_the_snippet_takes_all_of_it(tmp_path):
    _, store_dir = _store(tmp_path, tc_window=30)
    sample = ValStore(store_dir / "val.h5").sample(f"lindau_000003_{ANNOTATED:06d}")
    assert sample["frames"] == list(range(FIRST, FIRST + COUNT)) and sample["annotated_index"] == ANNOTATED - FIRST
    assert sample["clip_flows"].shape[0] == COUNT - 1


def test_aborted_writer_leaves_nothing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(RuntimeError):
        with ValWriter(tmp_path / "val.h5"):
            raise RuntimeError("estimator crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no val store"):
        ValStore(tmp_path)
    with h5py.File(tmp_path / "val.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not an i2vda val store"):
        ValStore(tmp_path)
