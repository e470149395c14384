"""Contrastive losses as pure functions of similarities, each tested against its formula.

All take cosine similarities: ``pos_sim`` (B,) or (B, 1) between a representation and
its positive, ``neg_sim`` (B, N) between it and N negatives; all average over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _as_column(pos_sim: torch.Tensor, neg_sim: torch.Tensor) -> torch.Tensor:
    if neg_sim.dim() != 2 or pos_sim.numel() != neg_sim.shape[0]:
        raise ValueError(
            f"expected pos_sim of shape (B,) or (B, 1) and neg_sim of shape (B, N), "
            f"got {tuple(pos_sim.shape)} and {tuple(neg_sim.shape)}"
        )
    return pos_sim.reshape(-1, 1)


def estimate_log_z(
    pos_sim: torch.Tensor, neg_sim: torch.Tensor, temperature: float, data_size: int
) -> torch.Tensor:
    """log Z for the NCE loss, estimated once from the first batch as in NPID and VISSL.

    NPID (Wu et al. 2018, eq. 4-5) approximates the partition function
    Z = Σ_j exp(v_j·f / τ) by Monte Carlo: Z ≈ |D| · mean(exp(s / τ)) over the similarities
    at hand (positives and negatives alike). Returned as log Z, a detached scalar tensor,
    computed with logsumexp so it cannot overflow.
    """
    pos = _as_column(pos_sim, neg_sim)
    logits = torch.cat([pos, neg_sim], dim=1).detach().float() / temperature
    return math.log(data_size) + torch.logsumexp(logits.reshape(-1), dim=0) - math.log(logits.numel())


def nce_loss(
    pos_sim: torch.Tensor,
    neg_sim: torch.Tensor,
    temperature: float,
    data_size: int,
    log_z: torch.Tensor | float,
) -> torch.Tensor:
    """Noise-contrastive estimation loss of PIRL (Misra & van der Maaten 2019, eq. 3-4) / NPID.

    With e(s) = exp(s / τ) / Z and h(s) = e(s) / (e(s) + N / |D|) (eq. 3, the probability
    that a pair comes from the data rather than from the uniform noise distribution 1/|D|),

        L_NCE = -log h(s_pos) - Σ_{negatives} log(1 - h(s_neg))          (eq. 4)

    averaged over the batch. With a = log e(s) and c = log(N / |D|), h = sigmoid(a - c), so
    -log h = softplus(c - a) and -log(1 - h) = softplus(a - c), which is stable for any τ.
    """
    pos = _as_column(pos_sim, neg_sim)
    num_negatives = neg_sim.shape[1]
    log_noise = math.log(num_negatives / data_size)
    log_e_pos = pos / temperature - log_z
    log_e_neg = neg_sim / temperature - log_z
    per_sample = F.softplus(log_noise - log_e_pos).squeeze(1) + F.softplus(log_e_neg - log_noise).sum(dim=1)
    return per_sample.mean()


def info_nce_loss(pos_sim: torch.Tensor, neg_sim: torch.Tensor, temperature: float) -> torch.Tensor:
    """The softmax form of the contrastive loss (InfoNCE, van den Oord et al. 2018, eq. 4).

        L = -log [ exp(s_pos / τ) / (exp(s_pos / τ) + Σ_{negatives} exp(s_neg / τ)) ]

    i.e. cross-entropy over [positive, negatives] with the positive at index 0, averaged
    over the batch. PIRL's reference implementation (VISSL's NCE loss with memory) offers
    it beside NCE as ``loss_type="cross_entropy"``.
    """
    pos = _as_column(pos_sim, neg_sim)
    logits = torch.cat([pos, neg_sim], dim=1) / temperature
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
