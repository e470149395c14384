"""Contrastive losses as pure functions, each tested against its formula.

NCE and InfoNCE take cosine similarities: ``pos_sim`` (B,) or (B, 1) between a
representation and its positive, ``neg_sim`` (B, N) between it and N negatives. NT-Xent
takes the two views' embeddings, since its negatives are the other embeddings of the
global batch. All average over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslab.methods.blocks.distributed import all_gather_with_grad, rank


def classification(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean softmax cross-entropy of ``logits`` (B x C) against integer ``labels``, and the metrics of
    a classification pretext task: the loss and the batch's top-1 accuracy, detached on the device."""
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
    return loss, {"loss": loss.detach(), "accuracy": accuracy}


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


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020, eq. 1) over the global batch of every worker.

    ``z1``, ``z2`` (B, D) are this worker's projections of the two views of B images. Both
    are L2-normalised and gathered from every data-parallel worker (``all_gather_with_grad``,
    the official code's cross-replica concat), giving 2N embeddings for N = B × world size.
    Every embedding z_i is an anchor whose candidates are the other 2N − 1 embeddings; its
    positive z_j is the other view of the same image:

        ℓ_i = −log [ exp(s_ij / τ) / Σ_{k≠i} exp(s_ik / τ) ],   s = cosine similarity.

    The loss is the mean of ℓ_i over this worker's 2B anchors. With DDP's gradient averaging
    and the gather's backward (each worker's rows receive every worker's gradient), training
    equals one worker on the global batch, whose loss is the mean over all 2N anchors.

    Scale: the mean over 2N anchors is the paper's Algorithm 1 (L = 1/2N Σ_k [ℓ(2k−1, 2k) +
    ℓ(2k, 2k−1)]) and the PyTorch ports' convention (solo-learn, lightly); the official TF
    code sums the two directions and averages over N, i.e. twice this value (same optimum,
    twice the gradient at a given learning rate; methods.md 3.1).

    Computed as a cross-entropy over the (2B, 2N) logits with the self-similarity masked to
    −inf, so it is stable at any τ (log-sum-exp inside ``cross_entropy``).
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected z1 and z2 of the same shape (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature (τ) = {temperature!r} must be > 0")
    batch = z1.shape[0]
    with torch.autocast(z1.device.type, enabled=False):  # float32 logits under bf16 autocast too
        both = torch.cat([z1, z2])
        anchors = F.normalize(both.to(torch.promote_types(both.dtype, torch.float32)), dim=1)  # (2B, D)
        candidates = all_gather_with_grad(anchors)  # (2N, D): every worker's block of 2B rows, in rank order
        logits = anchors @ candidates.T / temperature  # (2B, 2N)

        # Columns of each local anchor itself and of its positive (the other view, B rows away).
        own = rank() * 2 * batch + torch.arange(2 * batch, device=z1.device)
        positive = own.roll(batch)
        itself = torch.arange(logits.shape[1], device=z1.device)[None, :] == own[:, None]
        return F.cross_entropy(logits.masked_fill(itself, float("-inf")), positive)
