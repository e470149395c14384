"""The image view: a random resized crop with flip and colour jitter (PIRL's v_I, SimCLR's t(x)).

It follows torchvision's ``RandomResizedCrop`` (area fraction in ``scale``, log-uniform aspect
ratio in ``ratio``, 10 tries then the whole image), ``RandomHorizontalFlip``, ``ColorJitter``
and ``RandomGrayscale``, vectorised over the batch: crops and flips are per-sample sampling
grids through one ``torch.nn.functional.grid_sample`` call (bilinear).

Limitation: sampling is bilinear without anti-aliasing, which is exact for CIFAR-sized inputs
(crops are never minified by more than the crop itself) but aliases when a large image is
shrunk by a big factor in one step; datasets are resized to the profile's image size when they
are decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.colour import colour


@dataclass(frozen=True)
class ImageView:
    """Random resized crop, horizontal flip, colour jitter, grayscale.

    Output ``name``: float32 N x 3 x size x size, normalised with the dataset's statistics.
    Evaluation mode (``train=False``) is a plain resize of the full image to ``size``.
    """

    name: str = "image"
    size: int = 32
    scale: tuple[float, float] = (0.2, 1.0)  # area fraction of the crop
    flip: bool = True
    jitter: float = 0.4  # brightness/contrast/saturation strength s: factors in [1-s, 1+s]
    grayscale: float = 0.2  # probability
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop (log-uniform)

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.size) and self.size >= 1, "size", self.size, "an integer >= 1")
        check(is_range(self.scale) and 0 < self.scale[0] <= self.scale[1] <= 1, "scale", self.scale,
              "(lo, hi) with 0 < lo <= hi <= 1")
        check(is_range(self.ratio) and 0 < self.ratio[0] <= self.ratio[1], "ratio", self.ratio,
              "(lo, hi) with 0 < lo <= hi")
        check(is_number(self.jitter) and 0 <= self.jitter, "jitter", self.jitter, "a number >= 0")
        check(is_number(self.grayscale) and 0 <= self.grayscale <= 1, "grayscale", self.grayscale, "[0, 1]")

    def keys(self) -> tuple[str, ...]:
        return (self.name,)

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {self.name: np.zeros((n, 3, self.size, self.size), dtype=np.float32)}

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        n, _, h, w = images.shape
        size = self.size
        if not train:
            y = images if (h, w) == (size, size) else F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return {self.name: stats.apply(y.numpy())}
        cw, ch, x0, y0 = random_resized_crop(rng, n, h, w, self.scale, self.ratio)
        sign = np.where(rng.random(n) < 0.5, -1.0, 1.0) if self.flip else np.ones(n)
        # Output pixel u (edge coordinates: pixel k spans [k, k+1)) samples the source at
        # x0 + (u + 0.5) * cw / size, or at its mirror image inside the box when flipped; grid_sample
        # wants that in normalised coordinates (align_corners=False): 2 * x / w - 1.
        t = (np.arange(size) + 0.5) / size  # output pixel centres as fractions of the box
        tx = np.where(sign[:, None] < 0, 1 - t, t)  # n x size
        grid = np.empty((n, size, size, 2), dtype=np.float32)
        grid[..., 0] = ((x0[:, None] + tx * cw[:, None]) * (2.0 / w) - 1.0)[:, None, :]
        grid[..., 1] = ((y0[:, None] + t * ch[:, None]) * (2.0 / h) - 1.0)[:, :, None]
        y = F.grid_sample(images, torch.from_numpy(grid), mode="bilinear", padding_mode="border", align_corners=False)
        y = colour(y.numpy(), rng, self.jitter, self.grayscale)
        return {self.name: stats.apply(y)}


def random_resized_crop(rng: np.random.Generator, n: int, h: int, w: int,
                        scale: tuple[float, float], ratio: tuple[float, float], tries: int = 10):
    """torchvision's RandomResizedCrop box, vectorised: (width, height, left, top) per sample.

    Draws ``tries`` candidate boxes per sample and keeps the first that fits; samples with no
    fitting candidate take the whole image. Boxes are continuous (sub-pixel) rectangles.
    """
    area = rng.uniform(scale[0], scale[1], (n, tries)) * (h * w)
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, tries)))
    cw, ch = np.sqrt(area * aspect), np.sqrt(area / aspect)
    fits = (cw <= w) & (ch <= h)
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    any_fit = fits[rows, first]
    cw = np.where(any_fit, cw[rows, first], w)
    ch = np.where(any_fit, ch[rows, first], h)
    x0 = rng.random(n) * (w - cw)
    y0 = rng.random(n) * (h - ch)
    return cw, ch, x0, y0
