"""Label-free measures of a representation, for choosing hyperparameters without labels.

Pure PyTorch (nothing of sslab, no Ray). Every measure takes features as tensors (any float
dtype, any device; numpy arrays are accepted too), computes in float64 on the input's device
under ``torch.no_grad`` and returns a Python float. Fewer than 2 samples, or NaN / infinite
values, raise ``ValueError``.

- ``rankme``: effective rank of the feature matrix (Garrido et al., ICML 2023).
- ``alpha_req`` / ``alpha_req_gap``: power-law decay α of the covariance eigenspectrum
  (Agrawal et al., NeurIPS 2022) and its distance to 1.
- ``lidar``: effective rank of the LDA matrix whose classes are instances and whose samples are
  their augmented views (Thilak et al., ICLR 2024).
- ``alignment`` / ``uniformity``: Wang & Isola (ICML 2020) on L2-normalised features.

``MEASURES`` says, for each measure a sweep can optimise, whether higher or lower is better.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Measure(NamedTuple):
    mode: str  # "max" or "min": Tune's mode for this measure
    description: str


#: the measures a sweep can optimise: name -> (Tune mode, one line). ``alpha_req`` itself is not
#: one: the paper finds good read-out in a band of α around 1, not at either end (``alpha_req_gap``).
MEASURES: dict[str, Measure] = {
    "rankme": Measure("max", "effective rank of the feature matrix (exp entropy of its singular values)"),
    "lidar": Measure("max", "effective rank of the LDA matrix with instances as classes and views as samples"),
    "alpha_req_gap": Measure("min", "|α - 1|, α the power-law decay of the feature covariance's eigenspectrum"),
    "alignment": Measure("min", "mean ||f(x) - f(y)||^α between the normalised features of positive pairs"),
    "uniformity": Measure("min", "log mean exp(-t ||f(x) - f(y)||²) over all pairs of normalised features"),
}

#: rows of the Gram matrix that ``uniformity`` holds at once (1024 × N float64)
_BLOCK_ROWS = 1024


def _checked(x, name: str, ndim: int) -> torch.Tensor:
    """``x`` as a detached float64 tensor of ``ndim`` dimensions with at least 2 rows, all finite."""
    x = torch.as_tensor(x)
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name}: expected real features, got dtype {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-dimensional tensor, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: needs at least 2 samples, got {x.shape[0]}")
    if x.shape[-1] < 1:
        raise ValueError(f"{name}: features have no dimensions (shape {tuple(x.shape)})")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return x


def _singular_values(x: torch.Tensor) -> torch.Tensor:
    """The singular values of a matrix, descending. LAPACK is handed the tall orientation (the
    same values): for more columns than rows, ``x.T``, several times faster on a CPU than ``x``."""
    return torch.linalg.svdvals(x.T if x.shape[0] < x.shape[1] else x)


def _effective_rank(values: torch.Tensor, eps: float) -> float:
    """exp(entropy(p)), p_k = v_k / ||v||_1 + eps, of non-negative ``values``; 0.0 if all are 0."""
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values / total + eps
    return math.exp(-float((p * p.log()).sum()))


@torch.no_grad()
def rankme(features, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023, eq. 1) of an N × D feature matrix: exp(-Σ_k p_k log p_k) with
    p_k = σ_k / ||σ||_1 + eps over its min(N, D) singular values σ_k; between ~1 (rank one) and
    min(N, D). Higher is better; all-zero features give 0.0.

    There is no official code; this follows the paper's definition, as stable-pretraining's
    ``RankMe`` callback does (raw, uncentred features; singular values, not their squares), with
    the paper's ε = 1e-7 where that callback adds 1e-5. reptrix's ``get_rankme`` (the α-ReQ
    authors' package) differs from both: it centres the features and uses the covariance's
    eigenvalues (σ²).
    """
    x = _checked(features, "rankme", 2)
    return _effective_rank(_singular_values(x), eps)


@torch.no_grad()
def alpha_req(features, first_rank: int = 11, last_rank: int = 100) -> float:
    """α-ReQ (Agrawal et al. 2022): the decay α of the eigenspectrum λ_k ∝ k^-α of the N × D
    features' covariance, fitted on log λ_k against log k for ranks ``first_rank``..``last_rank``.

    Follows the authors' code (reptrix ``alpha.get_alpha`` / fastssl ``stringer_get_powerlaw``,
    after Stringer & Pachitariu 2018): eigenvalues of the centred features' covariance (their
    PCA's explained-variance ratios: the normalisation only shifts the intercept), ranks 11..100
    (reptrix's default ``fit_range = np.arange(10, 100)``, 0-based), least squares weighted by
    1 / rank. sslab differs where that code would fail: the range stops at min(N - 1, D) (the
    centred matrix has no more non-zero eigenvalues; ``ValueError`` if fewer than 2 ranks are
    left), and singular values of the centred features below the rounding noise of the input's
    dtype, 10 eps ||X||_F (N^-1/2 + D^-1/2) (about the largest singular value of independent
    rounding errors of X's entries, times 10), are raised to it: the log of round-off would
    otherwise set α (a float32 matrix of rank 5 gives α ≈ 1 from noise alone). A spectrum at that
    floor by ``first_rank`` (collapse to fewer dimensions) gives inf. Features computed in a
    lower precision than their dtype (autocast) carry more noise than this floor assumes.
    """
    dtype = torch.as_tensor(features).dtype
    x = _checked(features, "alpha_req", 2)
    n, d = x.shape
    last = min(last_rank, n - 1, d)
    if first_rank < 1 or last - first_rank + 1 < 2:
        raise ValueError(f"alpha_req: fitting ranks {first_rank}..{last_rank} needs at least "
                         f"{first_rank + 1} eigenvalues, but {n} samples of {d} features have "
                         f"{min(n - 1, d)}")
    s = _singular_values(x - x.mean(dim=0))
    resolution = torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps
    floor = 10 * resolution * float(x.norm()) * (n ** -0.5 + d ** -0.5)
    if float(s[first_rank - 1]) <= floor:
        return math.inf
    eig = s[first_rank - 1:last].clamp_min(floor) ** 2 / (n - 1)
    k = torch.arange(first_rank, last + 1, dtype=torch.float64, device=x.device)
    u, v, w = k.log(), eig.log(), 1.0 / k
    u_mean, v_mean = (w * u).sum() / w.sum(), (w * v).sum() / w.sum()
    slope = (w * (u - u_mean) * (v - v_mean)).sum() / (w * (u - u_mean) ** 2).sum()
    return -float(slope)


@torch.no_grad()
def alpha_req_gap(features, target: float = 1.0, first_rank: int = 11, last_rank: int = 100) -> float:
    """|α - target| for ``alpha_req``'s α: what a sweep minimises (``MEASURES``).

    α-ReQ has no "higher is better": the paper reports linear read-out best for α in a band
    around 1, not at either end. A spectrum flatter than 1/k (α < 1) spreads variance over many
    directions, noise among them, which the paper argues generalises worse from few labels; a
    steeper one (α > 1) packs it into a few directions, towards collapse. Stringer et al. (2019)
    put the boundary between smooth and non-smooth codes near α = 1 (1 + 2/d for d-dimensional
    inputs). So a sweep minimises the distance to 1; ``target`` moves the band's centre. A
    collapsed spectrum gives inf.
    """
    return abs(alpha_req(features, first_rank, last_rank) - target)


@torch.no_grad()
def lidar(embeddings_by_instance, eps: float = 1e-8, delta: float = 1e-4) -> float:
    """LiDAR (Thilak et al. 2024) of embeddings shaped (n_instances, n_views, D): the effective
    rank exp(-Σ_k p_k log p_k), p_k = λ_k / ||λ||_1 + eps, of the eigenvalues λ of the LDA matrix
    Σ_w^-1/2 Σ_b Σ_w^-1/2, each instance a class and its augmented views the class's samples.
    Σ_b = Σ_i (μ_i - μ)(μ_i - μ)^T / (n - 1) (μ_i an instance's mean view, μ their mean) and
    Σ_w = Σ_i Σ_j (z_ij - μ_i)(z_ij - μ_i)^T / (n (q - 1)) + δ I. Higher is better; 0.0 if all
    instances share one mean.

    Apple published no code that we found. This follows the paper's definitions as
    stable-pretraining's ``LiDAR`` callback implements them (unbiased scatter estimates, δ = 1e-4,
    ε = 1e-8 as its defaults); reptrix's ``get_lidar`` scales the scatters otherwise, δ = 1e-6,
    ε = 1e-7 and a PCA of the LDA matrix's rows instead of its eigenvalues. sslab differs from
    stable-pretraining in two details: p_k = λ_k / ||λ||_1 + eps as the paper writes it (not
    (λ_k + eps) / Σ(λ + eps)), and Σ_w's eigenvalues are not clamped: ``ValueError`` if Σ_w is
    numerically singular (δ = 0 with fewer within-instance directions than D, or a δ lost in
    round-off next to Σ_w's largest eigenvalue).

    Embeddings wider than their n·q rows (D > n·q, δ > 0) are computed in an orthonormal basis of
    the span of the centred rows, where every between- and within-instance direction lies: outside
    it Σ_w = δ I and Σ_b = 0, which adds D - n·q zero eigenvalues and nothing else, so the value is
    the same (to rounding) at O(D (nq)^2) instead of O(D^3) (docs/label-free.md#cost).
    """
    z = _checked(embeddings_by_instance, "lidar", 3)
    n, q, d = z.shape
    if q < 2:
        raise ValueError(f"lidar: needs at least 2 views per instance, got {q}")
    if delta < 0:
        raise ValueError(f"lidar: delta must be >= 0, got {delta}")
    width = d
    if delta > 0 and d > n * q:  # the rows' span holds every scatter direction (docstring)
        rows = z.reshape(n * q, d)
        basis = torch.linalg.qr((rows - rows.mean(dim=0)).T).Q  # d x nq, orthonormal columns
        z = (rows @ basis).reshape(n, q, -1)
        d = z.shape[2]
    means = z.mean(dim=1)
    between = means - means.mean(dim=0)
    scatter_b = between.T @ between / (n - 1)
    within = (z - means[:, None, :]).reshape(n * q, d)
    scatter_w = within.T @ within / (n * (q - 1))
    scatter_w += delta * torch.eye(d, dtype=z.dtype, device=z.device)
    values, vectors = torch.linalg.eigh(scatter_w)
    smallest = min(float(values.min()), delta) if width > d else float(values.min())
    if smallest <= float(values.max()) * width * torch.finfo(torch.float64).eps:
        raise ValueError("lidar: the within-instance covariance is singular; use delta > 0")
    inv_sqrt = (vectors * values.rsqrt()) @ vectors.T
    lda = inv_sqrt @ scatter_b @ inv_sqrt
    lam = torch.linalg.eigvalsh((lda + lda.T) / 2).clamp_min(0)
    return _effective_rank(torch.cat([lam, lam.new_zeros(width - d)]), eps)


@torch.no_grad()
def alignment(z1, z2, alpha: float = 2.0) -> float:
    """Alignment (Wang & Isola 2020): E ||f(x) - f(y)||_2^alpha over positive pairs (row i of ``z1``
    with row i of ``z2``) of L2-normalised features; 0 (identical) to 2^alpha (antipodal). Lower
    is better.

    Follows ``align_loss`` in github.com/SsnL/align_uniform; sslab normalises the rows itself
    (the official function expects normalised inputs; for those the two agree).
    """
    a, b = _checked(z1, "alignment", 2), _checked(z2, "alignment", 2)
    if a.shape != b.shape:
        raise ValueError(f"alignment: pairs need equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return float((a - b).norm(p=2, dim=1).pow(alpha).mean())


@torch.no_grad()
def uniformity(z, t: float = 2.0) -> float:
    """Uniformity (Wang & Isola 2020): log E exp(-t ||f(x) - f(y)||²) over all distinct pairs of
    L2-normalised features (rows of ``z``); between -4t (two antipodal points) and 0. Lower is
    better.

    Follows ``uniform_loss`` in github.com/SsnL/align_uniform (``torch.pdist``, mean over the
    N (N - 1) / 2 pairs). sslab normalises the rows itself, and computes the same number from
    blocks of the Gram matrix (||a - b||² = ||a||² + ||b||² - 2 a·b, upper triangle only) with a
    log-sum-exp instead of ``pdist``: faster on CPUs, 1024 × N at a time in memory, and no
    underflow of exp for large t.
    """
    x = F.normalize(_checked(z, "uniformity", 2), dim=1)
    n = x.shape[0]
    sq_norms = (x * x).sum(dim=1)
    parts = []
    for start in range(0, n - 1, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        # the pairs (i, j > i) of the block's rows i: columns from ``start`` on
        logits = x[start:stop] @ x[start:].T
        logits.mul_(2).sub_(sq_norms[start:stop, None]).sub_(sq_norms[None, start:])  # -||a - b||²
        logits.clamp_(max=0).mul_(t)
        below = torch.ones(stop - start, stop - start, dtype=torch.bool, device=x.device).tril_()
        logits[:, :stop - start].masked_fill_(below, -math.inf)  # j <= i: not a pair, or counted
        parts.append(torch.logsumexp(logits, dim=(0, 1)))
    return float(torch.logsumexp(torch.stack(parts), dim=0)) - math.log(n * (n - 1) / 2)
