"""BatchNorm's running statistics when a trunk trains on something other than whole images.

The frozen backbone is evaluated (kNN, probes, invariance) in eval mode, through the running
mean and variance of its BatchNorm layers, on whole images. Patch-based pretext tasks (PIRL's
jigsaw term, Jigsaw, relative patch location) push small patches through the same trunk: left
alone, their statistics (8 x 8 patches on CIFAR are 1 x 1 at res5, mostly padding) would become
the running estimates the evaluation reads.

- ``running_stats_frozen``: inside it, layers normalise with the batch's own statistics but
  leave the running estimates unchanged;
- ``follow_images``: a gradient-free pass of whole images, only to move the running estimates
  towards them (for a method whose loss never sees a whole image).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def running_stats_frozen(module: nn.Module):
    """BatchNorm layers of ``module`` normalise with batch statistics but keep their running
    estimates (momentum 0: running = 1 · running + 0 · batch) until the block ends."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


@torch.no_grad()
def follow_images(trunk: nn.Module, images: torch.Tensor) -> None:
    """One forward of ``images`` without gradient: in train mode it moves the running estimates
    towards whole images' statistics, and has no other effect."""
    trunk(images)
