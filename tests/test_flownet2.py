"""FlowNet2 in plain PyTorch: correlation and channel norm, key layout, safe checkpoint loading, forward wiring,
and the estimator wrapper. References are direct computations (loops, numpy), hand-worked values, and the key
list of the official FlowNet2 checkpoint's keys, as transcribed into tests/data/flownet2_state_dict.txt."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import shlex
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import InputError
from pipeline.flow.correlation import channel_norm, correlation
from pipeline.flow.flownet2 import FlowNet2, FlowNet2Estimator, size_for_flownet
from pipeline.flow.flownet2_file import load_flownet2_state_dict

KEY_LIST = Path(__file__).parent / "data" / "flownet2_state_dict.txt"
PARAMETERS = 162_518_834  # the count in NVIDIA's models.py and in the training log of issue #117


# ---------------------------------------------------------------------------------------------- correlation


def brute_force_correlation(f0: np.ndarray, f1: np.ndarray, max_displacement: int, stride: int) -> np.ndarray:
    """The definition, one displacement and one row at a time: mean_c f0(y, x) f1(y + dy, x + dx), 0 outside."""
    b, c, h, w = f0.shape
    r = max_displacement // stride
    out = np.zeros((b, (2 * r + 1) ** 2, h, w))
    for j in range(2 * r + 1):
        for i in range(2 * r + 1):
            dy, dx = stride * (j - r), stride * (i - r)
            x_lo, x_hi = max(0, -dx), min(w, w - dx)
            for y in range(h):
                if 0 <= y + dy < h and x_lo < x_hi:
                    products = f0[:, :, y, x_lo:x_hi] * f1[:, :, y + dy, x_lo + dx : x_hi + dx]
                    out[:, j * (2 * r + 1) + i, y, x_lo:x_hi] = products.sum(1) / c
    return out


@pytest.mark.parametrize(
    ("shape", "max_displacement", "stride"),
    [((2, 4, 10, 12), 4, 2), ((1, 4, 10, 12), 3, 1), ((1, 3, 23, 22), 20, 2)],  # the last is FlowNetC's 441
)
def test_correlation_matches_brute_force(shape, max_displacement, stride):
    rng = np.random.default_rng(0)
    f0, f1 = rng.standard_normal(shape), rng.standard_normal(shape)
    got = correlation(torch.from_numpy(f0).float(), torch.from_numpy(f1).float(), max_displacement, stride)
    expected = brute_force_correlation(f0, f1, max_displacement, stride)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_correlation_channel_order_is_dy_major():
    # f1 is f0 moved by (dy, dx) = (+4, -6) px: f1(y, x) = f0(y - 4, x + 6). Displacement index j = 10 + 4/2 = 12
    # (vertical), i = 10 - 6/2 = 7 (horizontal), so the matching channel is 12*21 + 7 = 259 (dx-major would be 159).
    rng = np.random.default_rng(1)
    f0 = rng.standard_normal((1, 256, 24, 24)).astype(np.float32)  # C = 256 as in FlowNetC
    f1 = np.zeros_like(f0)
    f1[:, :, 4:, : 24 - 6] = f0[:, :, : 24 - 4, 6:]
    corr = correlation(torch.from_numpy(f0), torch.from_numpy(f1)).numpy()
    assert corr.shape == (1, 441, 24, 24)
    interior = (slice(None), slice(0, 24 - 4), slice(6, 24))  # where f1(y + 4, x - 6) lies inside the map
    np.testing.assert_allclose(corr[0, 259][interior[1:]], (f0[0] ** 2).mean(0)[interior[1:]], rtol=1e-5)
    assert (corr[0].argmax(0)[interior[1:]] == 259).all()


def test_correlation_reads_zero_outside_the_map():
    ones = torch.ones(1, 5, 6, 7)
    corr = correlation(ones, ones)  # 1 where (y + dy, x + dx) is inside the 6x7 map, else 0
    assert corr[0, 0, 0, 0] == 0  # (dy, dx) = (-20, -20) from the corner
    assert torch.equal(corr[0, 220], torch.ones(6, 7))  # (0, 0)
    expected_dx2 = torch.zeros(6, 7)
    expected_dx2[:, :5] = 1  # (0, +2): x + 2 < 7
    assert torch.equal(corr[0, 221], expected_dx2)
    expected_dy_minus2 = torch.zeros(6, 7)
    expected_dy_minus2[2:] = 1  # (-2, 0): channel 9*21 + 10, y - 2 >= 0
    assert torch.equal(corr[0, 199], expected_dy_minus2)
    assert corr[0, 440].sum() == 0  # (+20, +20) never lands inside a 6x7 map


def test_channel_norm():
    # Three pixels with channel vectors (1, 2, 2), (3, 4, 0), (0, 0, 0): L2 norms 3, 5, 0.
    x = torch.tensor([[1.0, 3.0, 0.0], [2.0, 4.0, 0.0], [2.0, 0.0, 0.0]]).view(1, 3, 1, 3)
    assert channel_norm(x).tolist() == [[[[3.0, 5.0, 0.0]]]]


# ---------------------------------------------------------------------------------------------- layout


def expected_state_dict() -> list[tuple[str, tuple[int, ...]]]:
    """Appendix A as (key, shape) pairs in registration order."""
    entries = []
    for line in KEY_LIST.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            entries.append((key, tuple(int(n) for n in shape.strip("()").split(",") if n.strip())))
    return entries


def test_state_dict_keys_and_shapes_are_the_official_ones():
    with torch.device("meta"):
        net = FlowNet2()
    got = [(key, tuple(value.shape)) for key, value in net.state_dict().items()]
    expected = expected_state_dict()
    assert len(expected) == 220
    assert got == expected
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS
    assert sum(math.prod(shape) for _, shape in expected) == PARAMETERS
    assert list(net.buffers()) == []


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model() -> FlowNet2:
    """FlowNet2 with seeded He-normal weights (activations stay O(1), flows of a few pixels)."""
    torch.manual_seed(0)
    net = FlowNet2()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                nn.init.kaiming_normal_(p, a=0.1)
            else:
                p.uniform_(-0.1, 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(2).uniform(0, 255, (1, 3, 2, 64, 64)).astype(np.float32))


@pytest.fixture(scope="module")
def reference_flow(model, frames) -> torch.Tensor:
    with torch.no_grad():
        return model(frames)


# ---------------------------------------------------------------------------------------------- checkpoints


class Py2Pickler(pickle._Pickler):
    """Pickles the way Python 2 and torch 0.2 wrote the official file: `str` as byte strings (SHORT_BINSTRING),
    OrderedDict from a list of pairs, tensors via torch._utils._rebuild_tensor, storages as persistent ids."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, storages: dict[str, torch.Tensor]):
        super().__init__(file, protocol=2)
        self.storages = storages

    def save_py2_str(self, text: str) -> None:
        data = text.encode("latin-1")
        self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        self.memoize(text)

    dispatch[str] = save_py2_str

    def save_ordered_dict(self, obj: OrderedDict) -> None:
        self.save_reduce(OrderedDict, ([[key, value] for key, value in obj.items()],), obj=obj)

    def save_tensor(self, obj: torch.Tensor) -> None:
        key = str(140000000 + len(self.storages))  # torch 0.2 used the storage's C address
        self.storages[key] = obj.detach().contiguous()
        storage = StorageId(key, obj.numel())
        self.save_reduce(torch._utils._rebuild_tensor, (storage, 0, tuple(obj.shape), obj.stride()), obj=obj)

    dispatch[OrderedDict] = save_ordered_dict
    dispatch[torch.Tensor] = save_tensor

    def persistent_id(self, obj):
        if isinstance(obj, StorageId):  # a GPU-side storage, as in a file converted on a CUDA machine
            return ("storage", torch.cuda.FloatStorage, obj.key, "cuda:0", obj.numel, None)
        return None


class StorageId:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


def save_py2_legacy(obj: dict, path: Path) -> None:
    """torch 0.2's legacy layout: magic, version, sys info, the object, storage keys, then raw storages."""
    storages: dict[str, torch.Tensor] = {}
    with open(path, "wb") as f:
        for header in (
            0x1950A86A20F9469CFC6C,
            1001,
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}},
        ):
            Py2Pickler(f, storages).dump(header)
        Py2Pickler(f, storages).dump(obj)
        Py2Pickler(f, storages).dump(sorted(storages))
        for key in sorted(storages):
            f.write(struct.pack("<q", storages[key].numel()))
            f.write(memoryview(storages[key].numpy()))  # float32, little-endian like the x86 it was written on


def save_checkpoint(state_dict: dict, path: Path, fmt: str, arch: str | None = None) -> None:
    """The official file's contents, `{'epoch', 'state_dict', 'best_EPE'}` (+ 'arch' as main.py writes), in one
    of three on-disk formats: "zip" (torch >= 1.6), "legacy" (pre-zip), "py2" (Python 2 + torch 0.2)."""
    obj = {"epoch": 0, "state_dict": OrderedDict(state_dict), "best_EPE": 1e10}
    if arch is not None:
        obj["arch"] = arch
    if fmt == "py2":
        save_py2_legacy(obj, path)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))


@pytest.mark.parametrize("fmt", ["zip", "legacy", "py2"])
def test_official_checkpoint_loads_strictly_and_reproduces_the_flow(model, frames, reference_flow, tmp_path, fmt):
    path = tmp_path / "FlowNet2_checkpoint.pth.tar"
    save_checkpoint(model.state_dict(), path, fmt)
    loaded = FlowNet2.from_checkpoint(path)
    assert not loaded.training
    assert list(loaded.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames), reference_flow, rtol=1e-5, atol=1e-5)


def test_python2_byte_strings_that_are_not_utf8_load_as_latin1(tmp_path):
    path = tmp_path / "py2.pth.tar"
    weights = {"flownetc.conv1.0.bias": torch.arange(4.0)}
    save_checkpoint(weights, path, "py2", arch="FlowNet2 \xe9t\xe9")  # a latin-1 byte that is invalid UTF-8
    loaded = load_flownet2_state_dict(path)
    assert list(loaded) == ["flownetc.conv1.0.bias"] and torch.equal(loaded["flownetc.conv1.0.bias"], torch.arange(4.0))


def test_bare_state_dict_and_data_parallel_prefix(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save({"module.flownetc.conv1.0.bias": torch.ones(3), "flownetfusion.conv0.0.bias": torch.zeros(2)}, path)
    loaded = load_flownet2_state_dict(path)
    assert sorted(loaded) == ["flownetc.conv1.0.bias", "flownetfusion.conv0.0.bias"]
    assert torch.equal(loaded["flownetc.conv1.0.bias"], torch.ones(3))


class RunsCode:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_would_run_code_is_refused(tmp_path, zip_format):
    marker = tmp_path / "code_ran"
    path = tmp_path / "FlowNet2_checkpoint.pth.tar"
    payload = {"epoch": 0, "state_dict": {"w": torch.zeros(2)}, "best_EPE": RunsCode(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(InputError) as caught:
        load_flownet2_state_dict(path)
    message = str(caught.value)
    assert str(path) in message and "refused" in message and "system" in message and "\n" not in message
    assert not marker.exists()


def one_line_error(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        FlowNet2.from_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_file(tmp_path, zip_format):
    path = tmp_path / "FlowNet2_checkpoint.pth.tar"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    for cut in (len(data) // 2, 40):
        path.write_bytes(data[:cut])
        assert "truncated" in one_line_error(path)


def test_html_page_and_other_files(tmp_path):
    html = tmp_path / "FlowNet2_checkpoint.pth.tar"
    html.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")
    assert "HTML page" in one_line_error(html)
    text = tmp_path / "notes.txt"
    text.write_text("just some text")
    assert "not a PyTorch checkpoint" in one_line_error(text)
    assert "no such file" in one_line_error(tmp_path / "missing.pth.tar")


def test_checkpoint_of_another_network_lists_missing_keys(tmp_path):
    # FlowNet2-CS holds flownetc.* and flownets_1.* only (90 tensors); shapes do not matter for this message.
    cs_keys = [key for key, _ in expected_state_dict() if key.startswith(("flownetc.", "flownets_1."))]
    assert len(cs_keys) == 90
    path = tmp_path / "FlowNet2-CS_checkpoint.pth.tar"
    torch.save({"epoch": 0, "state_dict": {key: torch.zeros(1) for key in cs_keys}, "best_EPE": 1e10}, path)
    message = one_line_error(path)
    assert "130 missing keys (flownets_2.conv1.0.weight, flownets_2.conv1.0.bias" in message
    assert "unexpected" not in message


def test_checkpoint_with_wrong_shapes(tmp_path):
    path = tmp_path / "FlowNet2_checkpoint.pth.tar"
    torch.save({"state_dict": {key: torch.zeros(1) for key, _ in expected_state_dict()}}, path)
    message = one_line_error(path)
    assert "220 tensors have the wrong shape (flownetc.conv1.0.weight is (1,), expected (64, 3, 7, 7))" in message


# ---------------------------------------------------------------------------------------------- forward


def upsample_bilinear_x4(a: np.ndarray) -> np.ndarray:
    """(..., h, w) -> (..., 4h, 4w): half-pixel centres, edge taps clamped (Caffe LINEAR = align_corners=False)."""

    def taps(n: int):
        source = np.maximum((np.arange(4 * n) + 0.5) / 4 - 0.5, 0.0)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, n - 1), source - low

    y_lo, y_hi, ty = taps(a.shape[-2])
    x_lo, x_hi, tx = taps(a.shape[-1])
    rows = a[..., y_lo, :] * (1 - ty)[:, None] + a[..., y_hi, :] * ty[:, None]
    return rows[..., x_lo] * (1 - tx) + rows[..., x_hi] * tx


def upsample_nearest_x4(a: np.ndarray) -> np.ndarray:
    return a.repeat(4, axis=-2).repeat(4, axis=-1)


def resample2d(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """NVIDIA's Resample2d (§4.2): img (B, C, H, W) read bilinearly at p + flow(p), the four taps clamped."""
    b, _, h, w = img.shape
    xf = np.arange(w)[None, None, :] + flow[:, 0]  # (B, H, W)
    yf = np.arange(h)[None, :, None] + flow[:, 1]
    x0, y0 = np.floor(xf), np.floor(yf)
    alpha, beta = (xf - x0)[..., None], (yf - y0)[..., None]
    x_left, x_right = np.clip(x0, 0, w - 1).astype(int), np.clip(x0 + 1, 0, w - 1).astype(int)
    y_top, y_bottom = np.clip(y0, 0, h - 1).astype(int), np.clip(y0 + 1, 0, h - 1).astype(int)
    batch = np.arange(b)[:, None, None]
    out = (
        (1 - alpha) * (1 - beta) * img[batch, :, y_top, x_left]
        + alpha * (1 - beta) * img[batch, :, y_top, x_right]
        + (1 - alpha) * beta * img[batch, :, y_bottom, x_left]
        + alpha * beta * img[batch, :, y_bottom, x_right]
    )  # (B, H, W, C)
    return out.transpose(0, 3, 1, 2)


def norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt((a**2).sum(1))


def test_forward_wiring_follows_the_reference_steps(model):
    """The 16 steps of flownet2-pytorch's FlowNet2.forward, checked on the tensors passed between the sub-networks."""
    rng = np.random.default_rng(3)
    frames = torch.from_numpy(rng.uniform(0, 255, (1, 3, 2, 64, 128)).astype(np.float32))
    seen = {}
    hooks = [
        getattr(model, name).register_forward_pre_hook(lambda m, args, name=name: seen.update({name: args[0]}))
        for name in ("flownetc", "flownets_1", "flownets_2", "flownets_d", "flownetfusion")
    ]
    hooks += [
        getattr(model, name).register_forward_hook(lambda m, a, out, name=name: seen.update({name + "_out": out}))
        for name in ("flownetc", "flownets_1", "flownets_2", "flownets_d", "flownetfusion")
    ]
    try:
        with torch.no_grad():
            flow = model(frames)
    finally:
        for hook in hooks:
            hook.remove()
    seen = {name: value.double().numpy() for name, value in seen.items()}

    def close(actual, expected):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)

    f = frames.double().numpy()
    x = (f - f.reshape(1, 3, -1).mean(-1)[:, :, None, None, None]) / 255.0  # per-sample, per-colour mean
    img0, img1 = x[:, :, 0], x[:, :, 1]
    for name in ("flownetc", "flownets_d"):  # both see the two normalised frames, stacked: (B, 6, H, W)
        close(seen[name], np.concatenate((img0, img1), 1))
    for concat, previous in (("flownets_1", "flownetc_out"), ("flownets_2", "flownets_1_out")):
        stacked = seen[concat]  # [frames (6), warped frame 1 (3), flow / 20 (2), warp error (1)]
        assert stacked.shape == (1, 12, 64, 128)
        flow_px = upsample_bilinear_x4(seen[previous] * 20.0)
        close(stacked[:, 0:3], img0)
        close(stacked[:, 3:6], img1)
        close(stacked[:, 6:9], resample2d(img1, flow_px))
        close(stacked[:, 9:11], flow_px / 20.0)
        close(stacked[:, 11], norm(img0 - resample2d(img1, flow_px)))
    fusion = seen["flownetfusion"]
    assert fusion.shape == (1, 11, 64, 128)
    flow_css = upsample_nearest_x4(seen["flownets_2_out"] * 20.0)
    flow_sd = upsample_nearest_x4(seen["flownets_d_out"] / 20.0)  # divided, as in the Caffe original
    close(fusion[:, 0:3], img0)
    close(fusion[:, 3:5], flow_sd)
    close(fusion[:, 5:7], flow_css)
    close(fusion[:, 7], norm(flow_sd))
    close(fusion[:, 8], norm(flow_css))
    close(fusion[:, 9], norm(img0 - resample2d(img1, flow_sd)))
    close(fusion[:, 10], norm(img0 - resample2d(img1, flow_css)))
    assert flow.shape == (1, 2, 64, 128)
    assert torch.equal(flow, torch.from_numpy(seen["flownetfusion_out"]).float())


def test_per_sample_colour_offset_does_not_change_the_flow(model, frames, reference_flow):
    # The input is centred by each sample's own mean colour, so adding a constant per colour to both frames of one
    # sample changes nothing, whatever the other samples of the batch hold.
    offset = torch.tensor([17.0, -9.0, 30.0]).view(1, 3, 1, 1, 1)
    batch = torch.cat((frames.flip(-1), frames + offset))
    with torch.no_grad():
        flows = model(batch)
    assert flows.shape == (2, 2, 64, 64)
    assert reference_flow.abs().mean() > 1.0  # a real flow field, not a degenerate one
    torch.testing.assert_close(flows[1:], reference_flow, rtol=1e-4, atol=1e-3)


def test_forward_rejects_sizes_that_are_not_multiples_of_64(model):
    with pytest.raises(ValueError, match="divisible by 64"):
        model(torch.zeros(1, 3, 2, 64, 100))


# ---------------------------------------------------------------------------------------------- estimator


class ConstantFlow(nn.Module):
    """Stands in for FlowNet2: flow (1, 2) px everywhere at the size it is given; records what it was given."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.inputs.append(frames.clone())
        b, _, _, h, w = frames.shape
        return torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(b, 2, h, w).clone()


@pytest.fixture
def stub_estimator(tmp_path, monkeypatch):
    checkpoint = tmp_path / "FlowNet2_checkpoint.pth.tar"
    checkpoint.write_bytes(b"stand-in weights")
    stub = ConstantFlow()
    monkeypatch.setattr(FlowNet2, "from_checkpoint", classmethod(lambda cls, path: stub))
    return FlowNet2Estimator(checkpoint, batch_size=2), stub


def test_size_for_flownet_rounds_to_the_nearest_multiple_of_64():
    assert [size_for_flownet(n) for n in (20, 95, 96, 100, 436, 512, 1024)] == [64, 64, 128, 128, 448, 512, 1024]


def test_estimator_resizes_and_scales_the_flow_per_axis(stub_estimator):
    est, stub = stub_estimator
    assert est.name == "flownet2"
    assert est.checkpoint_sha256 == hashlib.sha256(b"stand-in weights").hexdigest()
    colour0, colour1 = np.array([10, 20, 30], np.uint8), np.array([40, 50, 60], np.uint8)
    frames0 = np.broadcast_to(colour0, (3, 100, 150, 3)).copy()
    frames1 = np.broadcast_to(colour1, (3, 100, 150, 3)).copy()
    flow = est.flows(frames0, frames1)
    # 100 x 150 runs at 128 x 128: the network's (1, 2) px become (1 * 150/128, 2 * 100/128) px.
    assert flow.shape == (3, 2, 100, 150) and flow.dtype == np.float32
    np.testing.assert_allclose(flow[:, 0], 150 / 128, rtol=1e-6)
    np.testing.assert_allclose(flow[:, 1], 2 * 100 / 128, rtol=1e-6)
    assert [tuple(x.shape) for x in stub.inputs] == [(2, 3, 2, 128, 128), (1, 3, 2, 128, 128)]  # batch_size 2
    for frames in stub.inputs:  # (B, RGB, frame, H, W): frame 0's colour, then frame 1's, RGB order kept
        np.testing.assert_allclose(frames[:, :, 0].mean((0, 2, 3)).numpy(), colour0, rtol=1e-5)
        np.testing.assert_allclose(frames[:, :, 1].mean((0, 2, 3)).numpy(), colour1, rtol=1e-5)
        assert float(frames.std((0, 3, 4)).max()) < 1e-3  # a constant frame stays constant when resized


def test_estimator_single_frames_and_sizes_already_multiples_of_64(stub_estimator):
    est, stub = stub_estimator
    frame = np.zeros((64, 128, 3), np.uint8)
    flow = est.flows(frame, frame)
    assert flow.shape == (2, 64, 128)
    assert (flow[0] == 1).all() and (flow[1] == 2).all()
    public = est(frame, frame)  # the public numpy call: the components last
    assert public.shape == (64, 128, 2) and (public[..., 0] == 1).all() and (public[..., 1] == 2).all()
    assert tuple(stub.inputs[0].shape) == (1, 3, 2, 64, 128)


def test_estimator_torch_path_keeps_no_graph(stub_estimator):
    est, _ = stub_estimator
    img = torch.full((2, 3, 70, 90), 100.0, requires_grad=True)
    flow = est.estimate_torch(img, img)
    assert flow.shape == (2, 2, 70, 90) and not flow.requires_grad and flow.device == img.device
    torch.testing.assert_close(flow[:, 0], torch.full((2, 70, 90), 90 / 64))
    torch.testing.assert_close(flow[:, 1], torch.full((2, 70, 90), 2 * 70 / 64))


def test_estimator_rejects_bad_frames(stub_estimator):
    est, _ = stub_estimator
    with pytest.raises(InputError, match="frames0: expected a uint8 RGB array"):
        est(np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="one shape"):
        est(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 128, 3), np.uint8))
