"""The patch-pair view: a centre patch and one of its 8 neighbours, for relative patch location.

C. Doersch, A. Gupta and A. A. Efros, "Unsupervised Visual Representation Learning by Context
Prediction", ICCV 2015. The official code (cdoersch/deepcontext ``train.py``) lays a grid of
96-px patches with a 48-px gap between them over the image, moves every patch by up to ±7 px
(uniform, per axis) so that a network cannot match edges or lines across the gap, and labels a
pair by where the second patch sits relative to the first::

    0 1 2
    3 . 4        (the paper's 1 2 3 / 4 . 5 / 6 7 8, from 0; row-major, centre skipped)
    5 6 7

(mmselfsup's ``RandomPatchWithLabels`` numbers the same cells column by column, a relabelling
that changes nothing learnt.) Its counter-measure against chromatic aberration (the paper's
"trivial solutions": a lens's colour fringes tell where in the frame a patch lies) is **colour
dropping**: each patch keeps one random channel and the other two are replaced by noise.

Geometry, in the *layout* frame (a square of side L = 3p + 2g + 2j, p the patch side, g the gap, j
the jitter): grid cell (r, c), r, c in {0, 1, 2}, has its top-left corner at
(j + c (p + g), j + r (p + g)), moved by (δx, δy) uniform in [-j, j]², so every patch stays inside
the layout. A random square crop of the image (area fraction uniform in ``crop_scale``, the aspect
of the image) is mapped onto the layout; both patches are sampled from it by one ``grid_sample``
(bilinear), which is a resize of the crop to L x L followed by slicing, at sub-pixel jitter.
``for_image_size`` scales DC's 96 / 48 / ±7 px to an image side S: p = round(S · 96 / 398)
(398 = 3·96 + 2·48 + 2·7, DC's layout), g = p / 2, j = p · 7 / 96; at 32 px, p = 8, g = 4,
j ≈ 0.58 and L ≈ 33.2 (the whole image upsampled by 4%). DC's crop scale: it rescales each image
to 150k-450k pixels, so its 398-px layout covers 35-100% of the image's area: ``crop_scale`` =
(0.35, 1).

Choices where this view departs from DC's code (``prep_image``):

- one pair per image, the centre patch and one of its 8 neighbours drawn uniformly (DC: every
  adjacent pair of a grid over the image; mmselfsup: all 8 pairs of one 3x3 grid), so a batch of
  N images is N pairs;
- colour dropping keeps the channel as it is and fills the two others with the dataset's mean
  plus DC's noise (uniform ±0.5 grey levels of 255): DC subtracts the kept channel's patch mean
  and fills the others with that noise around 0, which is what normalisation maps the dataset
  mean to here. DC's other per-patch steps are left out: the random down- and up-sampling of a
  third of the patches, and the per-patch contrast normalisation (RMS scaled to 50), which would
  take pixels out of [0, 1] (views end in pixel units, possibly sent as uint8);
- ``colour_drop="grayscale"``: mmselfsup's RandomGrayscale (p 0.66) instead, one draw per image
  (it is applied to the image before the patches are cut), both patches alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.colour import random_grayscale

#: (row, column) of the neighbour minus those of the centre patch, indexed by the label
NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
#: DC's layout: 96-px patches, 48-px gaps, ±7 px jitter; 398 px from the first patch's leftmost
#: possible pixel to the last one's rightmost
DC_PATCH, DC_GAP, DC_JITTER = 96, 48, 7
DC_LAYOUT = 3 * DC_PATCH + 2 * DC_GAP + 2 * DC_JITTER
#: DC's noise in a dropped channel: uniform(0, 1) - 0.5 on 0-255 pixels
DROP_NOISE = 0.5 / 255
COLOUR_DROPS = ("drop", "grayscale", "none")


@dataclass(frozen=True)
class PatchPairView:
    """A centre patch, one of its 8 neighbours drawn uniformly, and the neighbour's position.

    Outputs (s = ``output_size``, or ``patch_size`` when it is 0):

    - ``name + "_centre"``, ``name + "_neighbour"``: float32 N x 3 x s x s (normalised);
    - ``name + "_label"``: int64 N in 0..7, the neighbour's place around the centre
      (``NEIGHBOUR_OFFSETS[label]`` = (row, column) offset in grid cells).

    Training draws, in this order: the crop, the labels, the jitter of both patches, then the
    colour drop (so a view that only differs in ``colour_drop`` cuts the same patches). The
    evaluation form (``train=False``) is deterministic: the whole image on the layout, no jitter,
    no colour change, and labels cycling 0..7 over the batch (every position equally often).
    """

    name: str = "patch"
    patch_size: int = 8  # p, in layout pixels
    gap: float = 4.0  # g, between adjacent patches before jitter
    jitter: float = 8 * DC_JITTER / DC_PATCH  # j: each patch moves by up to ±j per axis
    crop_scale: tuple[float, float] = (0.35, 1.0)  # area fraction of the crop mapped onto the layout
    colour_drop: str = "drop"  # 'drop' (DC), 'grayscale' (mmselfsup), 'none'
    colour_drop_prob: float = 1.0  # per patch ('drop') or per image ('grayscale'); DC 1, mmselfsup 0.66
    output_size: int = 0  # each patch resampled (bilinear) to this side; 0 = patch_size, as cut

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.patch_size) and self.patch_size >= 1, "patch_size", self.patch_size, "an integer >= 1")
        check(is_number(self.gap) and self.gap >= 0, "gap", self.gap, "a number >= 0 (pixels)")
        check(is_number(self.jitter) and 0 <= self.jitter, "jitter", self.jitter, "a number >= 0 (pixels)")
        check(is_range(self.crop_scale) and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
              "crop_scale", self.crop_scale, "(lo, hi) with 0 < lo <= hi <= 1")
        check(self.colour_drop in COLOUR_DROPS, "colour_drop", self.colour_drop, f"one of {COLOUR_DROPS}")
        check(is_number(self.colour_drop_prob) and 0 <= self.colour_drop_prob <= 1, "colour_drop_prob",
              self.colour_drop_prob, "a probability in [0, 1]")
        check(is_int(self.output_size) and self.output_size >= 0, "output_size", self.output_size,
              "an integer >= 0 (0: the patch's own size)")

    @property
    def side(self) -> int:
        """The side of an output patch: ``output_size``, or ``patch_size`` when that is 0."""
        return self.output_size or self.patch_size

    @property
    def layout(self) -> float:
        """L = 3p + 2g + 2j: the side of the square the 3x3 grid with its jitter spans."""
        return 3 * self.patch_size + 2 * self.gap + 2 * self.jitter

    def keys(self) -> tuple[str, ...]:
        return (self.name + "_centre", self.name + "_neighbour", self.name + "_label")

    def empty(self, n: int) -> dict[str, np.ndarray]:
        s = self.side
        return {self.name + "_centre": np.zeros((n, 3, s, s), dtype=np.float32),
                self.name + "_neighbour": np.zeros((n, 3, s, s), dtype=np.float32),
                self.name + "_label": np.zeros(n, dtype=np.int64)}

    #: the smallest image whose scaled patches (``for_image_size``) are 3 px
    MIN_IMAGE_SIZE = 12

    @classmethod
    def for_image_size(cls, image_size: int, *, gap: float = DC_GAP / DC_PATCH,
                       jitter: float = DC_JITTER / DC_PATCH, **fields) -> "PatchPairView":
        """DC's layout scaled to ``image_size`` (see the module docstring): p = round(S · 96 / 398),
        gap and jitter given as fractions of p (DC: 1/2 and 7/96)."""
        if image_size < cls.MIN_IMAGE_SIZE:
            raise ValueError(f"image_size {image_size} is too small for relative patch location (patches "
                             f"under 3 px): use a profile with image_size >= {cls.MIN_IMAGE_SIZE}")
        p = max(1, round(image_size * DC_PATCH / DC_LAYOUT))
        return cls(patch_size=p, gap=gap * p, jitter=jitter * p, **fields)

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        n, _, h, w = images.shape
        p, s, layout = self.patch_size, self.side, self.layout
        if train:
            side = np.sqrt(rng.uniform(self.crop_scale[0], self.crop_scale[1], n))  # area fraction -> side
            cw, ch = side * w, side * h
            x0, y0 = rng.random(n) * (w - cw), rng.random(n) * (h - ch)
            label = rng.integers(0, len(NEIGHBOUR_OFFSETS), n).astype(np.int64)
            shift = rng.uniform(-self.jitter, self.jitter, (n, 2, 2))  # (centre, neighbour) x (x, y)
        else:
            cw, ch = np.full(n, float(w)), np.full(n, float(h))
            x0 = y0 = np.zeros(n)
            label = np.arange(n, dtype=np.int64) % len(NEIGHBOUR_OFFSETS)
            shift = np.zeros((n, 2, 2))
        offsets = np.asarray(NEIGHBOUR_OFFSETS)[label]  # n x (row, col)
        cells = np.stack([np.ones((n, 2), dtype=np.int64), 1 + offsets], axis=1)  # n x patch x (row, col)
        top = self.jitter + cells * (p + self.gap) + shift[:, :, ::-1]  # n x patch x (row, col): layout px
        # Patch pixel k (of s) covers layout coordinates top + (k + 0.5) p / s (edge coordinates), which
        # sit at x0 + u · cw / L in the image; grid_sample wants that as 2 x / w - 1 (align_corners=False).
        steps = (np.arange(s) + 0.5) * (p / s)
        u = top[:, :, 1, None] + steps  # n x 2 x s
        v = top[:, :, 0, None] + steps
        gx = (x0[:, None, None] + u * (cw / layout)[:, None, None]) * (2.0 / w) - 1.0
        gy = (y0[:, None, None] + v * (ch / layout)[:, None, None]) * (2.0 / h) - 1.0
        grid = np.empty((n, 2, s, s, 2), dtype=np.float32)
        grid[..., 0] = gx[:, :, None, :]
        grid[..., 1] = gy[:, :, :, None]
        pair = F.grid_sample(images, torch.from_numpy(grid.reshape(n, 2 * s, s, 2)), mode="bilinear",
                             padding_mode="border", align_corners=False).numpy()  # n x 3 x 2s x s
        if train and self.colour_drop == "grayscale":
            pair = random_grayscale(pair, rng, self.colour_drop_prob)  # one draw per image, both patches
        pair = pair.reshape(n, 3, 2, s, s).transpose(0, 2, 1, 3, 4)  # n x patch x 3 x s x s
        if train and self.colour_drop == "drop":
            pair = drop_colours(pair.reshape(2 * n, 3, s, s), rng, self.colour_drop_prob, stats.mean)
            pair = pair.reshape(n, 2, 3, s, s)
        return {self.name + "_centre": stats.apply(pair[:, 0]), self.name + "_neighbour": stats.apply(pair[:, 1]),
                self.name + "_label": label}


def drop_colours(x: np.ndarray, rng: np.random.Generator, p: float,
                 fill: tuple[float, float, float]) -> np.ndarray:
    """DC's colour dropping on B x 3 x H x W in [0, 1]: with probability p per sample, keep one
    channel drawn uniformly and replace the two others by ``fill`` (per channel) plus noise
    uniform in ±``DROP_NOISE``.

    Draws, in this order: which samples are dropped (only when p < 1), the kept channel of every
    sample, then the noise of every pixel. p = 0 draws nothing.
    """
    if p <= 0:
        return x
    b = x.shape[0]
    dropped = rng.random(b) < p if p < 1 else np.ones(b, dtype=bool)
    keep = rng.integers(0, 3, b)
    noise = rng.uniform(-DROP_NOISE, DROP_NOISE, x.shape).astype(np.float32)
    noise += np.asarray(fill, dtype=np.float32).reshape(1, 3, 1, 1)
    replaced = dropped[:, None] & (np.arange(3)[None, :] != keep[:, None])  # b x 3
    return np.where(replaced[:, :, None, None], noise, x)
