"""What the method tests share: random images, a batch of a method's views, a step context, a
method built on a small backbone, a model's gradients, bitwise comparison, a few training steps.

Importable from every test under ``tests/methods`` (its ``conftest.py`` puts this folder on the
path): ``from method_testing import view_batch, step_context, build_method``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from sslab.methods.base import DataInfo, Method, StepContext
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.views import CIFAR10, View, apply_views

#: the context of a lone step (a schedule over one step)
CTX = StepContext(step=0, total_steps=1, epoch=0)


def step_context(step: int = 0, total: int = 10) -> StepContext:
    """Step ``step`` of ``total`` in epoch 0 on one worker."""
    return StepContext(step=step, total_steps=total, epoch=0)


def random_images(n: int = 6, size: int = 32, seed: int = 0, low: int = 0, width: int | None = None) -> np.ndarray:
    """``n`` random uint8 RGB images, N x size x size x 3 (N x size x width x 3 with ``width``), pixels
    in [low, 255]."""
    return np.random.default_rng(seed).integers(low, 256, (n, size, width or size, 3), dtype=np.uint8)


def denormalise(x: np.ndarray, stats=CIFAR10) -> np.ndarray:
    """Normalised views back to [0, 1] RGB (channel axis -3)."""
    mean, std = (np.asarray(v, dtype=np.float32).reshape(3, 1, 1) for v in (stats.mean, stats.std))
    return x * std + mean


def view_batch(views: Sequence[View], n: int = 6, *, size: int = 32, seed: int = 0, stats=CIFAR10,
               train: bool = True, images: np.ndarray | None = None, idx: int | str | None = None,
               labels: int | None = None) -> dict[str, torch.Tensor]:
    """The batch ``views`` make of ``n`` random images (or of ``images``), as torch tensors.

    One generator, ``default_rng(seed)``, draws the images (unless given), then the views, then
    ``idx`` (``"arange"``: 0..n-1; an int |D|: n distinct indices below it) and ``labels`` (an
    int C: n labels below it), in that order.
    """
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    n = len(images)
    batch = {k: torch.from_numpy(v) for k, v in apply_views(views, images, rng, stats=stats, train=train).items()}
    if idx == "arange":
        batch["idx"] = torch.arange(n)
    elif idx is not None:
        batch["idx"] = torch.from_numpy(rng.choice(idx, n, replace=False))
    if labels is not None:
        batch["label"] = torch.from_numpy(rng.integers(0, labels, n))
    return batch


def build_method(cls: type[Method], *, seed: int = 0, arch: str = "resnet10", width: int = 4,
                 data: DataInfo | None = None, **config) -> Method:
    """``cls`` with ``cls.Config.from_flat(config)`` on a small backbone, after ``torch.manual_seed(seed)``;
    through ``cls.build`` (the fields it ``needs``) when ``data`` is given."""
    torch.manual_seed(seed)
    settings = cls.Config.from_flat(config)
    backbone = Backbone(arch, width=width)
    return cls.build(settings, backbone, data) if data is not None else cls(settings, backbone)


def gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every gradient of ``module``'s parameters, by name (those without one left out)."""
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def bitwise_same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-equal, NaN equal to NaN (e.g. an unset log Z stays NaN)."""
    if a.is_floating_point():
        return torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    return torch.equal(a, b)


def train_steps(method: Method, optimizer, steps: Iterable[tuple[dict[str, torch.Tensor], StepContext]],
                schedule=None) -> list[torch.Tensor]:
    """The training loop's order for each (batch, ctx): forward, backward, optimiser (and schedule)
    step, ``after_step`` with the step's output; returns the detached losses."""
    losses = []
    for batch, ctx in steps:
        out = method(batch, ctx)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        method.after_step(batch, out, ctx)
        losses.append(out.loss.detach())
    return losses
