"""The class legend, figure grids with it (pipeline/sources/figures.py), and videos a browser can play where OpenCV
allows (trainer/evaluation/visualize.py)."""

import cv2
import numpy as np
import pytest

from pipeline.sources import LEGEND_ENTRY_WIDTH, class_legend, figure_grid, get_protocol
from trainer.evaluation.visualize import VIDEO_CODECS, VideoSink, write_mp4

VIPER15 = get_protocol("viper15")


def colours_in(image):
    return {tuple(int(v) for v in c) for c in image.reshape(-1, 3)}


@pytest.mark.parametrize("width", [LEGEND_ENTRY_WIDTH + 10, 640])
def test_the_legend_shows_every_class_colour_and_wraps_to_its_width(width):
    strip = class_legend(VIPER15, width)
    assert strip.shape[1] == width and strip.dtype == np.uint8
    assert {tuple(int(v) for v in c) for c in VIPER15.palette[: VIPER15.num_classes]} <= colours_in(strip)
    narrow, wide = class_legend(VIPER15, LEGEND_ENTRY_WIDTH + 10), class_legend(VIPER15, 640)
    assert narrow.shape[0] > wide.shape[0]  # one entry per row is taller than five


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
