"""Contrastive losses: a representation against its positive and negatives.

NCE and InfoNCE take cosine similarities: ``pos_sim`` (B,) or (B, 1) between a representation
and its positive, ``neg_sim`` (B, N) between it and N negatives (PIRL, NPID, MoCo). NT-Xent
(SimCLR, with or without a momentum branch) and SupCon take the embeddings, since their
negatives are the other embeddings of the global batch; counting's contrastive term contrasts
one image's counts with another's. All average over this worker's anchors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslab.methods.blocks.distributed import all_gather_no_grad, all_gather_with_grad, rank
from sslab.methods.views.tiles import NUM_TILES


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


def momentum_nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, z1m: torch.Tensor, z2m: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    """NT-Xent with a momentum branch (UniGrad's ``loss_simclr_grad_mm`` written as a loss).

    ``z1``, ``z2`` (B, D): this worker's online projections of the two views (the anchors, with
    gradient); ``z1m``, ``z2m``: the momentum branch's projections of the same views (no gradient).
    All are L2-normalised; the momentum ones are gathered from every worker without gradient,
    giving 2N candidates (N = B x world size), every worker's block [z1m; z2m] in rank order.
    Anchor z1_i's positive is z2m_i and z2_i's is z1m_i; the softmax runs over all 2N candidates,
    the anchor's own view z1m_i (resp. z2m_i) included. Mean over this worker's 2B anchors, so that
    with DDP's gradient averaging training equals one worker on the global batch.
    """
    if z1.dim() != 2 or not z1.shape == z2.shape == z1m.shape == z2m.shape:
        raise ValueError(f"expected z1, z2, z1m, z2m of one shape (B, D), got "
                         f"{[tuple(z.shape) for z in (z1, z2, z1m, z2m)]}")
    if not temperature > 0:
        raise ValueError(f"temperature (τ) = {temperature!r} must be > 0")
    batch = z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D)
    candidates = all_gather_no_grad(F.normalize(torch.cat([z1m, z2m]), dim=1))  # (2N, D)
    logits = anchors @ candidates.T / temperature
    # the other view's momentum embedding of the same image: B rows away within this worker's block
    positive = rank() * 2 * batch + torch.arange(2 * batch, device=z1.device).roll(batch)
    return F.cross_entropy(logits, positive)


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float,
                base_temperature: float, form: str = "out") -> torch.Tensor:
    """The supervised contrastive loss over the global batch of every worker (L_out or L_in).

    ``features`` (B, V, D): this worker's V L2-normalised projections of each of B images (the
    official ``[bsz, n_views, D]``); ``labels`` (B,) integers. Projections are gathered from every
    worker with their gradient (``all_gather_with_grad``) and labels without, giving V·N
    candidates for N = B × world size. Every local projection z_i is an anchor (contrast_mode
    'all'); A(i) is every candidate but z_i itself, P(i) those of A(i) with z_i's label. With
    log p_ia = z_i·z_a/τ − log Σ_{a'∈A(i)} exp(z_i·z_a'/τ):

        out: ℓ_i = −(τ/τ_base) · 1/|P(i)| Σ_{p∈P(i)} log p_ip
        in:  ℓ_i = −(τ/τ_base) · log( 1/|P(i)| Σ_{p∈P(i)} p_ip )

    An anchor with P(i) empty has ℓ_i = 0. The result is the mean of ℓ_i over this worker's V·B
    anchors; with DDP's gradient averaging, training equals one worker on the global batch
    (whose loss is the mean over all V·N anchors, the official code's). Computed in float32
    at least, outside autocast, without a host synchronisation.
    """
    if features.dim() != 3 or labels.shape != features.shape[:1]:
        raise ValueError(f"expected features (B, V, D) and labels (B,), got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    if form not in ("out", "in"):
        raise ValueError(f"form = {form!r} is not one of 'out', 'in'")
    if not (temperature > 0 and base_temperature > 0):
        raise ValueError(f"temperature (τ) = {temperature!r} and base temperature = {base_temperature!r} must be > 0")
    with torch.autocast(features.device.type, enabled=False):
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        batch, views = features.shape[:2]
        anchors = torch.cat(features.unbind(1))  # (V·B, D), view-major as the official code
        anchor_labels = labels.repeat(views)
        candidates = all_gather_with_grad(anchors)  # (V·N, D): each worker's V·B rows, in rank order
        candidate_labels = all_gather_no_grad(anchor_labels)
        logits = anchors @ candidates.T / temperature

        columns = torch.arange(len(candidates), device=features.device)
        own = rank() * views * batch + torch.arange(views * batch, device=features.device)
        is_self = own[:, None] == columns[None, :]
        positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
        log_prob = logits - torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
        num_positives = positive.sum(dim=1)
        has_positive = num_positives > 0
        count = num_positives.clamp(min=1).to(log_prob.dtype)
        if form == "out":
            per_anchor = -torch.where(positive, log_prob, 0.0).sum(dim=1) / count
        else:
            # log Σ_{p∈P(i)} p_ip, over a row of zeros where P(i) is empty (no -inf gradient)
            pos_log_prob = torch.where(positive, log_prob, float("-inf"))
            log_sum = torch.logsumexp(torch.where(has_positive[:, None], pos_log_prob, 0.0), dim=1)
            per_anchor = torch.where(has_positive, count.log() - log_sum, 0.0)
        return (temperature / base_temperature) * per_anchor.mean()


def counting_loss(down_counts: torch.Tensor, tile_counts: torch.Tensor,
                  margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 4 averaged over the global batch: (loss, pair term, contrastive term).

    ``down_counts`` (B, K): φ(D∘x) of this worker's images; ``tile_counts`` (B, 4, K): φ(T_j∘x).
    The pair term is ‖φ(D∘x) − Σ_j φ(T_j∘x)‖², the contrastive term max(0, M − ‖φ(D∘y) −
    Σ_j φ(T_j∘x)‖²) with y the previous image of the global batch (rows gathered in rank order,
    rolled by one; the first image's y is the last). Each term is this worker's mean over its B
    images, so with DDP's gradient averaging training equals one worker on the global batch.
    """
    if down_counts.dim() != 2 or tile_counts.shape != (down_counts.shape[0], NUM_TILES, down_counts.shape[1]):
        raise ValueError(f"expected down_counts (B, K) and tile_counts (B, {NUM_TILES}, K), got "
                         f"{tuple(down_counts.shape)} and {tuple(tile_counts.shape)}")
    if not margin > 0:
        raise ValueError(f"margin (M) = {margin!r} must be > 0")
    b = down_counts.shape[0]
    everyone = all_gather_with_grad(down_counts)
    if len(everyone) < 2:
        raise ValueError("the contrastive term needs another image y: a global batch of at least 2 images")
    start = rank() * b
    other_counts = everyone.roll(1, dims=0)[start:start + b]  # φ(D∘y), y = the previous image
    tile_sum = tile_counts.sum(dim=1)
    pair = (down_counts - tile_sum).pow(2).sum(dim=1).mean()
    contrast = F.relu(margin - (other_counts - tile_sum).pow(2).sum(dim=1)).mean()
    return pair + contrast, pair, contrast
