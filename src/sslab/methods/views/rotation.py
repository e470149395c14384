"""The rotation view: an image turned by multiples of 90 degrees (RotNet's input, PIRL's rotation v_I^t).

- RotNet: S. Gidaris, P. Singh and N. Komodakis, ICLR 2018 (arXiv:1803.07728): the rotations
  {0°, 90°, 180°, 270°}, label k for a turn of k·90°, all four rotated copies of each image in
  the same batch. The official CIFAR-10 code (gidariss/FeatureLearningRotNet, ``dataloader.py``)
  first augments the image lightly, ``RandomCrop(32, padding=4)`` (zero padding) and
  ``RandomHorizontalFlip``, then rotates that one crop four times (``rotate_img``: a
  counter-clockwise turn, ``np.flipud(np.transpose(img))`` for 90°).
- VISSL's ``ImgRotatePil`` draws **one** random rotation per image instead (its RotNet config,
  ``configs/config/pretrain/rotnet/rotnet_8gpu_resnet.yaml``): ``all_rotations=False``.

Rotations are exact index permutations (``torch.rot90``, counter-clockwise from the first spatial
axis towards the second, as ``rotate_img``), never an interpolation. The crop samples whole pixels
(offsets are integers), so it is an exact copy of pixels too: one per-sample ``grid_sample`` with
``mode="nearest"`` at pixel centres, zeros outside the image as torchvision's padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.views.base import Normalization, check, is_int

#: quarter turns of RotNet's four classes: label k = a counter-clockwise turn of k · 90°
QUARTER_TURNS = (0, 1, 2, 3)


@dataclass(frozen=True)
class RotationView:
    """An image, lightly augmented (random crop with zero padding, horizontal flip), turned by k · 90°.

    Outputs, with R = ``len(rotations)``:

    - ``all_rotations=True`` (RotNet): ``name``, float32 N x R x 3 x size x size (normalised), copy
      j being the *same* crop turned by ``rotations[j]`` quarter turns; ``name + "_label"``,
      int64 N x R, the quarter turns of each copy (``[0, 1, 2, 3]`` for every image by default).
    - ``all_rotations=False`` (VISSL): ``name``, float32 N x 3 x size x size, each image turned by
      one rotation drawn uniformly from ``rotations``; ``name + "_label"``, int64 N, its quarter turns.

    Copy i of an output equals ``torch.rot90(crop_i, k=label_i, dims=(-2, -1))``: counter-clockwise.

    Training draws, per image: the crop offset (uniform over the 2·``padding`` + 1 positions in
    each direction, torchvision's ``RandomCrop(size, padding)``), the flip (p 0.5, when ``flip``),
    then (one-rotation mode) the rotation. Evaluation (``train=False``) draws nothing: the whole
    image, no flip; in one-rotation mode image i of the batch is turned by
    ``rotations[i % len(rotations)]``, so that an invariance measurement sees every rotation equally
    often and reproducibly. An image whose side is not ``size`` is first resized to it (bilinear,
    as ``ImageView``'s evaluation form).
    """

    name: str = "rotation"
    size: int = 32
    all_rotations: bool = True
    #: the quarter turns drawn from (one-rotation mode) or produced (all-rotations mode), distinct, in 0..3
    rotations: tuple[int, ...] = QUARTER_TURNS
    #: zero padding of the random crop in pixels (RotNet's CIFAR RandomCrop(32, padding=4)); 0 = no crop
    padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.size) and self.size >= 1, "size", self.size, "an integer >= 1")
        check(isinstance(self.all_rotations, bool), "all_rotations", self.all_rotations, "true or false")
        check(isinstance(self.rotations, tuple) and len(self.rotations) >= 1
              and all(is_int(k) and k in QUARTER_TURNS for k in self.rotations)
              and len(set(self.rotations)) == len(self.rotations),
              "rotations", self.rotations, "a non-empty tuple of distinct quarter turns in {0, 1, 2, 3}")
        check(is_int(self.padding) and 0 <= self.padding < self.size, "padding", self.padding,
              f"an integer in [0, size = {self.size})")
        check(isinstance(self.flip, bool), "flip", self.flip, "true or false")

    def keys(self) -> tuple[str, ...]:
        return (self.name, self.name + "_label")

    def empty(self, n: int) -> dict[str, np.ndarray]:
        copies = (len(self.rotations),) if self.all_rotations else ()
        return {self.name: np.zeros((n, *copies, 3, self.size, self.size), dtype=np.float32),
                self.name + "_label": np.zeros((n, *copies), dtype=np.int64)}

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        n, _, h, w = images.shape
        size = self.size
        x = images if (h, w) == (size, size) else F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if train and (self.padding or self.flip):
            x = self._crop_and_flip(x, rng)
        turns = np.asarray(self.rotations, dtype=np.int64)
        if self.all_rotations:
            rotated = torch.stack([torch.rot90(x, int(k), dims=(-2, -1)) for k in turns], dim=1)
            labels = np.tile(turns, (n, 1))
        else:
            labels = turns[rng.integers(0, len(turns), n)] if train else turns[np.arange(n) % len(turns)]
            rotated = torch.empty_like(x)
            for k in turns:  # one exact rot90 per quarter turn, over the images that drew it
                chosen = torch.from_numpy(labels == k)
                rotated[chosen] = torch.rot90(x[chosen], int(k), dims=(-2, -1))
        return {self.name: stats.apply(rotated.numpy()), self.name + "_label": labels}

    def _crop_and_flip(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """RandomCrop(size, padding) with zero fill, then RandomHorizontalFlip, as pixel copies."""
        n, _, size, _ = x.shape
        p = self.padding
        # offset of the crop in the padded image; source pixel = output pixel + offset - padding
        ox = rng.integers(0, 2 * p + 1, n) - p
        oy = rng.integers(0, 2 * p + 1, n) - p
        flipped = rng.random(n) < 0.5 if self.flip else np.zeros(n, dtype=bool)
        u = np.arange(size)
        cols = np.where(flipped[:, None], size - 1 - u, u) + ox[:, None]  # n x size, the crop mirrored
        rows = u[None, :] + oy[:, None]
        grid = np.empty((n, size, size, 2), dtype=np.float32)
        grid[..., 0] = ((cols + 0.5) * (2.0 / size) - 1.0)[:, None, :]  # pixel centres, normalised
        grid[..., 1] = ((rows + 0.5) * (2.0 / size) - 1.0)[:, :, None]
        return F.grid_sample(x, torch.from_numpy(grid), mode="nearest", padding_mode="zeros", align_corners=False)
