"""Momentum (EMA) encoders: the frozen copy, its update and BYOL's cosine schedule.

MoCo's key encoder, BYOL's target network and UniGrad's momentum branch are an exponential
moving average of the online network's weights. The method owns the schedule (it knows the
global step); these helpers only copy, update and compute the coefficient, so a method
reads ``ema_update_(self.target, self.online, cosine_momentum(base, progress))``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from sslab.methods.blocks.config import hyperparameter


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (the initial target / key encoder).

    MoCo and the PyTorch ports of BYOL (solo-learn, lightly) start the target as a copy of
    the online weights; the official BYOL code initialises it from a different seed instead
    (methods.md 3.3), which matters little since the EMA pulls it to the online weights.
    The copy keeps ``module``'s train/eval mode.
    """
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """θ_target ← m·θ_target + (1 − m)·θ_online for every parameter, in place (MoCo eq. 2, BYOL eq. 1).

    ``momentum`` m = 1 leaves the target as it is, m = 0 copies the online weights.

    Only parameters move. Buffers (BatchNorm running statistics, ``num_batches_tracked``)
    are left to the target's own forward passes, as every reference does: BYOL's official
    code averages ``target_params`` only and keeps the target's BN state from its own
    forward in training mode (methods.md 3.3); MoCo's ``_momentum_update_key_encoder``,
    solo-learn and lightly average ``parameters()`` only. While training, the target runs in
    train mode and normalises with batch statistics, so its running statistics never enter
    the loss; they matter only if the target is evaluated, and then statistics gathered with
    the target's own weights describe it better than the online network's would.

    Raises ValueError when the two modules' parameters differ in names or shapes.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum = {momentum!r} must lie in [0, 1]")
    target_params, online_params = dict(target.named_parameters()), dict(online.named_parameters())
    if target_params.keys() != online_params.keys():
        missing = sorted(target_params.keys() ^ online_params.keys())
        raise ValueError(f"target and online modules differ in their parameters: {missing[:5]}")
    for name, t in target_params.items():
        if t.shape != online_params[name].shape:
            raise ValueError(f"parameter {name}: target shape {tuple(t.shape)} != online "
                             f"shape {tuple(online_params[name].shape)}")
    if target_params:
        names = list(target_params)
        # lerp(t, o, 1 − m) = t + (1 − m)(o − t), BYOL's form; one fused kernel per device and dtype
        torch._foreach_lerp_([target_params[n] for n in names], [online_params[n] for n in names], 1.0 - momentum)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's target decay rate τ = 1 − (1 − τ_base)·(cos(π·progress) + 1)/2 (Grill et al. 2020, sec. 3.3).

    ``progress`` = k / K (global step over total steps) in [0, 1]: τ = τ_base at the start,
    (1 + τ_base)/2 halfway, 1 at the end. solo-learn's MoCo v2+ and UniGrad use the same schedule.
    """
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base = {base!r} must lie in [0, 1]")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress = {progress!r} must lie in [0, 1] (global step / total steps)")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def encoder_momentum(default: float):
    """The ``encoder_momentum`` field of a method's Config (``m``; named apart from the optimiser's
    ``momentum``): every Siamese method has one, so that each runs with and without a momentum
    encoder (UniGrad's table), e.g. ``encoder_momentum: float = encoder_momentum(0.996)``."""
    return hyperparameter(
        default, "m", "momentum encoder's EMA coefficient (the start of its cosine schedule); 0 = no momentum "
        "encoder: the target branch is the online network under stop-gradient", "[0, 1)")


def encoder_momentum_schedule(default: str):
    """The ``encoder_momentum_schedule`` field: ``'cosine'`` (m rises to 1 over the run: BYOL,
    UniGrad) or ``'constant'`` (MoCo)."""
    return hyperparameter(default, "m_schedule", "'cosine': m rises from its value to 1 over the run's steps "
                          "(BYOL); 'constant': m throughout (MoCo)", "{cosine, constant}")


class MomentumTarget(nn.Module):
    """The target branch of a Siamese method: MoCo's key encoder, BYOL's target network, UniGrad's
    momentum branch, and the "w/ momentum encoder" variant of every other method (UniGrad's table).

    ``MomentumTarget(backbone, projector, momentum=m, schedule=...)`` applies the given modules in
    order, under ``torch.no_grad`` (the stop-gradient every one of these methods puts on its target):

    - ``momentum`` > 0: on an EMA copy of them (``frozen_copy``), moved after every optimiser step
      by ``update(ctx)`` with the coefficient ``momentum`` (``schedule='constant'``: MoCo's
      m = 0.999) or rising from it to 1 on BYOL's cosine over the run's steps (``'cosine'``);
    - ``momentum`` = 0: on the online modules themselves, no copy and no EMA: the "w/o momentum
      encoder" column. A constant 0, not a cosine from 0 that still climbs to 1 (methods.md 1.4:
      UniGrad's code would do the latter).

    The online modules are not registered here (the method owns them once, so the state_dict
    names them once); the copy is registered as ``ema`` and travels in checkpoints. The copy runs
    in the method's train/eval mode: in training its BatchNorm normalises with the batch's
    statistics, as every reference does.
    """

    def __init__(self, *online: nn.Module, momentum: float, schedule: str = "cosine") -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum = {momentum!r} must lie in [0, 1) (0: no momentum encoder)")
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"momentum schedule {schedule!r} must be 'cosine' or 'constant'")
        self.base, self.schedule = momentum, schedule
        self._online = (nn.Sequential(*online),)  # a tuple: not a submodule
        self.ema = frozen_copy(self._online[0]) if momentum > 0 else None

    @classmethod
    def from_config(cls, config, *online: nn.Module) -> "MomentumTarget":
        """From a Config with ``encoder_momentum`` and ``encoder_momentum_schedule`` fields."""
        return cls(*online, momentum=config.encoder_momentum, schedule=config.encoder_momentum_schedule)

    @property
    def enabled(self) -> bool:
        """Whether there is a momentum encoder (``momentum`` > 0)."""
        return self.ema is not None

    def momentum(self, progress: float) -> float:
        """The EMA coefficient at ``progress`` = step / total steps (0 without a momentum encoder)."""
        if not self.enabled:
            return 0.0
        return self.base if self.schedule == "constant" else cosine_momentum(self.base, progress)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.ema if self.ema is not None else self._online[0])(x)

    @torch.no_grad()
    def update(self, progress: float) -> None:
        """θ_ema ← m·θ_ema + (1 − m)·θ_online at ``progress`` (call after the optimiser step)."""
        if self.ema is not None:
            ema_update_(self.ema, self._online[0], self.momentum(progress))
