"""DeepLab-v2, the FC discriminator and the weight loaders (trainer/models/, and our checkpoints' M)."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import InputError
from trainer.models import (
    AUX_HEAD_PREFIX,
    IMG_MEAN_BGR,
    FCDiscriminator,
    build_segmenter,
    caffe_normalize,
    deeplab_r50,
    deeplab_r101,
    deeplab_tiny,
    load_deeplab_imagenet,
    load_torchvision_resnet,
)
from trainer.models.deeplab import DeepLabV2
from trainer.training.checkpoint import load_segmenter, load_segmenter_weights

# torchvision's published parameter counts (ResNet-101 44,549,160; ResNet-50 25,557,032) minus the 2048 -> 1000 fc.
RESNET101_BACKBONE = 44_549_160 - (2048 * 1000 + 1000)
RESNET50_BACKBONE = 25_557_032 - (2048 * 1000 + 1000)


def aspp_params(inplanes: int, classes: int) -> int:
    """Four 3x3 convs inplanes -> classes with bias."""
    return 4 * (inplanes * 9 * classes + classes)


def bottleneck_backbone_params(layers, width: int) -> int:
    """Conv and BN-affine parameters of a Bottleneck ResNet, counted from its layer shapes."""
    total = 3 * width * 49 + 2 * width  # stem conv 7x7 + bn1
    inplanes = width
    for stage, blocks in enumerate(layers):
        planes = width * 2**stage
        for block in range(blocks):
            total += inplanes * planes + planes * planes * 9 + planes * planes * 4  # 1x1, 3x3, 1x1
            total += 2 * (planes + planes + 4 * planes)  # three BNs
            if block == 0:  # every stage's first block changes channels -> 1x1 conv + BN shortcut
                total += inplanes * 4 * planes + 2 * 4 * planes
            inplanes = 4 * planes
    return total


def test_parameter_counts_r101_r50():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        r101, r50 = deeplab_r101(19), deeplab_r50(19)
    n101 = sum(p.numel() for p in r101.parameters())
    n50 = sum(p.numel() for p in r50.parameters())
    assert bottleneck_backbone_params((3, 4, 23, 3), 64) == RESNET101_BACKBONE
    assert bottleneck_backbone_params((3, 4, 6, 3), 64) == RESNET50_BACKBONE
    assert n101 == RESNET101_BACKBONE + aspp_params(2048, 19) == 43_901_068
    assert n50 == RESNET50_BACKBONE + aspp_params(2048, 19)
    tiny = deeplab_tiny(15)
    assert sum(p.numel() for p in tiny.parameters()) == bottleneck_backbone_params((1, 1, 1, 1), 16) + aspp_params(
        512, 15
    )


def test_output_stride_8_and_ceil_mode_sizes():
    model = deeplab_tiny(7).eval()
    with torch.no_grad():
        # 33 x 47: conv1 s2 -> floor(32/2)+1 = 17 x 24; maxpool ceil -> ceil(16/2)+1 = 9 x ceil(23/2)+1 = 13;
        # layer2 s2 (1x1) -> floor(8/2)+1 = 5 x floor(12/2)+1 = 7.
        assert model(torch.zeros(1, 3, 33, 47)).shape == (1, 7, 5, 7)
        # The reference's 512 x 1024 -> 65 x 129 (256 -> 129 by the ceil-mode pool -> 65).
        assert model(torch.zeros(1, 3, 512, 1024)).shape == (1, 7, 65, 129)


def test_layout_keys_strides_and_dilations():
    model = deeplab_tiny(5, multi_level=True)
    keys = set(model.state_dict())
    for key in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_mean",
        "layer3.0.conv3.weight",
        "layer4.0.bn3.bias",
        "layer5.conv2d_list.3.weight",
        "layer6.conv2d_list.0.bias",
    ]:
        assert key in keys, key
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert model.layer3[0].conv2.dilation == (2, 2) and model.layer3[0].conv2.padding == (2, 2)
    assert model.layer4[0].conv2.dilation == (4, 4)
    assert [c.dilation[0] for c in model.layer6.conv2d_list] == [6, 12, 18, 24]
    assert [c.padding[0] for c in model.layer6.conv2d_list] == [6, 12, 18, 24]
    assert not any(k.startswith("layer5") for k in deeplab_tiny(5).state_dict())


def test_aspp_is_the_sum_of_four_dilated_convs():
    model = deeplab_tiny(3).eval()
    feat = torch.randn(1, 512, 6, 7)
    expected = sum(
        F.conv2d(feat, c.weight, c.bias, padding=r, dilation=r)
        for c, r in zip(model.layer6.conv2d_list, (6, 12, 18, 24))
    )
    assert torch.allclose(model.layer6(feat), expected, atol=1e-6)


def test_init_statistics():
    model = deeplab_tiny(4)
    weight = model.layer4[0].conv2.weight  # 128 x 128 x 3 x 3 = 147k samples
    assert weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert abs(weight.mean().item()) < 1e-3
    assert torch.equal(model.bn1.weight, torch.ones(16)) and torch.equal(model.bn1.bias, torch.zeros(16))


def test_gradients_frozen_bn_affine_and_live_running_stats():
    torch.manual_seed(0)
    model = deeplab_tiny(4, multi_level=True).train()
    before = model.layer3[0].bn2.running_mean.clone()
    aux, main = model.forward_levels(torch.randn(2, 3, 40, 56) * 50)
    (main.square().mean() + aux.square().mean()).backward()
    assert not torch.equal(model.layer3[0].bn2.running_mean, before)  # batch statistics are live
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 1 + 4 * 3 + 4  # stem, three per block, one per shortcut
    for bn in bns:
        assert not bn.weight.requires_grad and bn.weight.grad is None
        assert not bn.bias.requires_grad and bn.bias.grad is None
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    frozen = model.layer3[0].bn2.running_mean.clone()
    with torch.no_grad():
        model(torch.randn(1, 3, 40, 56))
    assert torch.equal(model.layer3[0].bn2.running_mean, frozen)  # eval uses (and keeps) running stats


def test_optim_parameters_backbone_and_10x_classifier():
    model = deeplab_tiny(4, multi_level=True)
    groups = model.optim_parameters(2.5e-4, 10.0)
    assert [g["lr"] for g in groups] == [2.5e-4, 2.5e-3]
    backbone, heads = ({id(p) for p in g["params"]} for g in groups)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert backbone.isdisjoint(heads) and backbone | heads == trainable
    assert heads == {id(p) for p in [*model.layer5.parameters(), *model.layer6.parameters()]}


def test_channels_last_gives_the_same_logits():
    model = deeplab_tiny(3).eval()
    x = torch.randn(1, 3, 48, 64) * 50
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)


def test_caffe_normalize():
    rgb = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    bgr = caffe_normalize(rgb).flatten().tolist()
    assert bgr == pytest.approx([30 - 104.00698793, 20 - 116.66876762, 10 - 122.67891434])
    assert IMG_MEAN_BGR == (104.00698793, 116.66876762, 122.67891434)


def test_build_segmenter():
    assert isinstance(build_segmenter("deeplab_tiny", 11), DeepLabV2)
    with pytest.raises(InputError, match="--arch.*'resnet18'"):
        build_segmenter("resnet18", 11)


def test_discriminator_sizes_and_layers():
    disc = FCDiscriminator(5, ndf=8)
    prob = torch.softmax(torch.randn(2, 5, 64, 96), dim=1)
    out = disc(prob)
    assert out.shape == (2, 1, 2, 3)  # five k4 s2 p1 convs: n -> n/2 for even n, 64 -> 2, 96 -> 3
    x = prob
    for conv in [disc.conv1, disc.conv2, disc.conv3, disc.conv4]:
        x = F.leaky_relu(F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1), 0.2)
    expected = F.conv2d(x, disc.classifier.weight, disc.classifier.bias, stride=2, padding=1)
    assert torch.allclose(out, expected, atol=1e-6)  # raw output, no final activation
    widths = [disc.conv1.out_channels, disc.conv2.out_channels, disc.conv3.out_channels, disc.conv4.out_channels]
    assert widths == [8, 16, 32, 64] and FCDiscriminator(19).conv4.out_channels == 512
    # The reference's 1024 x 512 input -> 32 x 16; odd 65 -> 32 -> 16 -> 8 -> 4 -> 2.
    assert disc(torch.zeros(1, 5, 512, 1024)).shape == (1, 1, 16, 32)
    assert disc(torch.zeros(1, 5, 65, 64)).shape == (1, 1, 2, 2)


def backbone_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("layer5", "layer6"))}


def test_load_deeplab_imagenet_prefixed_layout(tmp_path):
    torch.manual_seed(1)
    source = deeplab_tiny(4)
    published = {f"Scale.{k}": v for k, v in backbone_state(source).items() if not k.endswith("num_batches_tracked")}
    published["Scale.layer5.conv2d_list.0.weight"] = torch.randn(21, 512, 3, 3)  # the caffe model's own head
    published["Scale.layer5.conv2d_list.0.bias"] = torch.randn(21)
    path = tmp_path / "DeepLab_resnet_pretrained_imagenet.pth"
    torch.save(published, path)
    torch.manual_seed(2)
    model = deeplab_tiny(4)
    head = model.layer6.conv2d_list[0].weight.clone()
    load_deeplab_imagenet(model, path)
    for key, value in backbone_state(source).items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(model.layer6.conv2d_list[0].weight, head)  # heads keep their init


def test_load_torchvision_resnet_layout(tmp_path):
    torch.manual_seed(3)
    source = deeplab_tiny(4)
    state = backbone_state(source)
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / "resnet.pth"
    torch.save(state, path)
    model = load_torchvision_resnet(deeplab_tiny(4), path)
    assert torch.equal(model.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    assert torch.equal(model.layer2[0].downsample[1].running_var, source.layer2[0].downsample[1].running_var)


def assert_one_line_refusal(load, model, path, *fragments):
    with pytest.raises(InputError) as info:
        load(model, path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message


class NotWeights:
    """A pickled object that weights_only loading must refuse."""


def test_mismatched_checkpoints_are_refused(tmp_path):
    wide = {f"Scale.{k}": v for k, v in backbone_state(DeepLabV2(4, (1, 1, 1, 1), width=8)).items()}
    path = tmp_path / "wide.pth"
    torch.save(wide, path)
    refusal = "shape (file vs model) bn1.bias (8,) vs (16,)"
    assert_one_line_refusal(load_deeplab_imagenet, deeplab_tiny(4), path, refusal)

    partial = backbone_state(deeplab_tiny(4))
    del partial["layer4.0.conv1.weight"]
    partial["layer9.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    assert_one_line_refusal(
        load_torchvision_resnet, deeplab_tiny(4), path, "missing layer4.0.conv1.weight", "unexpected layer9.weight"
    )
    # A torchvision file given to the prefixed loader: its first token is taken for a prefix.
    assert_one_line_refusal(load_deeplab_imagenet, deeplab_tiny(4), path, "missing bn1.bias", "unexpected")

    path = tmp_path / "pickled.pth"
    torch.save({"model": NotWeights()}, path)
    assert_one_line_refusal(
        load_segmenter_weights,
        deeplab_tiny(4),
        path,
        "refused: the file pickles Python objects beyond tensors (test_models.NotWeights)",
        "it was not loaded and nothing in it was run",
    )
    path = tmp_path / "junk.pth"
    path.write_text("not a checkpoint")
    assert_one_line_refusal(load_segmenter_weights, deeplab_tiny(4), path, "unreadable as a torch file")
    assert_one_line_refusal(load_segmenter_weights, deeplab_tiny(4), tmp_path / "absent.pt", "no such")


def test_load_segmenter_weights_round_trip_and_class_mismatch(tmp_path):
    torch.manual_seed(4)
    trained = deeplab_tiny(6, multi_level=True)
    path = tmp_path / "iter_0000010.pt"
    torch.save({"model": trained.state_dict(), "iteration": 10}, path)
    model = load_segmenter_weights(deeplab_tiny(6, multi_level=True), path)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert_one_line_refusal(load_segmenter_weights, deeplab_tiny(9, multi_level=True), path, "layer5.conv2d_list.0")
    assert_one_line_refusal(load_segmenter_weights, deeplab_tiny(6), path, "unexpected layer5.conv2d_list.0.bias")


def test_multi_level_snapshots_that_carry_the_aux_head_load(tmp_path):
    # ADVENT and DA-VSN save the bare state dict of a multi-level DeepLab-v2: layer5 (aux, on layer3) and layer6.
    torch.manual_seed(5)
    snapshot = deeplab_tiny(11, multi_level=True).eval()
    assert any(k.startswith(AUX_HEAD_PREFIX) for k in snapshot.state_dict())
    bare = tmp_path / "GTA2Cityscapes_DeepLabv2_MinEnt.pth"
    torch.save(snapshot.state_dict(), bare)
    model = load_segmenter_weights(deeplab_tiny(11, multi_level=True), bare).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for ours, theirs in zip(model.forward_levels(x), snapshot.forward_levels(x)):
            assert torch.equal(ours, theirs)
    # The same weights in our format: eval's loader sees layer5 and builds the multi-level network by itself.
    ours = tmp_path / "iter_0000001.pt"
    config = {"arch": "deeplab_tiny", "num_classes": 11, "protocol": "synthia11", "target_size_hw": [64, 96]}
    torch.save({"model": snapshot.state_dict(), "config": config, "iteration": 1}, ours)
    loaded, _, iteration = load_segmenter(ours)
    assert loaded.layer5 is not None and iteration == 1
    with torch.no_grad():
        assert torch.equal(loaded(x), snapshot(x))
