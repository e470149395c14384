"""The image view: a random resized crop with flip and photometric jitter (PIRL's v_I, SimCLR's t(x)).

It follows torchvision's ``RandomResizedCrop`` (area fraction in ``scale``, log-uniform aspect
ratio in ``ratio``, 10 tries then the whole image), ``RandomHorizontalFlip``,
``RandomApply([ColorJitter(b, c, s, h)], p)``, ``RandomGrayscale``, ``GaussianBlur`` and
``RandomSolarize``, vectorised over the batch: crops and flips are per-sample sampling grids
through one ``torch.nn.functional.grid_sample`` call (bilinear), the photometric ops are the
batched numpy functions of ``colour.py``.

Limitation: sampling is bilinear without anti-aliasing, which is exact for CIFAR-sized inputs
(crops are never minified by more than the crop itself) but aliases when a large image is
shrunk by a big factor in one step; datasets are resized to the profile's image size when they
are decoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.colour import (blur_kernel_size, jitter_strengths, random_color_jitter,
                                        random_gaussian_blur, random_grayscale, random_solarize)


@dataclass(frozen=True)
class ImageView:
    """Random resized crop, horizontal flip, colour jitter, grayscale, blur, solarisation.

    Output: float32 N x 3 x size x size per key, normalised with the dataset's statistics. The
    keys are ``(name,)`` for one copy, else ``name_0 .. name_{copies-1}``: independent draws of the
    same augmentation (a Siamese method's two views), drawn one copy after the other, so the
    output equals that of the separate views ``replace(view, name=f"{name}_{i}", copies=1)``.
    Evaluation mode (``train=False``) is a plain resize of the full image to ``size`` (the same
    for every copy).

    Per sample, in this order (BYOL's and SimCLR's; flip commutes with the rest, so MoCo v2's
    flip-last order gives the same distribution): crop, flip, colour jitter with probability
    ``jitter_prob`` (the enabled ops of ColorJitter(b, c, s, h) in a random order), grayscale
    with probability ``grayscale``, Gaussian blur with probability ``blur_prob`` (sigma uniform in
    ``blur_sigma``, kernel ~10% of ``size``, odd: ``colour.blur_kernel_size``; none below 20 px),
    solarisation with probability ``solarize_prob``. The defaults are PIRL's v_I; blur, solarisation and hue
    are off by default and draw no random numbers when off, so the defaults' output for a given
    generator never changes. Asymmetric views (BYOL) are separate instances with their own
    probabilities and names.

    Paper presets (``/work/shared/reference/methods.md`` section 3; s = SimCLR's colour strength,
    ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)):

    - SimCLR, CIFAR-10 (google-research/simclr README: strength 0.5, no blur):
      ``ImageView(scale=(0.08, 1), jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8, grayscale=0.2,
      copies=2)``; on ImageNet-sized images strength 1.0 ``jitter=(0.8, 0.8, 0.8, 0.2)`` and
      ``blur_prob=0.5``.
    - MoCo v2 ("aug-plus", facebookresearch/moco main_moco.py): ``scale=(0.2, 1),
      jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8, grayscale=0.2, blur_prob=0.5, copies=2``.
    - BYOL (deepmind-research byol/utils/augmentations.py), also Barlow Twins and VICReg: two
      instances with ``scale=(0.08, 1), jitter=(0.4, 0.4, 0.2, 0.1), jitter_prob=0.8,
      grayscale=0.2``, the first ``blur_prob=1.0, solarize_prob=0.0``, the second
      ``blur_prob=0.1, solarize_prob=0.2``. At 32 px solo-learn turns blur off (``blur_prob=0``)
      and VICReg's CIFAR config uses ``scale=(0.2, 1)``, solarisation 0.1.
    """

    name: str = "image"
    size: int = 32
    scale: tuple[float, float] = (0.2, 1.0)  # area fraction of the crop
    flip: bool = True
    #: colour jitter strengths: s for ColorJitter(s, s, s), or (brightness, contrast, saturation,
    #: hue): factors uniform in [max(0, 1 - x), 1 + x], hue shift uniform in [-hue, hue]
    jitter: float | tuple[float, float, float, float] = 0.4
    grayscale: float = 0.2  # probability
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop (log-uniform)
    jitter_prob: float = 1.0  # probability that a sample is colour-jittered at all (SimCLR: 0.8)
    blur_prob: float = 0.0  # probability of a Gaussian blur (SimCLR ImageNet, MoCo v2: 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # range of the blur's sigma, in output pixels
    solarize_prob: float = 0.0  # probability of x -> 1 - x where x >= 0.5 (BYOL's second view: 0.2)
    copies: int = 1  # independent views of this augmentation: keys name_0 .. name_{copies-1}

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.size) and self.size >= 1, "size", self.size, "an integer >= 1")
        check(is_range(self.scale) and 0 < self.scale[0] <= self.scale[1] <= 1, "scale", self.scale,
              "(lo, hi) with 0 < lo <= hi <= 1")
        check(is_range(self.ratio) and 0 < self.ratio[0] <= self.ratio[1], "ratio", self.ratio,
              "(lo, hi) with 0 < lo <= hi")
        if isinstance(self.jitter, Sequence) and not isinstance(self.jitter, str):
            check(len(self.jitter) == 4 and all(is_number(v) and v >= 0 for v in self.jitter)
                  and self.jitter[3] <= 0.5, "jitter", self.jitter,
                  "a number >= 0 or (brightness, contrast, saturation, hue), each >= 0, hue <= 0.5")
        else:
            check(is_number(self.jitter) and 0 <= self.jitter, "jitter", self.jitter,
                  "a number >= 0 or (brightness, contrast, saturation, hue), each >= 0, hue <= 0.5")
        check(is_number(self.grayscale) and 0 <= self.grayscale <= 1, "grayscale", self.grayscale, "[0, 1]")
        check(is_number(self.jitter_prob) and 0 <= self.jitter_prob <= 1, "jitter_prob", self.jitter_prob,
              "a probability in [0, 1]")
        check(is_number(self.blur_prob) and 0 <= self.blur_prob <= 1, "blur_prob", self.blur_prob,
              "a probability in [0, 1]")
        check(is_range(self.blur_sigma) and 0 < self.blur_sigma[0] <= self.blur_sigma[1], "blur_sigma",
              self.blur_sigma, "(lo, hi) with 0 < lo <= hi")
        check(is_number(self.solarize_prob) and 0 <= self.solarize_prob <= 1, "solarize_prob",
              self.solarize_prob, "a probability in [0, 1]")
        check(is_int(self.copies) and self.copies >= 1, "copies", self.copies, "an integer >= 1")

    def keys(self) -> tuple[str, ...]:
        if self.copies == 1:
            return (self.name,)
        return tuple(f"{self.name}_{i}" for i in range(self.copies))

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {key: np.zeros((n, 3, self.size, self.size), dtype=np.float32) for key in self.keys()}

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        _, _, h, w = images.shape
        size = self.size
        keys = self.keys()
        if not train:
            y = images if (h, w) == (size, size) else F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            y = stats.apply(y.numpy())
            return {key: y if i == 0 else y.copy() for i, key in enumerate(keys)}
        # Copies one after the other, each drawing in turn: copies=2 is exactly two views named
        # name_0 and name_1 (one batch of 2n rows would be no faster: twice the working set).
        return {key: stats.apply(self._augment(images, rng)) for key in keys}

    def _augment(self, images: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
        """One random view of every image: N x 3 x size x size in [0, 1], not normalised."""
        n, _, h, w = images.shape
        size = self.size
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
        y = random_color_jitter(y.numpy(), rng, jitter_strengths(self.jitter), self.jitter_prob)
        y = random_grayscale(y, rng, self.grayscale)
        y = random_gaussian_blur(y, rng, self.blur_prob, self.blur_sigma, blur_kernel_size(size))
        return random_solarize(y, rng, self.solarize_prob)


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
