"""UniGrad: A Unified Gradient Framework for Self-Supervised Learning (Tao et al., CVPR 2022).

UniGrad writes the gradient of contrastive, asymmetric and feature-decorrelation losses in one
form and trains with the simplest member of that family. For the L2-normalised online
projection z₁ of view 1 (the backbone f and projector g of the online network), the momentum
branch's projection z₂ᵐ of view 2 (an EMA copy of f and g under stop-gradient) and the moving
average F of the momentum branch's correlation matrix, the gradient is

    ∂L/∂z₁ = −z₂ᵐ + λ·F z₁,        F ← ρ·F + (1 − ρ)·(z₁ᵐᵀz₁ᵐ + z₂ᵐᵀz₂ᵐ)/(2B)

(UniGrad README; ``/work/shared/reference/methods.md`` section 1), symmetrised over the two
views. The first term pulls z₁ to the other view, the second pushes it away from the directions
in which the batch's representations already crowd, which prevents collapse without negatives.

What this file does, following the official code (fundamentalvision/UniGrad
``project/pretrainer.py`` ``loss_unigrad``, ``model.py``):

- all four projections z₁, z₂, z₁ᵐ, z₂ᵐ are L2-normalised;
- F is built from the **momentum** branch's outputs of both views, averaged over the
  data-parallel workers (all-reduce mean, the global batch's estimate), initialised with the
  first batch's estimate and then moved with ρ = 0.99; it is updated **before** the loss uses
  it, in the step that computes the batch estimate, as the code does (``self.F = ρ F + (1 − ρ)
  tmp_F``, then ``grad = −z₂ᵐ + λ z₁ F``);
- the gradient is imposed through the surrogate ⟨sg(g), z⟩ with g = −z₂ᵐ + λ·z₁F, whose
  gradient with respect to the normalised z is exactly g/B; autograd carries it back through
  the normalisation; the two views' terms are averaged (so g/(2B) per row);
- projector: Linear(no bias)-BN-ReLU, Linear(no bias)-BN-ReLU, Linear(with bias): 3 layers,
  2048 wide, no predictor;
- momentum encoder and projector: EMA of the online weights, m from 0.996 rising to 1 on a
  cosine over the run's steps;
- SGD, momentum 0.9, weight decay 1e-4 on every parameter, lr 0.05 per 256 images (linear
  scaling), 5 warm-up epochs.

Choices where this file departs from the official code (which trains a ResNet-50 on ImageNet,
fp16 AMP, SyncBatchNorm):

- F is a persistent float32 buffer (``correlation``; the code keeps it outside the model, in
  fp16 under AMP, and saves it beside the checkpoint), computed with autocast disabled: an EMA
  with ρ = 0.99 loses its small updates in half precision. Whether it has been initialised is a
  persistent step counter read branch-free (``torch.where``), so no step asks the device;
- the loss *value* the method returns is the README's L = −⟨z₁, z₂ᵐ⟩ + (λ/2)·z₁ᵀF z₁
  (symmetrised, batch mean), whose gradient with F and z₂ᵐ held fixed is the same g; the
  tensor is ``surrogate − sg(surrogate) + sg(L)``, so backward runs the code's surrogate
  exactly while the epoch's reported "loss" means something (the surrogate's value is
  −pos + λ·z₁ᵀF z₁, which mixes the terms at the wrong weight). ``pos_sim`` =
  ½(⟨z₁, z₂ᵐ⟩ + ⟨z₂, z₁ᵐ⟩), what the code logs, is reported beside it;
- projector width 2048 → 2048 for a ResNet-18 on CIFAR too (ResNet-50 features are 2048-d, a
  ResNet-18's 512-d): the width SimSiam uses for its CIFAR ResNet-18 (and solo-learn for both);
  the output dimension D also sets λ's balance (trace F = 1 spreads over D directions), so
  keeping the paper's D keeps λ = 100 meaningful;
- views: the code's MoCo-v2 recipe (crop 0.2-1, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8,
  grayscale 0.2, flip) with blur off by default (``blur_prob``; the code's 0.5 is for 224 px,
  and CIFAR ports drop it);
- the momentum update runs after the optimiser step (``after_step``) with m at this step's
  progress; the code runs it at the start of the next step's forward with the next step's m:
  the same sequence of targets with m shifted by one step of its schedule;
- the learning-rate schedule is the platform's (linear warm-up from 0, cosine to 0); the code
  warms up from and decays towards 1e-3·lr;
- BatchNorm statistics are per worker (SyncBatchNorm is not used; see ``simclr.py``);
- ``encoder_momentum = 0`` is a real "without momentum encoder": z₁ᵐ, z₂ᵐ are the online
  outputs under stop-gradient (methods.md 1.4: the code's cosine from 0 would still climb to 1).
  They are taken from the online forward pass instead of a second no-grad pass through the
  same modules (``TwoViewMethod.target_projection``): the same values, without moving BatchNorm's
  running statistics twice per view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslab.methods.base import Batch, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.distributed import mean_over_workers
from sslab.methods.blocks.heads import mlp
from sslab.methods.blocks.momentum import MomentumTarget, encoder_momentum, encoder_momentum_schedule
from sslab.methods.losses import unigrad_loss
from sslab.methods.siamese.two_view import TwoViewMethod


def correlation_estimate(z1m: torch.Tensor, z2m: torch.Tensor) -> torch.Tensor:
    """(z₁ᵐᵀz₁ᵐ + z₂ᵐᵀz₂ᵐ)/(2B) of this worker's B rows, averaged over the workers (the global
    batch's estimate with equal shards): D × D, detached. Its trace is 1 for unit rows."""
    local = (z1m.T @ z1m + z2m.T @ z2m) / (2 * len(z1m))
    return mean_over_workers(local)


@dataclass
class UniGradConfig(MethodConfig):
    """UniGrad's hyperparameters, the official ``configs/unigrad.py`` (see the module docstring)."""

    lambd: float = hyperparameter(100.0, "λ", "weight of the negative gradient λ·F z₁", "[0, inf)")
    rho: float = hyperparameter(0.99, "ρ", "EMA momentum of the correlation matrix F", "[0, 1)")
    encoder_momentum: float = encoder_momentum(0.996)
    encoder_momentum_schedule: str = encoder_momentum_schedule("cosine")
    projection_dim: int = hyperparameter(2048, "D", "output dimension of the projector (F is D × D)", "[1, inf)")
    projection_hidden_dim: int = hyperparameter(2048, "projection_hidden_dim", "hidden width of the projector",
                                                "[1, inf)")
    crop_min_scale: float = hyperparameter(0.2, "crop_min_scale", "smallest area fraction of a random crop",
                                           "(0, 1]")
    blur_prob: float = hyperparameter(
        0.0, "blur_prob", "Gaussian blur probability (official ImageNet recipe: 0.5; off at CIFAR size)", "[0, 1]")
    optim: Optimiser = optimiser(
        optimizer="sgd", base_lr=0.05, weight_decay=1e-4, warmup_epochs=5,
        notes={"base_lr": "SGD learning rate per 256 images"})


class UniGrad(TwoViewMethod):
    """Online backbone + projector, a momentum branch, and the unified gradient −z₂ᵐ + λ·F z₁."""

    name = "unigrad"
    Config = UniGradConfig
    # No profile_defaults: the paper's settings learn at the local profile
    # (docs/local-profile.md#unigrad).

    def __init__(self, config: UniGradConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        self.projector = mlp(backbone.out_dim, config.projection_hidden_dim, config.projection_dim, num_layers=3)
        self.target = MomentumTarget.from_config(config, self.backbone, self.projector)
        d = config.projection_dim
        # F, and how many times it has been updated (0: the next batch estimate initialises it)
        self.register_buffer("correlation", torch.zeros(d, d, dtype=torch.float32))
        self.register_buffer("correlation_updates", torch.zeros((), dtype=torch.int64))

    def embedding(self, representation: torch.Tensor) -> torch.Tensor:
        """ẑ = g(h) / ‖g(h)‖ of the online network, float32, B × D (``project`` of images: h = f(x))."""
        return F.normalize(self.projector(representation).float(), dim=1)

    def branches(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(z₁, z₂, z₁ᵐ, z₂ᵐ), L2-normalised, float32; the momentum outputs without gradient
        (without a momentum encoder: the online outputs, detached)."""
        z1, z2 = self.project(x1), self.project(x2)
        if self.target is None:
            return z1, z2, z1.detach(), z2.detach()
        return z1, z2, F.normalize(self.target(x1).float(), dim=1), F.normalize(self.target(x2).float(), dim=1)

    @torch.no_grad()
    def update_correlation(self, z1m: torch.Tensor, z2m: torch.Tensor) -> torch.Tensor:
        """F ← the batch estimate on the first update, ρ·F + (1 − ρ)·estimate afterwards (float32,
        identical on every worker); returns F."""
        with torch.autocast(z1m.device.type, enabled=False):
            estimate = correlation_estimate(z1m.float(), z2m.float())
            rho = self.config.rho
            moved = rho * self.correlation + (1 - rho) * estimate
            self.correlation.copy_(torch.where(self.correlation_updates > 0, moved, estimate))
            self.correlation_updates += 1
        return self.correlation

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        z1, z2, z1m, z2m = self.branches(batch["view_0"], batch["view_1"])
        correlation = self.update_correlation(z1m, z2m)  # before the loss uses it, as the official code
        with torch.autocast(z1.device.type, enabled=False):
            loss, pos_sim = unigrad_loss(z1, z2, z1m, z2m, correlation, self.config.lambd)
        return StepOutput(loss, {"loss": loss.detach(), "pos_sim": pos_sim})
