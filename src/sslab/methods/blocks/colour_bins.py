"""Quantised ab colours for colourisation (Zhang, Isola & Efros, ECCV 2016, sec. 2.1-2.2): the
in-gamut bins, the soft encoding of a ground-truth ab over its nearest bins, the grey-image mask
and the class-rebalancing weights with the running colour prior they need.

Choices against the official code (richzhang/colorization ``resources/caffe_traininglayers.py``,
``pts_in_hull.npy``, ``prior_probs.npy``):

- **The bin set** is computed here, not loaded: the centres of the grid-10 ab cells (centres at
  multiples of 10) hit by some sRGB colour (any L). The gamut's ab projection is the projection
  of the RGB cube's six faces (checked against a dense grid of the whole cube in the tests), so
  the faces at 8-bit resolution are converted: **Q = 261** bins. Zhang's ``pts_in_hull.npy`` has
  Q = 313 (as its name says, the centres inside a hull of the gamut, which also covers cells that
  no sRGB colour reaches; a target never lands there, so those bins only add logits).
- **The prior** p̃ is not ImageNet's fixed ``prior_probs.npy`` but the training data's own:
  ``ColourPrior`` accumulates the soft-encoded targets of every non-grey pixel the method trains
  on (summed over steps, averaged over data-parallel workers, so identical on each). Summing
  soft encodings is the paper's Gaussian smoothing of p (σ = 5) restricted to each pixel's 10
  nearest bins. Before the first update p̃ is uniform, so the weights start at 1.
- **The uniform part** of the mixture is γ/Q over all Q bins (the official code spreads it over
  the bins whose prior is non-zero; with a running prior that set grows during training).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from sslab.methods.blocks.distributed import mean_over_workers
from sslab.methods.views.lab import srgb_to_lab

#: the ab grid's cell size (Zhang: 10)
GRID = 10


@functools.lru_cache(maxsize=4)
def _gamut_bins(grid: int) -> np.ndarray:
    levels = np.arange(256) / 255.0
    u, v = (a.ravel() for a in np.meshgrid(levels, levels, indexing="ij"))
    faces = []
    for channel in range(3):
        free = [c for c in range(3) if c != channel]
        for value in (0.0, 1.0):
            face = np.empty((3, u.size))
            face[channel], face[free[0]], face[free[1]] = value, u, v
            faces.append(face)
    lab = srgb_to_lab(np.concatenate(faces, axis=1)[:, :, None])  # 3 x P x 1
    cells = np.unique(np.round(lab[1:, :, 0].T / grid).astype(np.int64), axis=0)  # sorted by a, then b
    return (cells * grid).astype(np.float32)


def gamut_bins(grid: int = GRID) -> torch.Tensor:
    """The in-gamut ab bin centres, Q x 2 (a, b), sorted by a then b; Q = 261 at grid 10."""
    return torch.from_numpy(_gamut_bins(grid).copy())


def nearest_bins(ab: torch.Tensor, centres: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and indices of the ``k`` nearest centres of each ab (N x 2 x h x w): N x h x w x k."""
    points = ab.float().permute(0, 2, 3, 1).unsqueeze(-2)  # N x h x w x 1 x 2
    d2 = (points - centres.to(points)).pow(2).sum(-1)  # N x h x w x Q
    neg, idx = torch.topk(-d2, k, dim=-1)  # nearest first
    return -neg, idx


def soft_encode(ab: torch.Tensor, centres: torch.Tensor, neighbours: int = 10, sigma: float = 5.0) -> torch.Tensor:
    """Zhang's soft encoding Z (``NNEncode``): each ab spread over its ``neighbours`` nearest bins with
    weights ∝ exp(−d²/2σ²), summing to 1. ab N x 2 x h x w → Z N x Q x h x w (float32)."""
    d2, idx = nearest_bins(ab, centres, neighbours)
    weights = torch.softmax(-d2 / (2.0 * sigma * sigma), dim=-1)  # the normalised Gaussian, without underflow
    z = torch.zeros(*idx.shape[:-1], len(centres), dtype=weights.dtype, device=weights.device)
    return z.scatter_(-1, idx, weights).permute(0, 3, 1, 2)


def colourful(ab: torch.Tensor, threshold: float = 5.0) -> torch.Tensor:
    """Zhang's non-grey mask (``NonGrayMaskLayer``): 1.0 for an image with some |a| or |b| above
    ``threshold`` anywhere, 0.0 for a grey one, whose pixels then train nothing. ab N x 2 x h x w → N."""
    return (ab.abs().flatten(1).amax(dim=1) > threshold).to(torch.float32)


def rebalancing_weights(prior: torch.Tensor, gamma: float = 0.5, alpha: float = 1.0) -> torch.Tensor:
    """w ∝ ((1 − γ) p̃ + γ/Q)^(−α), normalised so that E_p̃[w] = Σ_q p̃_q w_q = 1 (eq. 4). prior: Q."""
    mix = (1.0 - gamma) * prior + gamma / prior.numel()
    w = mix.pow(-alpha)
    return w / (prior * w).sum()


class ColourPrior(nn.Module):
    """The running empirical distribution p̃ of ab bins, a persistent buffer of summed soft targets."""

    def __init__(self, num_bins: int) -> None:
        super().__init__()
        # float64: the sums reach the number of training pixels seen, past float32's exact range
        self.register_buffer("mass", torch.zeros(num_bins, dtype=torch.float64))

    def distribution(self) -> torch.Tensor:
        """p̃ (float32, sums to 1): the accumulated mass normalised, uniform while there is none."""
        total = self.mass.sum()
        uniform = torch.full_like(self.mass, 1.0 / self.mass.numel())
        return torch.where(total > 0, self.mass / total.clamp_min(1e-12), uniform).float()

    @torch.no_grad()
    def accumulate(self, mass: torch.Tensor) -> None:
        """Add one step's soft-target mass per bin (Q), averaged over the data-parallel workers."""
        self.mass += mean_over_workers(mass.to(self.mass.dtype))


def bin_mass(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The soft-target mass per bin of the non-grey images: Σ over images (× mask) and pixels of Z, Q."""
    return (z * mask.reshape(-1, 1, 1, 1)).sum(dim=(0, 2, 3))
