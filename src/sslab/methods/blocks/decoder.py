"""A small convolutional decoder from a backbone tap's feature map to an image-sized map.

Shared by the pixel-prediction pretext tasks (denoising autoencoder, context encoder,
colorization, split-brain autoencoder). Its layout follows the context encoder's decoder
(Pathak et al. 2016, official ``train.lua``, itself DCGAN's generator): a stack of
``SpatialFullConvolution(4, 4, 2, 2, 1, 1)`` → BatchNorm → ReLU stages, each doubling the
spatial size and halving the channels, then a last convolution to the output channels. The
official decoder ends with ``tanh`` on pixels in [-1, 1]; the decoder here ends with a plain
convolution (no activation) because the platform's pixels are normalised per channel
(unbounded) and other targets (Lab colours, logits over colour bins) are no images at all:
a method applies its own output nonlinearity if it needs one.

API (stable; other methods import it):

- ``ConvDecoder(in_channels, out_channels, upsamplings, width)``: maps N x ``in_channels``
  x h x w to N x ``out_channels`` x (h·2^upsamplings) x (w·2^upsamplings).
  ``forward(x, size=None)`` resizes the result bilinearly to ``size`` = (H, W) when the
  product above differs from it (an image side that is no multiple of the tap's stride).
- ``ConvDecoder.for_tap(backbone, tap, out_channels, width)``: the decoder for one tap of a
  ``Backbone``, reading its channels from ``backbone.tap_channels`` and its upsamplings
  from ``tap_stride``.
- ``tap_stride(backbone, tap)``: the total stride of a tap (a power of two).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sslab.methods.blocks.backbone import TAPS, Backbone


def tap_stride(backbone: Backbone, tap: str) -> int:
    """The stride of ``tap``'s feature map relative to the input image.

    The CIFAR stem keeps the resolution at ``conv1`` (stride 1), the ImageNet stem divides it
    by 4 (stride-2 conv + stride-2 max-pool, ``conv1`` being read after the max-pool), and
    ``res3``, ``res4``, ``res5`` each halve it again (``res2`` keeps it).
    """
    if tap not in TAPS:
        raise ValueError(f"unknown feature tap {tap!r}; allowed values: {list(TAPS)}")
    stem = 1 if backbone.cifar_stem else 4
    return stem * 2 ** max(0, TAPS.index(tap) - 1)


class ConvDecoder(nn.Module):
    """[ConvTranspose2d(4, stride 2, pad 1) → BN → ReLU] × ``upsamplings`` → Conv2d(3 x 3).

    Args:
        in_channels: channels of the feature map fed in.
        out_channels: channels of the output map (3 for RGB pixels, 2 for ab, K for logits).
        upsamplings: factor-2 upsampling stages (0 gives a single 3 x 3 convolution).
        width: channels after the first upsampling stage; each later stage halves them, never
            below ``min(width, 8)``. The last 3 x 3 convolution has a bias, the transposed
            convolutions none (a BatchNorm follows each).
    """

    def __init__(self, in_channels: int, out_channels: int, upsamplings: int, width: int) -> None:
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                                 ("upsamplings", upsamplings, 0), ("width", width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ConvDecoder: {name} = {value!r} must be an integer >= {low}")
        self.in_channels, self.out_channels, self.upsamplings, self.width = (
            in_channels, out_channels, upsamplings, width)
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(upsamplings):
            stage = max(width // 2**i, min(width, 8))
            layers += [nn.ConvTranspose2d(channels, stage, kernel_size=4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(stage), nn.ReLU(inplace=True)]
            channels = stage
        layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)

    @classmethod
    def for_tap(cls, backbone: Backbone, tap: str, out_channels: int, width: int) -> "ConvDecoder":
        """The decoder that brings ``backbone``'s ``tap`` feature map back to the image's size."""
        return cls(backbone.tap_channels[tap], out_channels, int(math.log2(tap_stride(backbone, tap))), width)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """N x out_channels x (h·2^u) x (w·2^u), resized bilinearly to ``size`` if given and different."""
        y = self.layers(x)
        if size is not None and tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)
        return y
