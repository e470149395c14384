"""VICReg: Variance-Invariance-Covariance Regularization (Bardes et al. 2022, arXiv:2105.04906).

Barlow Twins' architecture (``barlow_twins.py``: two views, backbone f, expander g, the same
views and optimiser) with a loss of three terms on the expander outputs z1, z2 (B x D) (eq. 1-6):

    s(z1, z2) = mean_b ‖z1_b − z2_b‖² / D                     invariance (MSE)
    v(z)      = mean_j relu(γ − sqrt(Var(z_·j) + ε))          variance, γ = 1, ε = 1e-4
    c(z)      = Σ_{i≠j} Cov(z)_ij² / D                        covariance
    L = λ s(z1, z2) + μ [v(z1) + v(z2)] / 2 + ν [c(z1) + c(z2)],   λ = μ = 25, ν = 1.

As in the official code (facebookresearch/vicreg ``main_vicreg.py``; methods.md 3.6): the
invariance term is the MSE of this worker's own rows, computed before any gather; the variance
and covariance terms are computed on the global batch, the rows of every worker gathered with
their gradients (``all_gather_with_grad``, the official ``FullGatherLayer``), with the unbiased
variance and covariance (N − 1); the variance term is averaged over the two views (the official
½, which lightly keeps and solo-learn drops, doubling μ in effect). So every worker's loss
differs by its invariance term, and their mean is one worker's loss on the global batch.

Defaults: λ = 25, μ = 25, ν = 1; LARS (η = 0.001, momentum 0.9, BatchNorm parameters and biases
without weight decay and LARS adaptation, one learning rate for all), lr 0.2 per 256 images,
weight decay 1e-6, 10 warm-up epochs then a cosine (to 0 here; to 1e-3 of the peak officially).
The official expander is 8192-8192-8192 (Linear-BN-ReLU twice, then a Linear without bias:
``heads.mlp(2048, 8192, 8192, num_layers=3, bias=False)``, the same function, since each hidden
bias is cancelled by its BN); the defaults here are the CIFAR ports' 2048-2048-2048 (solo-learn
``scripts/pretrain/cifar/vicreg.yaml``, lightly's CIFAR-10 benchmark). Views: the official ones
are Barlow Twins' (BYOL's asymmetric pair), kept here; solo-learn's CIFAR config uses symmetric
views instead (crops 0.2-1, solarisation 0.1 on both, no blur).

``encoder_momentum`` m > 0: UniGrad's "w/ momentum encoder" variant, as for Barlow Twins: the
second embedding of each pair comes from an EMA copy of backbone and expander under
stop-gradient, L = ½ [L(z1, sg(z2_m)) + L(z2, sg(z1_m))] (the target's variance and covariance
terms are then constants in the loss value).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sslab.methods.blocks.config import hyperparameter
from sslab.methods.losses import vicreg_loss
from sslab.methods.siamese.barlow_twins import BarlowTwins, DecorrelationConfig


@dataclass
class VICRegConfig(DecorrelationConfig):
    """VICReg's hyperparameters: official defaults, CIFAR-sized expander (module docstring)."""

    invariance_weight: float = hyperparameter(25.0, "λ", "weight of the invariance (MSE) term", "[0, inf)")
    variance_weight: float = hyperparameter(25.0, "μ", "weight of the variance term (averaged over the views)",
                                            "[0, inf)")
    covariance_weight: float = hyperparameter(1.0, "ν", "weight of the covariance term", "[0, inf)")


class VICReg(BarlowTwins):
    """Barlow Twins' views, expander and momentum variant with the VICReg loss."""

    name = "vicreg"
    Config = VICRegConfig
    # The local profile: Barlow Twins' settings, for the reasons given there (a 512-wide expander
    # for the 64-d features, base lr 1.0 per 256 images, one warm-up epoch); measured in
    # docs/local-profile.md#vicreg.
    profile_defaults = BarlowTwins.profile_defaults

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        return vicreg_loss(z1, z2, c.invariance_weight, c.variance_weight, c.covariance_weight)
