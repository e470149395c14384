"""The tiles view: the downsampled image D∘x and its four tiles T_1∘x .. T_4∘x, for counting.

Noroozi, Pirsiavash & Favaro, "Representation Learning by Learning to Count", ICCV 2017
(arXiv:1708.06734), sec. 3: from a crop x of an image, D∘x is x downsampled by 2 and T_j∘x the
j-th tile of x's 2 x 2 grid, each of D∘x's size, so that the counts of visual primitives satisfy
φ(D∘x) = Σ_j φ(T_j∘x) (``methods/pretext/counting.py``).

The crop is one per-sample sampling grid through a single ``grid_sample`` call (as ``image.py``);
the downsampling and the tiling are reshapes of that crop, so the tiles tile exactly the image
that D∘x is a downsampled copy of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.colour import colour
from sslab.methods.views.image import random_resized_crop

#: tiles per image: the 2 x 2 grid of the paper
NUM_TILES = 4


@dataclass(frozen=True)
class TilesView:
    """A random square crop, downsampled by 2 (D∘x) and cut into its 2 x 2 tiles (T_1..T_4).

    Outputs (float32, normalised with the dataset's statistics; s = ``output_size``, or
    ``crop_size // 2`` when it is 0):

    - ``name + "_down"``: N x 3 x s x s, D∘x;
    - ``name + "_tiles"``: N x 4 x 3 x s x s, T_1..T_4 in row-major order (top-left, top-right,
      bottom-left, bottom-right).

    Per sample, in this order: a square crop whose area is a fraction uniform in ``crop_scale``
    of the image (torchvision's ``RandomResizedCrop`` box with aspect ratio 1; the whole image
    when no box fits), resampled bilinearly to ``crop_size`` x ``crop_size``; a horizontal flip
    with probability 1/2 (``flip``); colour jitter of strength ``jitter`` and grayscale with
    probability ``grayscale``, drawn once for the whole crop, so that D∘x and the tiles show the
    same colours (the counting equation compares them). Then, from that crop c:

    - **D∘x is the 2 x 2 area mean of c**: pixel (i, j) is the mean of c's pixels (2i..2i+1,
      2j..2j+1), i.e. area averaging (``cv2.INTER_AREA``, PIL's box filter), which is what
      "downsample by 2" means; bilinear sampling without anti-aliasing would read one pixel of
      each 2 x 2 block and alias;
    - T_j∘x is the j-th quarter of c, c[:, rows, cols] with rows, cols in {0..h-1, h..2h-1},
      h = crop_size // 2, cut without resampling.

    With ``output_size`` > 0 both are then resampled to that side (bilinear, anti-aliased when
    shrinking), e.g. to the image size so that the backbone sees them at the scale it is
    evaluated at; 0 keeps them as cut (the paper's network takes 114-px tiles and is evaluated
    on full-size images).

    Evaluation mode (``train=False``): the whole image resized to ``crop_size`` (anti-aliased
    bilinear; the image itself when it already has that size), no flip and no colour change.
    With ``crop_size`` = the image size and ``output_size`` = the image size, ``name + "_down"``
    is the image downsampled by 2 and resampled back to its size (counting's invariance pair).
    """

    name: str = "count"
    crop_size: int = 32  # even; D∘x and the tiles are half of it
    crop_scale: tuple[float, float] = (0.6, 1.0)  # area fraction of the square crop
    flip: bool = True
    #: colour jitter of the crop: s for ColorJitter(s, s, s), or (brightness, contrast, saturation, hue)
    jitter: float | tuple[float, float, float, float] = 0.4
    grayscale: float = 0.2  # probability
    output_size: int = 0  # D∘x and the tiles resampled to this side; 0 = crop_size // 2, as cut

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.crop_size) and self.crop_size >= 2 and self.crop_size % 2 == 0, "crop_size",
              self.crop_size, "an even integer >= 2 (it is cut into a 2 x 2 grid)")
        check(is_range(self.crop_scale) and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
              "crop_scale", self.crop_scale, "(lo, hi) with 0 < lo <= hi <= 1")
        check(isinstance(self.flip, bool), "flip", self.flip, "true or false")
        if isinstance(self.jitter, Sequence):
            check(len(self.jitter) == 4 and all(is_number(v) and v >= 0 for v in self.jitter)
                  and self.jitter[3] <= 0.5, "jitter", self.jitter,
                  "a number >= 0 or (brightness, contrast, saturation, hue), each >= 0, hue <= 0.5")
        else:
            check(is_number(self.jitter) and self.jitter >= 0, "jitter", self.jitter,
                  "a number >= 0 or (brightness, contrast, saturation, hue), each >= 0, hue <= 0.5")
        check(is_number(self.grayscale) and 0 <= self.grayscale <= 1, "grayscale", self.grayscale, "[0, 1]")
        check(is_int(self.output_size) and self.output_size >= 0, "output_size", self.output_size,
              "an integer >= 0 (0: half the crop, as cut)")

    @property
    def side(self) -> int:
        """The side of D∘x and of each tile: ``output_size``, or ``crop_size // 2`` when that is 0."""
        return self.output_size or self.crop_size // 2

    def keys(self) -> tuple[str, ...]:
        return (self.name + "_down", self.name + "_tiles")

    def empty(self, n: int) -> dict[str, np.ndarray]:
        s = self.side
        return {self.name + "_down": np.zeros((n, 3, s, s), dtype=np.float32),
                self.name + "_tiles": np.zeros((n, NUM_TILES, 3, s, s), dtype=np.float32)}

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        crop = self._crop(images, rng) if train else self._whole(images)
        down, tiles = downsample_and_tile(crop)
        n, h = len(crop), self.crop_size // 2
        if self.side != h:
            both = torch.from_numpy(np.concatenate([down, tiles.reshape(n * NUM_TILES, 3, h, h)]))
            both = F.interpolate(both, size=(self.side, self.side), mode="bilinear", align_corners=False,
                                 antialias=self.side < h).numpy()
            down, tiles = both[:n], both[n:].reshape(n, NUM_TILES, 3, self.side, self.side)
        return {self.name + "_down": stats.apply(down), self.name + "_tiles": stats.apply(tiles)}

    def _whole(self, images: torch.Tensor) -> np.ndarray:
        """The evaluation crop: the whole image at ``crop_size``, N x 3 x c x c in [0, 1]."""
        c = self.crop_size
        if images.shape[-2:] == (c, c):
            return images.numpy()
        return F.interpolate(images, size=(c, c), mode="bilinear", align_corners=False, antialias=True).numpy()

    def _crop(self, images: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
        """Random square crops at ``crop_size``, flipped and colour-jittered: N x 3 x c x c in [0, 1]."""
        n, _, h, w = images.shape
        c = self.crop_size
        cw, ch, x0, y0 = random_resized_crop(rng, n, h, w, self.crop_scale, (1.0, 1.0))
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0) if self.flip else np.ones(n)
        # Output pixel u (edge coordinates) samples the source at x0 + (u + 0.5) * cw / c, or at its
        # mirror image inside the box when flipped, in grid_sample's normalised coordinates.
        t = (np.arange(c) + 0.5) / c
        tx = np.where(sign[:, None] < 0, 1 - t, t)
        grid = np.empty((n, c, c, 2), dtype=np.float32)
        grid[..., 0] = ((x0[:, None] + tx * cw[:, None]) * (2.0 / w) - 1.0)[:, None, :]
        grid[..., 1] = ((y0[:, None] + t * ch[:, None]) * (2.0 / h) - 1.0)[:, :, None]
        crop = F.grid_sample(images, torch.from_numpy(grid), mode="bilinear", padding_mode="border",
                             align_corners=False).numpy()
        return colour(crop, rng, self.jitter, self.grayscale)


def downsample_and_tile(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D∘x, the 2 x 2 area mean of ``crop`` (N x 3 x 2h x 2h), as N x 3 x h x h, and its tiles,
    N x 4 x 3 x h x h in row-major order (tile 2r + q holds rows r*h.., columns q*h..)."""
    n, ch, size, _ = crop.shape
    h = size // 2
    down = crop.reshape(n, ch, h, 2, h, 2).mean(axis=(3, 5), dtype=np.float32)
    tiles = crop.reshape(n, ch, 2, h, 2, h).transpose(0, 2, 4, 1, 3, 5).reshape(n, NUM_TILES, ch, h, h)
    return down, np.ascontiguousarray(tiles)
