"""The Siamese losses: two views' embeddings, no negatives.

Asymmetric (BYOL, SimSiam: a predictor regresses the stop-gradient target), the unified
gradient (UniGrad) and redundancy reduction (Barlow Twins' cross-correlation, VICReg's
variance, invariance and covariance terms). The redundancy-reduction losses standardise or
regularise over the global batch of every worker (rows gathered with their gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslab.methods.blocks.distributed import all_gather_with_grad

#: BatchNorm1d's default ε, as in the official ``nn.BatchNorm1d(sizes[-1], affine=False)``
BN_EPS = 1e-5

#: γ, the target standard deviation of every dimension, and ε in sqrt(Var + ε) (official values)
STD_TARGET, VARIANCE_EPS = 1.0, 1e-4


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """‖p̂ − ẑ‖² = 2 − 2·cos(p, z) per row, averaged over the batch (BYOL eq. 2, one direction).

    ``z`` is the target and takes no gradient (stop-gradient on the target projection). The
    loss is per image, so with data parallelism each worker's mean, averaged by DDP, is the
    global batch's (the official code ``pmean``s the gradients alike).
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """−½·cos(p₁, sg(z₂)) − ½·cos(p₂, sg(z₁)), averaged over the batch (SimSiam eq. 4).

    ``z1``, ``z2`` take no gradient (the stop-gradient of eq. 3). Per image, so with data
    parallelism each worker's mean, averaged by DDP, is the global batch's.
    """
    return -(F.cosine_similarity(p1, z2.detach(), dim=-1).mean()
             + F.cosine_similarity(p2, z1.detach(), dim=-1).mean()) / 2


def unigrad_loss(z1: torch.Tensor, z2: torch.Tensor, z1m: torch.Tensor, z2m: torch.Tensor,
                 correlation: torch.Tensor, lambd: float) -> tuple[torch.Tensor, torch.Tensor]:
    """UniGrad's loss on L2-normalised B × D projections, and pos_sim (both 0-d).

    Backward is the official surrogate ½[⟨sg(g₁), z₁⟩ + ⟨sg(g₂), z₂⟩] (batch means) with
    g₁ = −z₂ᵐ + λ·z₁F and g₂ = −z₁ᵐ + λ·z₂F, so ∂loss/∂z₁ = g₁/(2B); the value is the README's
    L = ½ Σ_views mean[−⟨z₁, z₂ᵐ⟩ + (λ/2)·z₁ᵀF z₁] (module docstring). The momentum outputs and
    F take no gradient.
    """
    z1m, z2m, correlation = z1m.detach(), z2m.detach(), correlation.detach()
    surrogate, value, pos_sim = 0.0, 0.0, 0.0
    for z, target in ((z1, z2m), (z2, z1m)):
        with torch.no_grad():
            spread = z @ correlation  # (F z)ᵀ per row; F is symmetric
            g = -target + lambd * spread
            pos = (z * target).sum(-1)
            value = value + 0.5 * (-pos + 0.5 * lambd * (spread * z).sum(-1)).mean()
            pos_sim = pos_sim + 0.5 * pos.mean()
        surrogate = surrogate + 0.5 * (g * z).sum(-1).mean()
    return surrogate - surrogate.detach() + value, pos_sim


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The D(D − 1) off-diagonal entries of a square D x D matrix, flattened (the official helper)."""
    d = m.shape[0]
    if m.dim() != 2 or m.shape[1] != d:
        raise ValueError(f"expected a square matrix, got shape {tuple(m.shape)}")
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """C = bn(z1)ᵀ bn(z2) / N over the global batch (eq. 2): D x D, the same on every worker.

    ``z1``, ``z2`` (B, D) are this worker's embeddings of the two views; the rows of every
    worker are gathered with their gradients, and each dimension is standardised with the mean
    and the biased variance of the N = B x world size rows (BatchNorm in training mode, no affine
    parameters, ε = 1e-5), as the official SyncBatchNorm does.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected z1 and z2 of the same shape (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1, z2 = all_gather_with_grad(z1), all_gather_with_grad(z2)
    if len(z1) < 2:
        raise ValueError("the cross-correlation needs a global batch of at least 2 rows")
    standardised = [F.batch_norm(z, None, None, training=True, eps=BN_EPS) for z in (z1, z2)]
    return standardised[0].T @ standardised[1] / len(z1)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_BT = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij² (eq. 1) on the global batch, and its two sums
    ``on_diagonal`` and ``off_diagonal`` (undetached). Every worker gets the same value."""
    c = cross_correlation(z1, z2)
    on_diag = (1 - c.diagonal()).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag, {"on_diagonal": on_diag, "off_diagonal": off_diag}


def variance_term(z: torch.Tensor) -> torch.Tensor:
    """v(z) = mean_j relu(γ − sqrt(Var(z_·j) + ε)) over the rows of ``z`` (unbiased variance; eq. 1)."""
    std = torch.sqrt(z.var(dim=0) + VARIANCE_EPS)
    return F.relu(STD_TARGET - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(z) = Σ_{i≠j} C(z)_ij² / D with C(z) = (z − z̄)ᵀ(z − z̄) / (N − 1) (eq. 3-4)."""
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (len(z) - 1)
    return off_diagonal(cov).pow(2).sum() / z.shape[1]


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, invariance_weight: float, variance_weight: float,
                covariance_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """λ s + μ (v(z1) + v(z2))/2 + ν (c(z1) + c(z2)) and its three terms (undetached): s on this
    worker's rows, v and c on the rows of every worker (see the module docstring)."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected z1 and z2 of the same shape (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    invariance = F.mse_loss(z1, z2)
    z1, z2 = all_gather_with_grad(z1), all_gather_with_grad(z2)
    if len(z1) < 2:
        raise ValueError("the variance and covariance terms need a global batch of at least 2 rows")
    variance = (variance_term(z1) + variance_term(z2)) / 2
    covariance = covariance_term(z1) + covariance_term(z2)
    loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}
