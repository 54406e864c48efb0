"""`i2vda-eval` on a tiny checkpoint and a tiny val store written here, `--pred-dir` mode, and its one-line errors."""

import json
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.shards import ValStore, ValWriter, encode_val_item
from pipeline.sources import figure_grid, get_protocol
from trainer.evaluation.eval_cli import main
from trainer.evaluation.visualize import overlay
from trainer.models import build_segmenter

IGNORE = 255
INPUT_HW = (24, 40)  # frames at the "input size"
LABEL_HW = (48, 80)  # labels at a "native" size twice the input, as Cityscapes 2048x1024 vs 1024x512
CLIP_LEN = 3
VIPER15 = get_protocol("viper15")


def make_store(folder, rng, protocols=("viper15",), keys=("aachen_000000_000019", "bochum_000001_000019")):
    """Two annotated frames, each with a 3-frame clip, random flows up to 3 px and random labels with ignore."""
    folder.mkdir(parents=True)
    with ValWriter(folder / "val.h5") as writer:
        for key in keys:
            clip = rng.integers(0, 256, (CLIP_LEN, *INPUT_HW, 3), dtype=np.uint8)
            flows = rng.uniform(-3, 3, (CLIP_LEN - 1, 2, *INPUT_HW)).astype(np.float32)
            labels = {}
            for name in protocols:
                label = rng.integers(0, get_protocol(name).num_classes, LABEL_HW).astype(np.uint8)
                label[rng.random(LABEL_HW) < 0.1] = IGNORE
                label[:, : LABEL_HW[1] // 2] = 0  # road on the left half: a dominant class
                labels[name] = label
            writer.add(encode_val_item(key, clip, flows, labels, range(17, 17 + CLIP_LEN), CLIP_LEN - 1, {}))
        writer.commit()
    return folder


def save_checkpoint(path, model, protocol="viper15", iteration=7, arch="deeplab_tiny", num_classes=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "arch": arch,
        "num_classes": num_classes or model.num_classes,
        "protocol": protocol,
        "target_size_hw": list(INPUT_HW),
    }
    torch.save({"model": model.state_dict(), "config": config, "iteration": iteration}, path)
    return path


def constant_model(class_id, num_classes=15):
    """A tiny DeepLab whose logits are the same everywhere: class_id wins at every pixel."""
    model = build_segmenter("deeplab_tiny", num_classes)
    with torch.no_grad():
        for conv in model.layer6.conv2d_list:
            conv.weight.zero_()
            conv.bias.zero_()
        model.layer6.conv2d_list[0].bias[class_id] = 1.0
    return model


def run(args, capsys):
    """Run i2vda-eval in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def brute_force_miou(pairs, eval_ids):
    """mIoU in percent over (gt, pred) arrays, counted pixel by pixel; classes with an empty union skipped."""
    inter, union = {}, {}
    for gt, pred in pairs:
        for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
            if g == IGNORE:
                continue
            for c in {g, p}:
                union[c] = union.get(c, 0) + 1
            if g == p:
                inter[g] = inter.get(g, 0) + 1
    ious = [inter.get(c, 0) / union[c] for c in eval_ids if union.get(c, 0) > 0]
    return 100 * sum(ious) / len(ious)


def reference_labels(model, rgb_bhw3, size_hw):
    """Argmax of the logits upsampled bilinearly (align_corners=True), with the Caffe input written out here."""
    x = torch.from_numpy(rgb_bhw3).permute(0, 3, 1, 2).float()[:, [2, 1, 0]]
    x = x - torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model.eval()(x)
    return F.interpolate(logits, size=size_hw, mode="bilinear", align_corners=True).argmax(1).numpy()


def warped_back_brute_force(nxt, flow):
    """(P_{t+1} at round(p + F(p)), in view) for every pixel p, one at a time."""
    h, w = nxt.shape
    warped = np.zeros_like(nxt)
    inside = np.zeros(nxt.shape, bool)
    for y in range(h):
        for x in range(w):
            sx, sy = math.floor(x + flow[0, y, x] + 0.5), math.floor(y + flow[1, y, x] + 0.5)
            if 0 <= sx < w and 0 <= sy < h:
                warped[y, x], inside[y, x] = nxt[sy, sx], True
    return warped, inside


def test_checkpoint_metrics_match_a_brute_force_count(tmp_path, capsys):
    store_dir = make_store(tmp_path / "val", np.random.default_rng(0))
    torch.manual_seed(0)
    model = build_segmenter("deeplab_tiny", 15)
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    out = tmp_path / "out"
    code, stdout, _ = run(
        ["--ckpt", str(ckpt), "--val", str(store_dir), "--out", str(out), "--device", "cpu", "--save-pred", "1"], capsys
    )
    assert code == 0, stdout
    metrics = json.loads((out / "metrics.json").read_text())
    store = ValStore(store_dir)
    miou_pairs, tc_pairs = [], []
    for key in store.keys():
        sample = store.sample(key)
        gt = sample["labels"]["viper15"]
        miou_pairs.append((gt, reference_labels(model, sample["image"][None], gt.shape)[0]))
        preds = reference_labels(model, sample["clip"], INPUT_HW)
        for t in range(CLIP_LEN - 1):
            warped, inside = warped_back_brute_force(preds[t + 1], sample["clip_flows"][t])
            tc_pairs.append((np.where(inside, preds[t], IGNORE), warped))
    assert metrics["miou"] == pytest.approx(brute_force_miou(miou_pairs, range(15)))
    assert metrics["tc"] == pytest.approx(brute_force_miou(tc_pairs, range(15)))
    assert metrics["iteration"] == 7 and metrics["protocol"] == "viper15" and metrics["tc_protocol"] == "ours"
    assert set(metrics["per_class"]) == set(VIPER15.class_names)
    table = (out / "metrics.md").read_text()
    assert "| road |" in table and f"{metrics['miou']:.2f}" in table
    key = store.keys()[0]
    color = cv2.imread(str(out / "pred" / f"{key}_pred_color.png"))
    assert color.shape == (*LABEL_HW, 3)
    over = cv2.imread(str(out / "pred" / f"{key}_overlay.png"))  # at the label's size, the class legend below
    assert over.shape[1:] == (LABEL_HW[1], 3) and over.shape[0] > LABEL_HW[0]
    video = cv2.VideoCapture(str(out / f"snippet_{key}.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == CLIP_LEN
    assert int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 2 * INPUT_HW[1]


def test_run_folder_reports_last_and_best(tmp_path, capsys):
    store_dir = make_store(tmp_path / "val", np.random.default_rng(1))
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir / "checkpoints" / "iter_0000010.pt", constant_model(0), iteration=10)  # road
    save_checkpoint(run_dir / "checkpoints" / "iter_0000020.pt", constant_model(8), iteration=20)  # sky
    out = tmp_path / "out"
    code, stdout, _ = run(
        ["--ckpt", str(run_dir), "--val", str(store_dir), "--out", str(out), "--device", "cpu", "--save-pred", "0"],
        capsys,
    )
    assert code == 0, stdout
    metrics = json.loads((out / "metrics.json").read_text())
    labels = [ValStore(store_dir).label(k, "viper15") for k in ValStore(store_dir).keys()]
    valid = sum(int((gt != IGNORE).sum()) for gt in labels)
    present = len({int(c) for gt in labels for c in np.unique(gt) if c != IGNORE} | {8})
    # a constant prediction c: IoU_c = (pixels of c) / (valid pixels), every other present class 0
    sky_iou = sum(int((gt == 8).sum()) for gt in labels) / valid
    road_iou = sum(int((gt == 0).sum()) for gt in labels) / valid
    assert metrics["iteration"] == 20 and metrics["miou"] == pytest.approx(100 * sky_iou / present)
    assert metrics["best"]["iteration"] == 10 and metrics["best"]["miou"] == pytest.approx(100 * road_iou / present)
    assert metrics["tc"] == pytest.approx(100.0) and metrics["best"]["tc"] == pytest.approx(100.0)
    assert [c["iteration"] for c in metrics["checkpoints"]] == [10, 20]
    assert "best on val" in (out / "metrics.md").read_text()


def write_gray(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_pred_dir_mode_scores_pngs_against_gtfine(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root, preds = tmp_path / "cityscapes", tmp_path / "preds"
    # Cityscapes labelIds: 7 road, 26 car, 13 fence, 0 unlabeled -> viper15 train ids 0, 10, 3, ignore
    to_train = {7: 0, 26: 10, 13: 3, 0: IGNORE}
    label_ids = np.array(list(to_train), np.uint8)
    pairs = []
    for i, (city, nested, half) in enumerate([("lindau", True, False), ("munster", False, True)]):
        name = f"{city}_000000_0000{i}9"
        ids = label_ids[rng.integers(0, 4, (8, 12))]
        write_gray(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png", ids)
        pred = rng.choice([0, 3, 10, 5], (4, 6) if half else (8, 12)).astype(np.uint8)
        write_gray((preds / city if nested else preds) / f"{name}_pred.png", pred)
        # a half-size prediction is resized (nearest) to the label size: each pixel becomes a 2x2 block
        full = np.kron(pred, np.ones((2, 2), np.uint8)) if half else pred
        pairs.append((np.vectorize(to_train.get)(ids), full))
    out = tmp_path / "out"
    args = ["--pred-dir", str(preds), "--root", str(root), "--protocol", "viper15", "--out", str(out)]
    code, _, err = run(args, capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(brute_force_miou(pairs, range(15)))
    assert metrics["resized_predictions"] == 1 and "resized" in err and metrics["tc"] is None
    (preds / "munster_000000_000019_pred.png").unlink()
    code, _, err = run(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "munster_000000_000019_pred.png" in err


@pytest.mark.parametrize(
    "case", ["not_torch", "not_ours", "wrong_network", "no_store", "not_val_store", "protocol_not_in_store", "no_mode"]
)
def test_bad_checkpoint_or_store_is_one_error_line(tmp_path, capsys, case):
    store_dir = make_store(tmp_path / "val", np.random.default_rng(3), keys=("aachen_000000_000019",))
    ckpt = save_checkpoint(tmp_path / "m.pt", constant_model(0))
    args = {"--ckpt": str(ckpt), "--val": str(store_dir), "--out": str(tmp_path / "out"), "--device": "cpu"}
    if case == "not_torch":
        (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
        args["--ckpt"] = str(tmp_path / "junk.pt")
    elif case == "not_ours":
        torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
        args["--ckpt"] = str(tmp_path / "other.pt")
    elif case == "wrong_network":  # 15-class tiny weights under a config that says 11 classes
        args["--ckpt"] = str(save_checkpoint(tmp_path / "w.pt", constant_model(0), "synthia11", num_classes=11))
    elif case == "no_store":
        args["--val"] = str(tmp_path / "missing")
    elif case == "not_val_store":
        (tmp_path / "shards").mkdir()
        (tmp_path / "shards" / "manifest.json").write_text("{}")
        args["--val"] = str(tmp_path / "shards")
    elif case == "protocol_not_in_store":
        args["--ckpt"] = str(save_checkpoint(tmp_path / "s.pt", constant_model(0, 11), "synthia11"))
    elif case == "no_mode":
        del args["--ckpt"]
    code, _, err = run([part for item in args.items() for part in item], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_overlay_blends_class_colours_and_keeps_ignored_pixels():
    rgb = np.full((1, 2, 3), 100, np.uint8)
    label = np.array([[0, IGNORE]], np.uint8)  # viper15 road = (128, 64, 128)
    np.testing.assert_array_equal(overlay(rgb, label, VIPER15, alpha=0.5), [[[114, 82, 114], [100, 100, 100]]])


def test_figure_grid_places_every_tile_under_its_title():
    tiles = [[np.full((4, 5, 3), 10 * (3 * r + c), np.uint8) for c in range(3)] for r in range(2)]
    pad, title_h = 2, 22
    grid = figure_grid(tiles, titles=["frame", "GT", "ours"], pad=pad)
    assert grid.shape == (title_h + 2 * 4 + 3 * pad, 3 * 5 + 4 * pad, 3)
    for r in range(2):
        for c in range(3):
            y, x = pad + title_h + r * (4 + pad), pad + c * (5 + pad)
            np.testing.assert_array_equal(grid[y : y + 4, x : x + 5], tiles[r][c])
    assert (grid[pad : pad + title_h] < 255).any()  # the titles left ink on their strip
