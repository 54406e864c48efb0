"""Fair baselines: what M and M' are fed, per method, and what their BatchNorm statistics are made of.

A forward pass in train mode moves BatchNorm's running statistics even when no loss reads its output, so a
baseline that runs M on target frames it may not use is quietly adapted to the target (AdaBN for free).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from test_train_loop import load, make_stores, read_log, same_state, tiny_config

import trainer.training.loop as loop
import trainer.training.networks as networks
from pipeline.errors import InputError
from trainer.models import caffe_normalize
from trainer.temporal import synthesize_intermediate
from trainer.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")
ITERS, LAUNCH = 4, 2


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return make_stores(tmp_path_factory.mktemp("stores"))


def _record_inputs(monkeypatch) -> tuple[list, list]:
    """Wrap build_nets and to_device: -> (batches per iteration, [(iteration, net name, input)] per forward of M/M')."""
    batches, calls = [], []
    real_build, real_to_device = loop.build_nets, loop.to_device

    def build(*args, **kwargs):
        nets = real_build(*args, **kwargs)
        for name, net in (("M", nets.model), ("M'", nets.proxy)):
            if net is not None:
                net.register_forward_pre_hook(
                    lambda _m, inputs, name=name: calls.append((len(batches) - 1, name, inputs[0].detach().clone()))
                )
        return nets

    def to_device(batch, device, it):
        moved = real_to_device(batch, device, it)
        batches.append(moved)
        return moved

    monkeypatch.setattr(loop, "build_nets", build)
    monkeypatch.setattr(loop, "to_device", to_device)
    return batches, calls


def _which(x: torch.Tensor, batch: dict, t: float | None) -> str:
    """Name the batch tensor that x is the Caffe-normalised form of: I^s, I0, I1 or It (Eq. 1-3 with this t)."""
    src, tgt = batch["source"], batch["target"]
    named = {"I^s": src["image"], "I0": tgt["frame0"], "I1": tgt["frame1"]}
    if t is not None:
        named["It"] = synthesize_intermediate(tgt["frame0"], tgt["frame1"], tgt["flow_01"], tgt["flow_10"], t)
    found = [name for name, rgb in named.items() if torch.allclose(caffe_normalize(rgb), x, atol=1e-4)]
    assert len(found) == 1, f"input matches {found}"
    return found[0]


@pytest.mark.parametrize(
    "method, flags, fed_m",
    [
        ("source_only", {}, ["I^s"]),
        ("adv_only", {}, ["I^s", "I0"]),
        ("i2vda", {}, ["I^s", "I0", "It"]),
        ("i2vda", {"no_temporal_aug": True}, ["I^s", "I0"]),
        ("i2vda", {"no_tc": True}, ["I^s", "I0", "It"]),
    ],
)
def test_each_method_feeds_its_networks_only_what_it_may_use(stores, tmp_path, monkeypatch, method, flags, fed_m):
    batches, calls = _record_inputs(monkeypatch)
    run = tmp_path / method
    train(
        tiny_config(
            stores,
            run,
            method=method,
            max_iter=ITERS,
            iter_copy=LAUNCH,
            iter_launch=LAUNCH,
            online_flow="linear",
            checkpoint_interval=ITERS,
            **flags,
        )
    )
    ts = {e["iteration"]: e.get("t") for e in read_log(run)}
    tc = method == "i2vda" and not flags.get("no_tc")
    for it, batch in enumerate(batches):
        seen_m = [_which(x, batch, ts[it]) for i, name, x in calls if i == it and name == "M"]
        seen_proxy = [_which(x, batch, ts[it]) for i, name, x in calls if i == it and name == "M'"]
        assert seen_m == fed_m, f"iteration {it}"
        assert seen_proxy == (["I1"] if tc and it >= LAUNCH else []), f"iteration {it}"


def test_source_only_is_blind_to_the_target_store(tmp_path):
    """Two target stores, one source store: source-only M (weights and BN statistics) must come out bit-identical."""
    runs = []
    for seed in (1, 2):
        root = make_stores(tmp_path / f"stores{seed}", seed=0)
        other = make_stores(tmp_path / f"other{seed}", seed=seed)
        (root / "tgt").rename(root / "tgt_unused")
        (other / "tgt").rename(root / "tgt")  # the same source store, a different target store in each run
        run = tmp_path / f"run{seed}"
        train(tiny_config(root, run, method="source_only", max_iter=3, checkpoint_interval=3))
        runs.append(load(run / "checkpoints" / "iter_0000003.pt")["model"])
    assert same_state(*runs)


def _tiny_bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _first_layer_stats(x: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased variance of conv(x): what train-mode BN measures."""
    y = conv(x).detach().transpose(0, 1).reshape(conv.out_channels, -1)
    return y.mean(1), y.var(1, unbiased=True)


def test_untracked_inputs_leave_running_statistics_alone():
    net, a, b = _tiny_bn_net(), torch.randn(2, 3, 8, 8) * 3, torch.randn(2, 3, 8, 8)
    twin = copy.deepcopy(net)
    out = networks.MultiInput(net)(a, b, track=(False, True))
    twin(b)  # only b's statistics enter
    bn, bn_twin = net[1], twin[1]
    assert torch.allclose(bn.running_mean, bn_twin.running_mean) and torch.allclose(bn.running_var, bn_twin.running_var)
    assert int(bn.num_batches_tracked) == 1 and bn.momentum == 0.1
    assert torch.allclose(out[0], twin.train()(a), atol=1e-5)  # a was still normalised by its own batch


def test_proxy_batchnorm_modes():
    model, x = _tiny_bn_net(), torch.randn(2, 3, 8, 8) * 2 + 1
    model.train()(torch.randn(2, 3, 8, 8))  # M's running statistics: of another batch
    proxy = copy.deepcopy(model).eval().requires_grad_(False)
    before = copy.deepcopy(proxy.state_dict())
    # running: M' in eval mode, M's running statistics.
    assert torch.allclose(networks.proxy_logits(proxy, x, "running"), copy.deepcopy(model).eval()(x))
    # batch: normalised by x's own statistics; running statistics untouched.
    assert torch.allclose(networks.proxy_logits(proxy, x, "batch"), copy.deepcopy(model).train()(x), atol=1e-5)
    assert same_state(proxy.state_dict(), before) and not proxy[1].training
    # target: after a copy the statistics are reset, then re-estimated on the target batches seen since.
    nets = networks.Nets(model, None, proxy, None, None, None, None, None, None)
    for bn in networks._batchnorms(proxy):
        bn.momentum = None
    networks.copy_proxy(nets, "target")
    x2 = torch.randn(2, 3, 8, 8) - 1
    networks.proxy_logits(proxy, x, "target")
    networks.proxy_logits(proxy, x2, "target")
    (m1, v1), (m2, v2) = _first_layer_stats(x, proxy[0]), _first_layer_stats(x2, proxy[0])
    assert torch.allclose(proxy[1].running_mean, (m1 + m2) / 2, atol=1e-5)
    assert torch.allclose(proxy[1].running_var, (v1 + v2) / 2, atol=1e-5)
    assert not proxy[1].training


def test_bn_stats_target_needs_target_frames(stores, tmp_path):
    with pytest.raises(InputError, match="--bn-stats target"):
        tiny_config(stores, tmp_path / "r", method="source_only", bn_stats="target")


def test_bn_stats_target_estimates_running_statistics_on_target_frames_only(stores, tmp_path, monkeypatch):
    """With --bn-stats target, M's first BN ends with the EMA (momentum 0.1) of the target batches' statistics."""
    batches, calls = _record_inputs(monkeypatch)
    run = tmp_path / "target_stats"
    train(
        tiny_config(stores, run, method="adv_only", bn_stats="target", max_iter=2, checkpoint_interval=2, lr=0.0)
    )  # lr 0: conv1 stays at its initial weights, so the statistics can be recomputed
    state = load(run / "checkpoints" / "iter_0000002.pt")["model"]
    torch.manual_seed(tiny_config(stores, run).seed)
    conv = networks.build_segmenter("deeplab_tiny", 15).conv1
    mean, var = torch.zeros(conv.out_channels), torch.ones(conv.out_channels)
    for it in range(2):
        (x,) = [x for i, name, x in calls if i == it and name == "M" and _which(x, batches[it], None) == "I0"]
        m, v = _first_layer_stats(x, conv)
        mean, var = 0.9 * mean + 0.1 * m, 0.9 * var + 0.1 * v
    assert torch.allclose(state["bn1.running_mean"], mean, atol=1e-4, rtol=1e-4)
    assert torch.allclose(state["bn1.running_var"], var, atol=1e-3, rtol=1e-4)
    assert np.isclose(float(state["bn1.num_batches_tracked"]), 2)  # the source forwards are not counted
