"""The shared convolutional decoder: output shapes for every tap and several image sizes, its layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslab.methods.blocks.backbone import TAPS, Backbone
from sslab.methods.blocks.decoder import ConvDecoder, tap_stride


@pytest.mark.parametrize("cifar_stem, size", [(True, 32), (True, 24), (False, 64)])
def test_for_tap_brings_every_tap_back_to_the_image_size(cifar_stem, size):
    torch.manual_seed(0)
    backbone = Backbone("resnet10", cifar_stem=cifar_stem, width=2)
    x = torch.randn(2, 3, size, size)
    features = backbone.features(x, TAPS)
    for tap in TAPS:
        decoder = ConvDecoder.for_tap(backbone, tap, out_channels=5, width=8)
        y = decoder(features[tap])
        assert y.shape == (2, 5, size, size), tap


def test_tap_strides_match_the_backbone_feature_maps():
    for cifar_stem in (True, False):
        backbone = Backbone("resnet10", cifar_stem=cifar_stem, width=2)
        features = backbone.features(torch.zeros(1, 3, 64, 64), TAPS)
        for tap in TAPS:
            assert features[tap].shape[-1] * tap_stride(backbone, tap) == 64, (cifar_stem, tap)
    with pytest.raises(ValueError, match="res6"):
        tap_stride(backbone, "res6")


def test_size_resizes_when_the_side_is_no_multiple_of_the_stride():
    backbone = Backbone("resnet10", cifar_stem=False, width=2)
    x = torch.randn(2, 3, 100, 100)  # res5 is 4 x 4: 128 px after five upsamplings
    decoder = ConvDecoder.for_tap(backbone, "res5", 3, 8)
    features = backbone.features(x, ("res5",))["res5"]
    assert decoder(features).shape[-1] == 128
    assert decoder(features, size=(100, 100)).shape == (2, 3, 100, 100)


def test_layout_halves_the_channels_per_stage_down_to_the_floor():
    decoder = ConvDecoder(in_channels=64, out_channels=3, upsamplings=4, width=32)
    convs = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d | nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(64, 32), (32, 16), (16, 8), (8, 8), (8, 3)]
    assert all(m.bias is None for m in convs[:-1]) and convs[-1].bias is not None
    assert decoder(torch.zeros(1, 64, 2, 3)).shape == (1, 3, 32, 48)
    only_conv = ConvDecoder(in_channels=4, out_channels=2, upsamplings=0, width=16)
    assert only_conv(torch.zeros(1, 4, 5, 5)).shape == (1, 2, 5, 5)


@pytest.mark.parametrize("field, kwargs", [
    ("in_channels", dict(in_channels=0)), ("out_channels", dict(out_channels=1.5)),
    ("upsamplings", dict(upsamplings=-1)), ("width", dict(width=True)),
])
def test_invalid_arguments_are_refused_naming_them(field, kwargs):
    with pytest.raises(ValueError, match=field):
        ConvDecoder(**{**dict(in_channels=4, out_channels=3, upsamplings=1, width=8), **kwargs})
