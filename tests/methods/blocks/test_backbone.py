"""Backbone: torchvision layouts, tap shapes and channels, early exit, clear errors."""

import pytest
import torch
import torchvision

from sslab.methods.blocks.backbone import TAPS, Backbone


def test_taps_are_the_five_named_stages():
    assert TAPS == ("conv1", "res2", "res3", "res4", "res5")


@pytest.mark.parametrize(
    "size,spatial",
    [
        (32, {"conv1": 32, "res2": 32, "res3": 16, "res4": 8, "res5": 4}),
        (8, {"conv1": 8, "res2": 8, "res3": 4, "res4": 2, "res5": 1}),
    ],
)
def test_resnet18_width16_cifar_stem_tap_shapes(size, spatial):
    net = Backbone("resnet18", cifar_stem=True, width=16)
    channels = {"conv1": 16, "res2": 16, "res3": 32, "res4": 64, "res5": 128}
    assert net.tap_channels == channels and net.out_dim == 128
    feats = net.features(torch.randn(2, 3, size, size))
    assert list(feats) == list(TAPS)
    for tap in TAPS:
        assert feats[tap].shape == (2, channels[tap], spatial[tap], spatial[tap])
    assert net(torch.randn(2, 3, size, size)).shape == (2, 128)


def test_forward_is_pooled_res5():
    net = Backbone("resnet18", width=8).eval()
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(net(x), net.features(x, ["res5"])["res5"].mean(dim=(2, 3)), atol=1e-6)


@pytest.mark.parametrize("width", [16, 64])
def test_resnet50_channels(width):
    net = Backbone("resnet50", cifar_stem=False, width=width)
    assert net.tap_channels == {
        "conv1": width, "res2": 4 * width, "res3": 8 * width, "res4": 16 * width, "res5": 32 * width
    }
    assert net.out_dim == 32 * width
    feats = net.features(torch.randn(1, 3, 64, 64))
    assert {t: f.shape[1] for t, f in feats.items()} == net.tap_channels
    assert feats["conv1"].shape[-1] == 16  # 7x7/2 conv + max-pool: 64 -> 16
    assert feats["res5"].shape[-1] == 2


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_width64_is_the_torchvision_layout(arch):
    ours = Backbone(arch, cifar_stem=False).state_dict()
    reference = getattr(torchvision.models, arch)().state_dict()
    reference = {k: v for k, v in reference.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


def test_cifar_stem_is_3x3_stride1_without_maxpool():
    net = Backbone("resnet18", cifar_stem=True, width=8)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)


def test_features_stop_at_the_deepest_requested_tap():
    net = Backbone("resnet18", width=8)
    ran = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(net, name).register_forward_hook(lambda *_, name=name: ran.append(name))
    feats = net.features(torch.randn(1, 3, 16, 16), taps=("conv1", "res3"))
    assert list(feats) == ["conv1", "res3"]
    assert ran == ["layer1", "layer2"]


def test_bad_arguments_name_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"resnet34.*resnet18.*resnet50"):
        Backbone("resnet34")
    with pytest.raises(ValueError, match=r"width = 0"):
        Backbone("resnet18", width=0)
    with pytest.raises(ValueError, match=r"res6.*conv1"):
        Backbone("resnet18", width=8).features(torch.randn(1, 3, 8, 8), taps=["res6"])


def test_unit_features_are_the_pooled_res5_features_on_the_unit_sphere():
    torch.manual_seed(0)
    net = Backbone("resnet10", width=4).eval()
    x = torch.randn(3, 3, 16, 16)
    unit = net.unit_features(x)
    pooled = net(x)
    assert unit.dtype == torch.float32 and torch.allclose(unit.norm(dim=1), torch.ones(3))
    assert torch.allclose(unit * pooled.norm(dim=1, keepdim=True), pooled, atol=1e-6)
