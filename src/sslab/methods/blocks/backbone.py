"""ResNet backbones with named feature taps, built from torchvision's residual blocks.

The taps follow the naming of the layer-wise evaluations in PIRL (Misra & van der
Maaten 2019) and Goyal et al. (2019): ``conv1`` is the stem's output, ``res2`` .. ``res5``
are the outputs of torchvision's ``layer1`` .. ``layer4``. Linear probes and the
invariance measurements read feature maps at these taps.

At ``width=64`` the layout is exactly torchvision's ResNet-18 / ResNet-50 (same
module names: with the ImageNet stem a torchvision state dict loads with only
``fc.*`` left over, and the outputs agree exactly). ``width`` scales every stage
(``width, 2·width, 4·width, 8·width``) so that a ``width=8`` or ``width=16``
ResNet-18 trains in minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

#: Feature taps, shallowest first.
TAPS = ("conv1", "res2", "res3", "res4", "res5")

#: arch -> (block, blocks per stage), as in torchvision.models.resnet18 / resnet50; resnet10 is
#: ResNet-18 with one block per stage (the same four stages and taps at half the depth).
ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet10": (BasicBlock, (1, 1, 1, 1)),
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class Backbone(nn.Module):
    """A ResNet trunk that returns pooled ``res5`` features or feature maps at named taps.

    Args:
        arch: ``"resnet10"``, ``"resnet18"`` or ``"resnet50"``.
        cifar_stem: a 3x3 stride-1 convolution and no max-pool (for 32x32 images and
            small jigsaw patches); otherwise the ImageNet 7x7 stride-2 conv + 3x3 max-pool.
        width: channels of the first stage; 64 is the standard network.
    """

    def __init__(self, arch: str = "resnet18", cifar_stem: bool = True, width: int = 64) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch = {arch!r} is not a known backbone; allowed values: {sorted(ARCHS)}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width = {width!r} is not allowed; it must be an integer >= 1 (64 = standard ResNet)")
        block, layers = ARCHS[arch]
        self.arch, self.cifar_stem, self.width = arch, cifar_stem, width

        if cifar_stem:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

        self.inplanes = width
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)

        self.tap_channels: dict[str, int] = {
            "conv1": width,
            **{f"res{i + 2}": width * 2**i * block.expansion for i in range(4)},
        }
        self.out_dim: int = self.tap_channels["res5"]

        # Initialisation as in torchvision.models.resnet.ResNet.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage, as torchvision's ``ResNet._make_layer`` (downsample = 1x1 conv + BN)."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # Bottleneck's inner width is planes * base_width / 64, so base_width=64 keeps it = planes.
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def features(self, x: torch.Tensor, taps: Iterable[str] = TAPS) -> dict[str, torch.Tensor]:
        """Feature maps at ``taps`` (N x C x H x W each), computing only as deep as the deepest tap."""
        taps = tuple(taps)
        unknown = [t for t in taps if t not in TAPS]
        if unknown:
            raise ValueError(f"unknown feature tap(s) {unknown}; allowed values: {list(TAPS)}")
        if not taps:
            return {}
        deepest = max(TAPS.index(t) for t in taps)
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        out: dict[str, torch.Tensor] = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if "conv1" in taps:
            out["conv1"] = x
        for i in range(deepest):
            x = stages[i](x)
            if TAPS[i + 1] in taps:
                out[TAPS[i + 1]] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled ``res5`` features, N x ``out_dim``."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x, ("res5",))["res5"], 1), 1)

    def unit_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ``res5`` features, L2-normalised in float32: the representation the probes read,
        on the unit sphere where invariance distances are measured (PIRL sec. 5.2)."""
        return nn.functional.normalize(self(x).float(), dim=1)
