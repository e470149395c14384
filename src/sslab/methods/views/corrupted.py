"""The corrupted view: a random crop, a corrupted copy of it and the clean crop as the target.

The input and target of the pixel-reconstruction pretext tasks:

- ``masking`` (Vincent et al., ICML 2008, sec. 2.3, the denoising autoencoder's corruption
  q_D): a fixed number of randomly chosen components are forced to 0, here
  ``round(level · H · W)`` pixels per image, all three channels of a chosen pixel (on their
  grayscale digits a component is a pixel; zeroing single channels of an RGB pixel would let
  the other two give its colour away), set to 0 in [0, 1] (black), the paper's value;
- ``gaussian`` (the same paper's other corruption, as in Vincent et al. 2010): isotropic
  Gaussian noise of standard deviation ``level`` in [0, 1] pixel units, the result clipped to
  [0, 1] (the image stays an image; the uint8 transfer would clip anyway);
- ``centre`` (Pathak et al., CVPR 2016, official ``train.lua``): the central square of half the
  side, rows and columns ``[size // 4, size // 4 + size // 2)``, minus an ``overlap``-pixel
  border (which the input keeps), filled with the dataset's mean pixel, i.e. 0 after
  normalisation (the official code fills with its mean pixel 117, 104, 123 in the same way).
  When the views travel as uint8 the mean is rounded to 1/255, so the hole is within
  0.5 / 255 / std ≈ 0.008 of 0 after normalisation.

Outputs (N rows each): ``name``, the corrupted crop, and ``name + "_target"``, the clean crop
(both pixels: float32 N x 3 x size x size, normalised, or uint8 on the uint8 transfer), and, when
``mask`` is set, ``name + "_mask"``: float32 N x 1 x size x size, 1 where the input was corrupted
(every pixel for ``gaussian``, the hole for ``centre``).

The crop is ``ImageView``'s random resized crop and flip (no photometric jitter: the target
is the crop itself); ``train=False`` is a plain resize of the whole image, corrupted as in
training (the corruption is what the view is about: the masking and Gaussian draws still come
from ``rng``, so the same generator state gives the same output; the centre mask is fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.image import ImageView

#: corruption -> what ``level`` means for it
CORRUPTIONS = {"masking": "fraction of pixels zeroed", "gaussian": "noise std in [0, 1] pixel units",
               "centre": "unused"}

#: statistics that leave [0, 1] pixels as they are (the crop before corruption)
_RAW = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclass(frozen=True)
class CorruptedView:
    """A crop, its corrupted copy and a mask of the corruption (see the module docstring)."""

    name: str = "corrupted"
    size: int = 32
    scale: tuple[float, float] = (0.2, 1.0)  # area fraction of the random resized crop
    flip: bool = True
    corruption: str = "masking"  # masking | gaussian | centre
    level: float = 0.25  # masking: fraction ν of pixels zeroed; gaussian: σ; centre: unused
    overlap: int = 0  # centre: border (px) of the central square that the input keeps
    mask: bool = True  # also output name_mask (a loss over the corrupted pixels needs it)

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.size) and self.size >= 2, "size", self.size, "an integer >= 2")
        check(is_range(self.scale) and 0 < self.scale[0] <= self.scale[1] <= 1, "scale", self.scale,
              "(lo, hi) with 0 < lo <= hi <= 1")
        check(self.corruption in CORRUPTIONS, "corruption", self.corruption, f"one of {sorted(CORRUPTIONS)}")
        if self.corruption == "masking":
            check(is_number(self.level) and 0 <= self.level <= 1, "level", self.level,
                  "a fraction in [0, 1] for masking noise")
        else:
            check(is_number(self.level) and 0 <= self.level, "level", self.level, "a number >= 0")
        check(is_int(self.overlap) and 0 <= 2 * self.overlap < self.size // 2, "overlap", self.overlap,
              f"an integer >= 0 leaving a hole inside the central {self.size // 2} px (2 * overlap < size // 2)")
        check(isinstance(self.mask, bool), "mask", self.mask, "true or false")

    def keys(self) -> tuple[str, ...]:
        return (self.name, self.name + "_target") + ((self.name + "_mask",) if self.mask else ())

    def empty(self, n: int) -> dict[str, np.ndarray]:
        pixels = np.zeros((n, 3, self.size, self.size), dtype=np.float32)
        out = {self.name: pixels, self.name + "_target": pixels.copy()}
        if self.mask:
            out[self.name + "_mask"] = np.zeros((n, 1, self.size, self.size), dtype=np.float32)
        return out

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        crop = ImageView(name=self.name, size=self.size, scale=self.scale, flip=self.flip, jitter=0.0, grayscale=0.0)
        clean = crop.apply(images, rng, train=train, stats=_RAW)[self.name]  # N x 3 x s x s in [0, 1]
        n, s = len(clean), self.size
        if self.corruption == "masking":
            mask = masking_noise_mask(rng, n, s, s, self.level)
            corrupted = clean * (1.0 - mask)
        elif self.corruption == "gaussian":
            noise = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(self.level)
            corrupted = np.clip(clean + noise, 0.0, 1.0)
            mask = np.ones((n, 1, s, s), dtype=np.float32)
        else:
            mask = np.broadcast_to(centre_hole(s, self.overlap), (n, 1, s, s))
            fill = np.asarray(stats.mean, dtype=np.float32).reshape(1, 3, 1, 1)
            corrupted = np.where(mask > 0, fill, clean)
        out = {self.name: stats.apply(corrupted), self.name + "_target": stats.apply(clean)}
        if self.mask:
            out[self.name + "_mask"] = np.ascontiguousarray(mask, dtype=np.float32)
        return out


def masking_noise_mask(rng: np.random.Generator, n: int, h: int, w: int, fraction: float) -> np.ndarray:
    """float32 n x 1 x h x w, exactly ``round(fraction · h · w)`` ones per image at uniformly random
    pixels (the k smallest of h·w uniform keys), zeros elsewhere."""
    k = int(round(fraction * h * w))
    chosen = np.argsort(rng.random((n, h * w)), axis=1)[:, :k]
    mask = np.zeros((n, h * w), dtype=np.float32)
    np.put_along_axis(mask, chosen, 1.0, axis=1)
    return mask.reshape(n, 1, h, w)


def centre_square(size: int) -> slice:
    """The rows (and columns) of the central square of half the side: ``[size//4, size//4 + size//2)``
    (official ``train.lua``: ``1 + fineSize/4 .. fineSize/2 + fineSize/4``, 1-based)."""
    return slice(size // 4, size // 4 + size // 2)


def centre_hole(size: int, overlap: int) -> np.ndarray:
    """float32 1 x 1 x size x size: 1 on the central square minus its ``overlap``-px border."""
    hole = np.zeros((1, 1, size, size), dtype=np.float32)
    square = centre_square(size)
    inner = slice(square.start + overlap, square.stop - overlap)
    hole[..., inner, inner] = 1.0
    return hole
