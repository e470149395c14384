"""Optimisers the methods train with, built from their Config's ``optim`` (an ``Optimiser``).

- SGD with momentum (PIRL, NPID, MoCo, SimSiam, supervised), LARS (SimCLR, BYOL, Barlow
  Twins, VICReg) and AdamW.
- The peak learning rate is ``optim.learning_rate(global_batch)``: ``base_lr`` scaled from
  ``reference_batch`` the way the paper does (linear for most, square root for some).
- Parameter groups come from the method (``Method.parameter_groups``). A group may carry
  ``weight_decay`` (e.g. 0 for BatchNorm and biases), ``lars_exclude`` (no LARS adaptation,
  as SimCLR and BYOL do for those parameters) and ``fixed_lr`` (the schedule leaves it
  alone: SimSiam's predictor).
- The schedule is a linear warm-up then half a cosine to 0, per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from sslab.methods.blocks.config import Optimiser


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) as SimCLR and BYOL use it.

    Per parameter: g ← g + wd·w, then g ← g · η‖w‖/‖g‖ (when both norms are positive and the
    group is not ``lars_exclude``), then SGD with momentum: v ← m·v + g, w ← w − lr·v.
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "eta": eta, "lars_exclude": False})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(groups: list[dict[str, Any]], optim: Optimiser, global_batch: int) -> torch.optim.Optimizer:
    """The optimiser ``optim.optimizer`` over ``groups`` at the peak learning rate for ``global_batch``."""
    lr = optim.learning_rate(global_batch)
    groups = [{k: v for k, v in g.items() if k != "name"} | {"name": g.get("name", f"group{i}")}
              for i, g in enumerate(groups)]
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(optim.momentum, 0.999), weight_decay=optim.weight_decay)
    raise ValueError(f"optimizer = {optim.optimizer!r} is not one of sgd, lars, adamw")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak LR: linear warm-up, then half a cosine down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """Warm-up + cosine per step for every group, except ``fixed_lr`` groups, which keep their LR."""
    factors = [
        (lambda s: 1.0) if group.get("fixed_lr") else (lambda s: warmup_cosine(s, total_steps, warmup_steps))
        for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
