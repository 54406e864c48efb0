"""The class legend and figure grids with it (pipeline/sources/figures.py), the pictures that carry it (eval overlays,
the world's contact sheet), and videos a browser can play where OpenCV allows (trainer/evaluation/visualize.py)."""

import cv2
import numpy as np
import pytest

from pipeline.sources import LEGEND_ROW_HEIGHT, class_legend, figure_grid, get_protocol, legend_classes
from pipeline.sources import legend_entry_width as entry_width
from pipeline.world.summary import world_class_ids
from trainer.evaluation.visualize import VIDEO_CODECS, VideoSink, save_prediction_pngs, write_mp4

VIPER15 = get_protocol("viper15")
SYNTHIA11 = get_protocol("synthia11")


def colours_in(image):
    return {tuple(int(v) for v in c) for c in image.reshape(-1, 3)}


def palette_of(protocol, ids):
    return {tuple(int(v) for v in protocol.palette[i]) for i in ids}


def coloured(colours):
    """The colours that are not greys (anti-aliased black text leaves greys such as building's (70, 70, 70))."""
    return {c for c in colours if len(set(c)) > 1}


@pytest.mark.parametrize("width", ["one entry", 640])
def test_the_legend_shows_every_class_colour_and_wraps_to_its_width(width):
    width = entry_width(VIPER15) + 10 if width == "one entry" else width
    strip = class_legend(VIPER15, width)
    assert strip.shape[1] == width and strip.dtype == np.uint8
    assert palette_of(VIPER15, range(VIPER15.num_classes)) <= colours_in(strip)
    narrow, wide = class_legend(VIPER15, entry_width(VIPER15) + 10), class_legend(VIPER15, 640)
    assert narrow.shape[0] > wide.shape[0] and narrow.shape[0] >= 15 * LEGEND_ROW_HEIGHT  # one entry per row: 15 rows


def test_the_legend_lists_only_the_classes_asked_for_and_car_truck_bus_are_large():
    car, truck, bus = (VIPER15.class_names.index(n) for n in ("car", "truck", "bus"))
    labels = np.array([[0, car, 255], [truck, 200, car]], np.uint8)  # 200 and 255: no trained class
    assert legend_classes(VIPER15, labels) == [0, car, truck]
    strip = class_legend(VIPER15, 640, legend_classes(VIPER15, labels))
    assert palette_of(VIPER15, [0, car, truck]) <= colours_in(strip)
    assert not coloured(palette_of(VIPER15, set(range(15)) - {0, car, truck})) & colours_in(strip)
    for class_id in (car, truck):  # each swatch is a solid block of at least 14x26 pixels
        mask = np.all(strip == VIPER15.palette[class_id], axis=2)
        ys, xs = np.nonzero(mask)
        assert mask.sum() >= 14 * 26 and np.ptp(ys) + 1 >= 14 and np.ptp(xs) + 1 >= 26
    assert bus not in legend_classes(VIPER15, labels)


def test_the_worlds_legend_lists_the_classes_the_world_holds_in_each_protocol():
    """The world (pipeline/world/classes.py) has no rider, truck, bus, motorcycle, bicycle; its poles are VIPER
    'infrastructure' (ignored by viper15); SYNTHIA-SEQS and synthia11 have no terrain and no fence."""
    names = lambda p, ids: [p.class_names[i] for i in ids]  # noqa: E731
    viper = ["road", "sidewalk", "building", "fence", "light", "sign", "vegetation", "terrain", "sky", "person", "car"]
    synthia = ["road", "sidewalk", "building", "pole", "light", "sign", "vegetation", "sky", "person", "car"]
    assert sorted(names(VIPER15, world_class_ids(VIPER15, "viper"))) == sorted(viper)  # the README's 11 of 15
    assert sorted(names(SYNTHIA11, world_class_ids(SYNTHIA11, "synthia"))) == sorted(synthia)


def test_an_eval_overlay_carries_the_legend_of_the_classes_it_shows(tmp_path):
    rgb = np.full((16, 40, 3), 128, np.uint8)
    pred = np.zeros((32, 80), np.uint8)
    pred[:, 40:] = 10  # road and car
    label = np.full((32, 80), 255, np.uint8)
    label[:8] = 8  # sky in the ground truth only
    save_prediction_pngs(tmp_path, "k", rgb, pred, label, VIPER15)
    over = cv2.cvtColor(cv2.imread(str(tmp_path / "k_overlay.png")), cv2.COLOR_BGR2RGB)
    assert over.shape[1] == 80 and over.shape[0] > 32  # the overlay at the label's size, the legend below
    below = colours_in(over[32:])
    assert palette_of(VIPER15, [0, 8, 10]) <= below
    assert not coloured(palette_of(VIPER15, set(range(15)) - {0, 8, 10})) & below


def test_a_figure_grid_with_a_legend_keeps_the_grid_on_top():
    tiles = [[np.zeros((20, 30, 3), np.uint8), np.full((20, 30), 255, np.uint8)]]
    plain = figure_grid(tiles, titles=["a", "b"])
    with_legend = figure_grid(tiles, titles=["a", "b"], legend=VIPER15)
    assert with_legend.shape[1] == plain.shape[1] and with_legend.shape[0] > plain.shape[0]
    assert np.array_equal(with_legend[: plain.shape[0]], plain)
    assert tuple(VIPER15.palette[10]) in colours_in(with_legend[plain.shape[0] :])  # car's colour below the grid


def _read_back(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames, capture.get(cv2.CAP_PROP_FPS)
        frames.append(frame)


@pytest.mark.parametrize("codecs", [("h264", "vp9", "mp4v"), ("mp4v",)])
def test_a_video_sink_writes_a_readable_file_with_the_codec_it_reports(tmp_path, codecs):
    frames = [np.full((21, 33, 3), 40 * i, np.uint8) for i in range(3)]  # odd sides: padded to even
    with VideoSink(tmp_path / "clip.mp4", 8.0, codecs) as sink:
        for frame in frames:
            sink.write(frame)
    assert sink.codec in codecs and sink.path.suffix == VIDEO_CODECS[sink.codec][1] and sink.count == 3
    read, fps = _read_back(sink.path)
    assert len(read) == 3 and read[0].shape == (22, 34, 3) and fps == pytest.approx(8.0)
    assert abs(int(read[2][5, 5].mean()) - 80) <= 8  # lossy, but the frame's grey level survives


def test_write_mp4_keeps_its_name_and_refuses_frames_of_another_size(tmp_path):
    assert write_mp4(tmp_path / "a.mp4", [np.zeros((8, 8, 3), np.uint8)] * 2, 10.0) == 2
    assert (tmp_path / "a.mp4").is_file()
    with pytest.raises(ValueError, match="8x8"):
        write_mp4(tmp_path / "b.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], 10.0)
