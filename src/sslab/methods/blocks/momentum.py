"""Momentum (EMA) encoders: the frozen copy, its update and BYOL's cosine schedule.

MoCo's key encoder, BYOL's target network and UniGrad's momentum branch are an exponential
moving average of the online network's weights. The method owns the schedule (it knows the
global step); these helpers only copy, update and compute the coefficient, so a method
reads ``ema_update_(self.target, self.online, cosine_momentum(base, progress))``; ``MomentumTarget``
bundles the copy, its schedule and its update. A method without a momentum encoder holds None.
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
    """The momentum encoder of a Siamese method: MoCo's key encoder, BYOL's target network, UniGrad's
    momentum branch, and the "w/ momentum encoder" variant of every other method (UniGrad's table).

    ``MomentumTarget(backbone, projector, momentum=m, schedule=...)`` is an EMA copy of the given
    modules in order (``frozen_copy``), applied under ``torch.no_grad`` (the stop-gradient every one
    of these methods puts on its target) and moved after every optimiser step by ``update(progress)``
    with the coefficient m (``schedule='constant'``: MoCo's m = 0.999) or rising from m to 1 on
    BYOL's cosine over the run's steps (``'cosine'``).

    A method without a momentum encoder (``encoder_momentum`` = 0, the "w/o momentum encoder"
    column) has none at all: ``from_config`` returns None, and the method's target branch is its
    online network under stop-gradient (``TwoViewMethod.target_projection``). A constant 0, not a
    cosine from 0 that still climbs to 1 (methods.md 1.4: UniGrad's code would do the latter).

    The online modules are not registered here (the method owns them once, so the state_dict
    names them once); the copy is registered as ``ema`` and travels in checkpoints. The copy runs
    in the method's train/eval mode: in training its BatchNorm normalises with the batch's
    statistics, as every reference does.
    """

    def __init__(self, *online: nn.Module, momentum: float, schedule: str = "cosine") -> None:
        super().__init__()
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum = {momentum!r} must lie in (0, 1) (without a momentum encoder, m = 0, "
                             "a method has no MomentumTarget: see from_config)")
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"momentum schedule {schedule!r} must be 'cosine' or 'constant'")
        self.base, self.schedule = momentum, schedule
        self._online = (nn.Sequential(*online),)  # a tuple: not a submodule
        self.ema = frozen_copy(self._online[0])

    @classmethod
    def from_config(cls, config, *online: nn.Module) -> "MomentumTarget | None":
        """From a Config with ``encoder_momentum`` and ``encoder_momentum_schedule`` fields; None
        when ``encoder_momentum`` = 0 (no momentum encoder)."""
        if config.encoder_momentum == 0:
            return None
        return cls(*online, momentum=config.encoder_momentum, schedule=config.encoder_momentum_schedule)

    def momentum(self, progress: float) -> float:
        """The EMA coefficient at ``progress`` = step / total steps."""
        return self.base if self.schedule == "constant" else cosine_momentum(self.base, progress)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ema(x)

    @torch.no_grad()
    def update(self, progress: float) -> None:
        """θ_ema ← m·θ_ema + (1 − m)·θ_online at ``progress`` (call after the optimiser step)."""
        ema_update_(self.ema, self._online[0], self.momentum(progress))
