"""`i2vda-predict` on a short mp4, a frame folder and one image made here with OpenCV; its one-line errors; and the
same train ids as `i2vda-eval --save-pred` on the val store's frames."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_eval_cli import INPUT_HW, LABEL_HW, constant_model, save_checkpoint

from pipeline.errors import EXIT_BAD_INPUT
from pipeline.shards import ValWriter, encode_val_item
from pipeline.sources import get_protocol, resize_rgb
from trainer.evaluation.eval_cli import main as eval_main
from trainer.evaluation.predict_cli import main
from trainer.evaluation.predict_footage import SUFFIXES
from trainer.models import build_segmenter

VIPER15 = get_protocol("viper15")
VIDEO_HW = (48, 64)  # the mp4's frames (H, W); the network runs at INPUT_HW (24, 40)
VIDEO_FPS = 12.5
VIDEO_FRAMES = 5

pytestmark = pytest.mark.usefixtures("one_thread")


def run(main_fn, args, capsys):
    """Run an entry point in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main_fn(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def smooth_frames(rng, count, size_hw):
    """(count, H, W, 3) uint8 frames of coloured blobs drifting right: something a network and DIS can follow."""
    h, w = size_hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, (3, 3))
    frames = []
    for t in range(count):
        channels = [
            128 + 100 * np.sin((xs - 2 * t) / (5 + 3 * c) + base[c, 0]) * np.cos(ys / (4 + c) + base[c, 1])
            for c in range(3)
        ]
        frames.append(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_mp4(path, frames, fps):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames.shape[2], frames.shape[1]))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_frames(folder, frames, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(names, frames):
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", build_segmenter("deeplab_tiny", 15))


def read_ids(path):
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 2 and image.dtype == np.uint8, path
    return image


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_a_video_gives_pictures_at_its_size_and_a_video_at_its_rate(tmp_path, capsys, random_ckpt):
    video = write_mp4(tmp_path / "clip.mp4", smooth_frames(np.random.default_rng(0), VIDEO_FRAMES, VIDEO_HW), VIDEO_FPS)
    out = tmp_path / "out"
    args = [
        "--ckpt",
        str(random_ckpt),
        "--input",
        str(video),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    code, stdout, err = run(main, [*args, "--color", "--overlay"], capsys)
    assert code == 0, err
    assert "warning: the frames are 64x48 (aspect 1.33) but the network runs at 40x24 (1.67)" in err
    assert "--size 32x24 keeps the frames' aspect" in err  # 24 * 64 / 48 = 32, a multiple of 8
    assert err.count("warning:") == 1  # once, not once per frame
    summary = json.loads((out / "predict.json").read_text())
    assert summary["frames"] == VIDEO_FRAMES and summary["kind"] == "video" and summary["fps"] == VIDEO_FPS
    assert summary["size_wh"] == [VIDEO_HW[1], VIDEO_HW[0]] and summary["network_size_wh"] == [40, 24]
    names = [f"frame_{i:06d}" for i in range(VIDEO_FRAMES)]
    assert sorted(p.name for p in (out / "pred").iterdir()) == sorted(
        f"{n}{suffix}" for n in names for suffix in ("_pred.png", "_pred_color.png", "_overlay.png")
    )
    for name in names:
        ids = read_ids(out / "pred" / f"{name}_pred.png")
        assert ids.shape == VIDEO_HW and ids.max() < VIPER15.num_classes
        color = read_rgb(out / "pred" / f"{name}_pred_color.png")
        assert np.array_equal(color, np.asarray(VIPER15.palette, np.uint8)[ids])  # the protocol's colours
        over = read_rgb(out / "pred" / f"{name}_overlay.png")  # the frame, then the legend of the classes it shows
        assert over.shape[1:] == (VIDEO_HW[1], 3) and over.shape[0] > VIDEO_HW[0]
        assert {tuple(VIPER15.palette[i]) for i in np.unique(ids)} <= {
            tuple(c) for c in over[VIDEO_HW[0] :][0::1, :].reshape(-1, 3)
        }
    # The video of frame | overlay plays back at the input's rate with every frame.
    playback = cv2.VideoCapture(summary["video"])
    assert playback.get(cv2.CAP_PROP_FPS) == pytest.approx(VIDEO_FPS)
    count = 0
    while playback.read()[0]:
        count += 1
    assert count == VIDEO_FRAMES and summary["video_codec"] in ("h264", "mp4v")  # auto: a fast codec
    assert (out / "legend.png").is_file() and f"{VIDEO_FRAMES} frames" in stdout
    written = {kind: sum(p.stat().st_size for p in (out / "pred").glob(f"*{s}")) for kind, s in SUFFIXES.items()}
    assert summary["bytes_written"] == {**written, "video": Path(summary["video"]).stat().st_size}
    assert summary["input_bytes"] == video.stat().st_size and summary["outputs"] == ["ids", "color", "overlay", "video"]
    assert 0 < summary["network_seconds"] <= summary["seconds"]
    assert summary["network_seconds_per_frame"] == pytest.approx(summary["network_seconds"] / VIDEO_FRAMES)


def test_by_default_only_train_ids_and_the_video(tmp_path, capsys, random_ckpt):
    video = write_mp4(tmp_path / "clip.mp4", smooth_frames(np.random.default_rng(0), VIDEO_FRAMES, VIDEO_HW), VIDEO_FPS)
    out = tmp_path / "out"
    code, stdout, err = run(
        main, ["--ckpt", str(random_ckpt), "--input", str(video), "--out", str(out), "--device", "cpu"], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in (out / "pred").iterdir()) == [f"frame_{i:06d}_pred.png" for i in range(VIDEO_FRAMES)]
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "legend.png", "pred", "predict.json"]
    assert f"wrote {out}/pred/ (ids), clip.mp4 (mp4v): browsers do not play mp4v" in stdout
    code, stdout, err = run(
        main,
        ["--ckpt", str(random_ckpt), "--input", str(video), "--out", str(tmp_path / "bare"), "--no-ids", "--no-video"],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["legend.png", "predict.json"]


@pytest.mark.parametrize(
    ("start", "every", "max_frames", "taken"), [(1, 2, None, [1, 3]), (0, 1, 2, [0, 1]), (3, 3, 9, [3])]
)
def test_start_every_and_max_frames_pick_frames_that_keep_their_index(
    tmp_path, capsys, random_ckpt, start, every, max_frames, taken
):
    frames = smooth_frames(np.random.default_rng(0), VIDEO_FRAMES, VIDEO_HW)
    video = write_mp4(tmp_path / "clip.mp4", frames, VIDEO_FPS)
    folder = write_frames(tmp_path / "frames", frames, [f"f{i}.png" for i in range(VIDEO_FRAMES)])
    picks = ["--start", str(start), "--every", str(every), *(["--max-frames", str(max_frames)] if max_frames else [])]
    for source, names in ((video, [f"frame_{i:06d}" for i in taken]), (folder, [f"f{i}" for i in taken])):
        out = tmp_path / f"out_{source.name}"
        args = ["--ckpt", str(random_ckpt), "--input", str(source), "--out", str(out), "--device", "cpu", *picks]
        code, _, err = run(main, args, capsys)
        assert code == 0, err
        assert sorted(p.name for p in (out / "pred").iterdir()) == [f"{n}_pred.png" for n in names]
        summary = json.loads((out / "predict.json").read_text())
        assert summary["frames"] == len(taken) and (summary["start"], summary["every"]) == (start, every)
        if len(taken) > 1:  # a sequence: its video plays at the rate of the frames taken
            assert cv2.VideoCapture(summary["video"]).get(cv2.CAP_PROP_FPS) == pytest.approx(summary["fps"] / every)
    # The same frame, predicted alone or within the whole clip, gets the same ids.
    whole = tmp_path / "whole"
    code, _, err = run(main, ["--ckpt", str(random_ckpt), "--input", str(video), "--out", str(whole)], capsys)
    assert code == 0, err
    name = f"frame_{taken[-1]:06d}_pred.png"
    assert np.array_equal(read_ids(whole / "pred" / name), read_ids(tmp_path / "out_clip.mp4" / "pred" / name))


def test_a_frame_folder_keeps_cityscapes_names_and_a_constant_model_has_tc_100(tmp_path, capsys):
    frames = smooth_frames(np.random.default_rng(1), 4, (30, 50))
    names = [f"lindau_000000_0000{16 + i}_leftImg8bit.png" for i in range(4)]
    folder = write_frames(tmp_path / "frames", frames, names)
    ckpt = save_checkpoint(tmp_path / "c.pt", constant_model(8))  # sky everywhere
    out = tmp_path / "out"
    code, _, err = run(
        main,
        [
            "--ckpt",
            str(ckpt),
            "--input",
            str(folder),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--size",
            "32x16",
            "--tc",
            "--fps",
            "5",
            "--video-codec",
            "mp4v",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out / "predict.json").read_text())
    assert summary["network_size_wh"] == [32, 16] and summary["fps"] == 5.0
    assert summary["tc"] == pytest.approx(100.0) and summary["tc_pairs"] == 3 and summary["flow"] == "dis"
    for i in range(4):
        ids = read_ids(out / "pred" / f"lindau_000000_0000{16 + i}_pred.png")
        assert ids.shape == (30, 50) and np.all(ids == 8)
    assert summary["video"].endswith(".mp4") and summary["video_codec"] == "mp4v"
    assert cv2.VideoCapture(summary["video"]).get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)


def test_one_image_gives_pictures_and_no_video(tmp_path, capsys, random_ckpt):
    write_frames(tmp_path, smooth_frames(np.random.default_rng(2), 1, (20, 36)), ["street.jpg"])
    out = tmp_path / "out"
    code, _, err = run(
        main,
        ["--ckpt", str(random_ckpt), "--input", str(tmp_path / "street.jpg"), "--out", str(out), "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((out / "predict.json").read_text())
    assert summary["video"] is None and summary["frames"] == 1
    assert read_ids(out / "pred" / "street_pred.png").shape == (20, 36)


def test_the_same_train_ids_as_i2vda_eval_save_pred(tmp_path, capsys, random_ckpt):
    """Full-size frames: the val store holds them shrunk to the training size, as `i2vda-prep val` does; eval
    upsamples the logits to the label size. i2vda-predict on the full-size frames must write the same ids."""
    rng = np.random.default_rng(3)
    keys = ["frankfurt_000000_000294", "munster_000001_000019"]
    natives = smooth_frames(rng, len(keys), LABEL_HW)
    natives[1] = natives[1][:, ::-1]  # two different scenes
    store = tmp_path / "val"
    store.mkdir()
    with ValWriter(store / "val.h5") as writer:
        for key, native in zip(keys, natives):
            image = resize_rgb(native, (INPUT_HW[1], INPUT_HW[0]))
            clip = np.stack([image, image])
            label = rng.integers(0, 15, LABEL_HW).astype(np.uint8)
            writer.add(
                encode_val_item(key, clip, np.zeros((1, 2, *INPUT_HW), np.float32), {"viper15": label}, [18, 19], 1, {})
            )
        writer.commit()
    code, _, err = run(
        eval_main,
        [
            "--ckpt",
            str(random_ckpt),
            "--val",
            str(store),
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
            "--no-tc",
            "--save-pred",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    folder = write_frames(tmp_path / "frames", natives, [f"{key}_leftImg8bit.png" for key in keys])
    code, _, err = run(
        main,
        ["--ckpt", str(random_ckpt), "--input", str(folder), "--out", str(tmp_path / "pred"), "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    for key in keys:
        from_eval = read_ids(tmp_path / "eval" / "pred" / f"{key}_pred.png")
        from_predict = read_ids(tmp_path / "pred" / "pred" / f"{key}_pred.png")
        assert from_eval.shape == LABEL_HW and len(np.unique(from_eval)) > 1  # not a trivial constant map
        assert np.array_equal(from_predict, from_eval)


def _mixed_sizes(tmp_path):
    folder = tmp_path / "mixed"
    write_frames(folder, smooth_frames(np.random.default_rng(4), 1, (20, 30)), ["a.png"])
    write_frames(folder, smooth_frames(np.random.default_rng(4), 1, (22, 30)), ["b.png"])
    return folder


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad_video", "not a readable video"),
        ("empty_folder", "holds no frames"),
        ("mixed_sizes", "same size"),
        ("other_protocol", "trained with protocol viper15"),
        ("out_is_a_file", "is a file"),
        ("tc_on_an_image", "--tc"),
        ("bad_size", "WIDTHxHEIGHT"),
        ("amp_on_cpu", "CUDA only"),
        ("start_past_the_end", "--start 1: "),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, random_ckpt, case, expected):
    image = write_frames(tmp_path / "one", smooth_frames(np.random.default_rng(5), 1, (20, 30)), ["x.png"]) / "x.png"
    args = {"--ckpt": str(random_ckpt), "--input": str(image), "--out": str(tmp_path / "out"), "--device": "cpu"}
    extra = []
    if case == "bad_video":
        (tmp_path / "clip.mp4").write_text("not a video")
        args["--input"] = str(tmp_path / "clip.mp4")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        args["--input"] = str(tmp_path / "empty")
    elif case == "mixed_sizes":
        args["--input"] = str(_mixed_sizes(tmp_path))
    elif case == "other_protocol":
        extra = ["--protocol", "synthia11"]
    elif case == "out_is_a_file":
        (tmp_path / "taken").write_text("")
        args["--out"] = str(tmp_path / "taken")
    elif case == "tc_on_an_image":
        extra = ["--tc"]
    elif case == "bad_size":
        extra = ["--size", "big"]
    elif case == "amp_on_cpu":
        extra = ["--amp", "bf16"]
    elif case == "start_past_the_end":
        extra = ["--start", "1"]
    code, _, err = run(main, [*(x for pair in args.items() for x in pair), *extra], capsys)
    lines = err.strip().splitlines()
    assert code == EXIT_BAD_INPUT and len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    if case != "out_is_a_file":
        assert not (tmp_path / "out").exists()  # refused before anything is created
