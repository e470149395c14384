"""The exemplar view: Exemplar-CNN's surrogate-class samples (Dosovitskiy, Springenberg, Riedmiller
& Brox, NIPS 2014, "Discriminative unsupervised feature learning with convolutional neural networks").

The paper samples 32x32 *seed* patches from 96x96 STL-10 images where the image gradient is
large, makes each seed its own surrogate class, and trains a network to classify random
transformations of the seeds (sec. 2.1, 2.2). Each transformation composes, with parameters
drawn per sample:

- translation: vertical and horizontal, up to 0.2 of the patch size;
- scaling: the patch scale multiplied by a factor in [0.7, 1.4];
- rotation: by an angle up to 20 degrees;
- contrast 1: the projection of each pixel onto the principal components multiplied by a factor
  in [0.5, 2], one factor per component and patch;
- contrast 2: saturation and value (HSV) raised to a power in [0.25, 4], multiplied by a factor
  in [0.7, 1.4], plus a value in [-0.1, 0.1];
- colour: a value in [-0.1, 0.1] added to the hue.

No official code exists (``/work/shared/reference/methods.md`` sec. 4); choices made here:

- **One seed per image, chosen from the pixels alone**: the window of side ``patch_fraction`` of the
  image with the largest summed gradient magnitude (luma, forward differences), ties going to
  the most central window. The view sees pixels only (no index), and the surrogate class of an
  image must be the same patch in every epoch and on every worker: a content-only argmax is both,
  without a generator seeded per image. (The paper draws positions among high-gradient regions;
  with one seed per image the best window is the natural deterministic stand-in.)
- **Seed size at 32 px**: 24 px (``patch_fraction`` 0.75) resampled to the output size 32, not the
  paper's 1/3 of the image (11 px of a CIFAR image, too little content): a 32-px CIFAR image
  already frames an object much as the paper's 32-px patch of a 96-px STL image frames an object
  or a part, and the frozen backbone is evaluated on whole 32-px images, so the training input
  should show content at nearly that scale. The 1/4 margin leaves room for the translations.
- **Geometry**: one ``grid_sample`` call with a per-sample affine map (scale s, rotation θ, shift t):
  output pixel offset o from the patch centre c samples the source at c + s R(θ) o + t, where o
  spans the seed's p pixels. s > 1 samples a larger window (the content shrinks); θ > 0 turns the
  content counter-clockwise on screen. Pixels falling outside the image are reflected
  (``padding_mode="reflection"``), the paper's larger images having no border there.
- **Contrast 1** on the patch's own principal components: x <- m + V diag(f) Vᵀ (x - m), with m the
  patch's mean colour and V the eigenvectors of its 3x3 colour covariance. The paper projects on
  the principal components "of the set of all pixels" (the dataset's, as AlexNet's PCA lighting);
  a view sees one batch, not the dataset, and the patch's own components need no statistics
  passed around. Centring on the patch mean makes it a contrast change, leaving the mean colour.
- **Contrast 2**: S and V each get their own power, factor and shift (the paper's wording leaves
  open whether S and V share them); the hue is kept by keeping each channel's position between
  the pixel's min and max channel: c' = V' (1 - S' (1 - w_c)), w_c = (c - min) / (max - min).
- **Colour**: ``colour.adjust_hue``, the shift in fractions of a turn (0.1 = 36 degrees, the paper's
  hue in [0, 1]).
- **Factor distributions**: every multiplicative range of the paper is symmetric on a log scale
  (0.7 x 1.4 ≈ 1, 0.5 x 2 = 1, 0.25 x 4 = 1), so the factors are drawn log-uniformly (the identity
  as the median; a uniform power in [0.25, 4] would exceed 1 in 80% of the draws); additive
  shifts, the angle and the translations are uniform. The paper does not say.
- Values are clamped to [0, 1] after each photometric op.

Evaluation form (``train=False``): the seed window itself, resampled to ``size``, no augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.colour import adjust_hue, gray


@dataclass(frozen=True)
class ExemplarView:
    """The seed patch of each image under one random Exemplar-CNN transformation per draw.

    Output ``name``: float32 N x 3 x size x size, normalised with the dataset's statistics (uint8
    pixels when the platform sends them so). Per sample, in this order: geometry (translation up to
    ``translation`` x the seed side in x and y, scale in ``scale``, rotation up to ``rotation``
    degrees, one ``grid_sample``), contrast 1 (factors in ``pca_contrast`` on the patch's principal
    colour components), contrast 2 (S and V to a power in ``sv_power``, times a factor in
    ``sv_factor``, plus up to ±``sv_shift``), hue shift up to ±``hue`` of a turn. Defaults are the
    paper's; ranges (1, 1) and zero shifts turn an op off. See the module docstring for the choices.
    """

    name: str = "patch"
    size: int = 32  # output side
    patch_fraction: float = 0.75  # seed side as a fraction of the image's shorter side (24 of 32 px)
    translation: float = 0.2  # largest shift in x and in y, as a fraction of the seed side
    scale: tuple[float, float] = (0.7, 1.4)  # sampled window side / seed side (log-uniform)
    rotation: float = 20.0  # largest angle, degrees
    pca_contrast: tuple[float, float] = (0.5, 2.0)  # contrast 1 factor per principal component (log-uniform)
    sv_power: tuple[float, float] = (0.25, 4.0)  # contrast 2 exponent of S and of V (log-uniform)
    sv_factor: tuple[float, float] = (0.7, 1.4)  # contrast 2 factor of S and of V (log-uniform)
    sv_shift: float = 0.1  # contrast 2 shift of S and of V, uniform in ±sv_shift
    hue: float = 0.1  # hue shift, uniform in ±hue, in turns

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.size) and self.size >= 1, "size", self.size, "an integer >= 1")
        check(is_number(self.patch_fraction) and 0 < self.patch_fraction <= 1, "patch_fraction",
              self.patch_fraction, "a number in (0, 1]")
        check(is_number(self.translation) and 0 <= self.translation <= 1, "translation", self.translation,
              "a number in [0, 1]")
        check(is_number(self.rotation) and 0 <= self.rotation <= 180, "rotation", self.rotation,
              "an angle in [0, 180] degrees")
        for field in ("scale", "pca_contrast", "sv_power", "sv_factor"):
            value = getattr(self, field)
            check(is_range(value) and 0 < value[0] <= value[1], field, value, "(lo, hi) with 0 < lo <= hi")
        check(is_number(self.sv_shift) and 0 <= self.sv_shift <= 1, "sv_shift", self.sv_shift, "a number in [0, 1]")
        check(is_number(self.hue) and 0 <= self.hue <= 0.5, "hue", self.hue, "a number in [0, 0.5] (turns)")

    def keys(self) -> tuple[str, ...]:
        return (self.name,)

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {self.name: np.zeros((n, 3, self.size, self.size), dtype=np.float32)}

    def seed_side(self, h: int, w: int) -> int:
        """The seed's side in source pixels: ``patch_fraction`` of the shorter side, at least 2."""
        return min(h, w, max(2, round(self.patch_fraction * min(h, w))))

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        n, _, h, w = images.shape
        p = self.seed_side(h, w)
        x0, y0 = seed_positions(images.numpy(), p)
        if not train:
            ones, zeros = np.ones(n), np.zeros(n)
            return {self.name: stats.apply(transform_seeds(images, x0, y0, p, self.size, ones, zeros, zeros, zeros))}
        scale = _log_uniform(rng, self.scale, n)
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation, n))
        shift = rng.uniform(-self.translation, self.translation, (2, n)) * p
        x = transform_seeds(images, x0, y0, p, self.size, scale, angle, shift[0], shift[1])
        x = pca_contrast(x, _log_uniform(rng, self.pca_contrast, (n, 3)))
        sv = np.stack([_log_uniform(rng, self.sv_power, (n, 2)), _log_uniform(rng, self.sv_factor, (n, 2)),
                       rng.uniform(-self.sv_shift, self.sv_shift, (n, 2))], axis=1)  # n x (power, factor, shift) x (S, V)
        x = hsv_contrast(x, sv)
        x = adjust_hue(x, rng.uniform(-self.hue, self.hue, n))
        return {self.name: stats.apply(x)}


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], shape) -> np.ndarray:
    """Factors whose logarithm is uniform between log(lo) and log(hi)."""
    return np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]), shape))


def seed_positions(images: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (x0, y0), int64 arrays of N, of each image's seed window of ``side`` px.

    The seed is the window whose pixels hold the largest sum of luma gradient magnitudes
    |∇g| = sqrt(dx² + dy²) (forward differences between the window's own pixels; a window of p
    pixels holds p - 1 differences each way). Scores within a relative 1e-6 of the best count as
    ties (float sums of the same values in another order), and ties go to the window nearest the
    image centre: a flat image gives the centred window.
    """
    n, _, h, w = images.shape
    luma = gray(images)[:, 0].astype(np.float64)  # N x H x W
    magnitude = np.sqrt((luma[:, :-1, 1:] - luma[:, :-1, :-1]) ** 2 + (luma[:, 1:, :-1] - luma[:, :-1, :-1]) ** 2)
    k = side - 1  # differences inside a window, each way
    integral = np.zeros((n, h, w))  # integral[:, i, j] = sum of magnitude[:, :i, :j]
    integral[:, 1:, 1:] = magnitude.cumsum(axis=1).cumsum(axis=2)
    score = integral[:, k:, k:] - integral[:, :-k, k:] - integral[:, k:, :-k] + integral[:, :-k, :-k]
    ys, xs = np.meshgrid(np.arange(h - side + 1), np.arange(w - side + 1), indexing="ij")
    off_centre = (ys - (h - side) / 2) ** 2 + (xs - (w - side) / 2) ** 2
    best = score.max(axis=(1, 2), keepdims=True)
    tied = score >= best - 1e-6 * np.abs(best)
    choice = np.where(tied, off_centre, np.inf).reshape(n, -1).argmin(axis=1)
    return xs.ravel()[choice].astype(np.int64), ys.ravel()[choice].astype(np.int64)


def transform_seeds(images: torch.Tensor, x0: np.ndarray, y0: np.ndarray, side: int, size: int,
                    scale: np.ndarray, angle: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Each image's seed window [x0, x0 + side) x [y0, y0 + side) under its own affine map,
    resampled (bilinear) to size x size in one ``grid_sample``; float32 N x 3 x size x size.

    Output pixel (i, j) sits at offset o = ((j + 0.5) / size - 1/2, (i + 0.5) / size - 1/2) x side
    from the window's centre c (edge coordinates: pixel k spans [k, k + 1)) and samples the source
    at c + scale R(angle) o + (tx, ty), R(θ) = [[cos θ, -sin θ], [sin θ, cos θ]] in x-right,
    y-down coordinates. scale 1, angle 0 and no shift give the seed window itself (exactly its
    pixels when size == side). Outside the image the source is reflected.
    """
    n, _, h, w = images.shape
    offsets = ((np.arange(size) + 0.5) / size - 0.5) * side  # size
    ox, oy = offsets[None, None, :], offsets[None, :, None]  # output column, row
    cos = (scale * np.cos(angle))[:, None, None]
    sin = (scale * np.sin(angle))[:, None, None]
    sx = (x0 + side / 2 + tx)[:, None, None] + cos * ox - sin * oy  # n x size x size
    sy = (y0 + side / 2 + ty)[:, None, None] + sin * ox + cos * oy
    grid = np.stack([sx * (2.0 / w) - 1.0, sy * (2.0 / h) - 1.0], axis=-1).astype(np.float32)
    out = F.grid_sample(images, torch.from_numpy(grid), mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    return out.numpy()


def pca_contrast(x: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Contrast 1: x <- m + V diag(f) Vᵀ (x - m) per sample, clamped to [0, 1].

    ``x``: N x 3 x H x W; ``factors``: N x 3, one per principal component, in ascending order of
    its variance. m is the patch's mean colour, V the eigenvectors of its 3x3 colour covariance.
    """
    n, c, h, w = x.shape
    pixels = x.reshape(n, c, h * w).astype(np.float64)
    mean = pixels.mean(axis=2, keepdims=True)
    centred = pixels - mean
    _, vectors = np.linalg.eigh(centred @ centred.transpose(0, 2, 1) / (h * w))  # columns: components
    mix = (vectors * factors[:, None, :]) @ vectors.transpose(0, 2, 1)
    return np.clip(mean + mix @ centred, 0, 1).astype(np.float32).reshape(n, c, h, w)


def hsv_contrast(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Contrast 2: saturation and value each mapped to clamp(v^power x factor + shift, 0, 1), hue kept.

    ``x``: N x 3 x H x W in [0, 1]; ``params``: N x 3 x 2, rows (power, factor, shift), columns
    (S, V). With value V = max channel and saturation S = (max - min) / max, each channel is
    c = V (1 - S (1 - w_c)) where w_c = (c - min) / (max - min) depends on the hue only (0 for
    gray pixels), so the new channel is V' (1 - S' (1 - w_c)).
    """
    high, low = x.max(axis=1, keepdims=True), x.min(axis=1, keepdims=True)
    span = high - low
    hue_weight = (x - low) / np.where(span > 0, span, 1)
    saturation = span / np.where(high > 0, high, 1)
    power, factor, shift = (params[:, i].reshape(-1, 2, 1, 1, 1).astype(np.float32) for i in range(3))
    new_s = np.clip(saturation ** power[:, 0] * factor[:, 0] + shift[:, 0], 0, 1)
    new_v = np.clip(high ** power[:, 1] * factor[:, 1] + shift[:, 1], 0, 1)
    return (new_v * (1 - new_s * (1 - hue_weight))).astype(np.float32)
