"""The jigsaw view: PIRL's v_I^t and the patches of Noroozi & Favaro's jigsaw puzzle.

- PIRL: I. Misra and L. van der Maaten, CVPR 2020 (arXiv:1912.01991), sec. 4.1: v_I^t is a
  random crop covering >= 60% of the image, split into a 3x3 grid, a patch taken at a random
  position inside each cell, each patch colour-jittered and grayscaled independently, and the
  patches shuffled by a permutation from a set of size P.
- Jigsaw: M. Noroozi and P. Favaro, ECCV 2016, sec. 3: tiles taken with random jitter inside
  each cell so that edge continuity cannot solve the puzzle; permutation sets in
  ``sslab.methods.blocks.permutations``.

The patch grid is one per-sample sampling grid through a single ``grid_sample`` call.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.blocks.permutations import permutation_set
from sslab.methods.views.base import Normalization, check, is_int, is_number, is_range
from sslab.methods.views.colour import colour


@dataclass(frozen=True)
class JigsawView:
    """PIRL's v_I^t: a grid of patches with jitter inside each cell, reordered by a permutation.

    Output ``name``: float32 N x grid² x 3 x s x s (normalised; s = ``output_size``, or
    ``patch_size`` when it is 0), and
    ``name + "_perm"``: int64 N, the index of the drawn permutation in
    ``sslab.methods.blocks.permutations.permutation_set(num_permutations, permutation_seed)``.
    Output patch k is input cell ``perm[k]``, cells numbered row-major (cell r, c is r*grid + c).
    With P = 9! no set is materialised: a uniform permutation is drawn per image and its index
    is its lexicographic rank (Lehmer code), i.e. its row in ``permutation_set(9!)``, which lists
    all permutations in ``itertools.permutations`` order. A grid other than 3 needs
    P = (grid²)! (permutation sets cover 9 cells only).
    """

    name: str = "jigsaw"
    num_permutations: int = math.factorial(9)  # P; 9! = any permutation
    permutation_seed: int = 0
    grid: int = 3
    crop_size: int = 30  # random crop (area >= crop_scale[0] of the image) resized to this
    patch_size: int = 8  # each cell is crop_size // grid; the patch sits at a random offset inside
    jitter: float = 0.4  # per-patch brightness/contrast/saturation strength
    grayscale: float = 0.2  # per-patch probability
    crop_scale: tuple[float, float] = (0.6, 1.0)  # area fraction of the (square-aspect) crop
    output_size: int = 0  # each patch resampled (bilinear) to this side; 0 = patch_size, as cut
    #: Noroozi & Favaro's guard against low-level shortcuts: each patch's channels shifted and scaled
    #: to the dataset's mean and std (after the colour jitter), so that the normalised output has
    #: zero mean and unit std per patch and channel; off: the patches keep their own statistics
    tile_normalization: bool = False

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        check(is_int(self.grid) and 1 <= self.grid <= 4, "grid", self.grid,
               "an integer in [1, 4] (a permutation index of (grid²)! must fit in int64)")
        total = math.factorial(self.grid * self.grid)
        if self.grid == 3:
            check(is_int(self.num_permutations) and 1 <= self.num_permutations <= total,
                   "num_permutations (P)", self.num_permutations, f"an integer in [1, {total}]")
        else:
            check(self.num_permutations == total, "num_permutations (P)", self.num_permutations,
                   f"{total} (= (grid²)!, any permutation): permutation sets exist for grid=3 only")
        check(is_int(self.crop_size) and self.crop_size >= self.grid, "crop_size", self.crop_size,
               f"an integer >= grid ({self.grid})")
        cell = self.crop_size // self.grid
        check(is_int(self.patch_size) and 1 <= self.patch_size <= cell, "patch_size", self.patch_size,
               f"an integer in [1, crop_size // grid = {cell}]")
        check(is_range(self.crop_scale) and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
               "crop_scale", self.crop_scale, "(lo, hi) with 0 < lo <= hi <= 1")
        check(is_int(self.output_size) and self.output_size >= 0, "output_size", self.output_size,
               "an integer >= 0 (0: the patch's own size)")
        check(is_number(self.jitter) and 0 <= self.jitter, "jitter", self.jitter, "a number >= 0")
        check(is_number(self.grayscale) and 0 <= self.grayscale <= 1, "grayscale", self.grayscale, "[0, 1]")
        check(isinstance(self.tile_normalization, bool), "tile_normalization", self.tile_normalization,
              "true or false")

    @property
    def side(self) -> int:
        """The side of an output patch: ``output_size``, or ``patch_size`` when that is 0."""
        return self.output_size or self.patch_size

    @property
    def cells(self) -> int:
        """Number of patches per image, grid²."""
        return self.grid * self.grid

    def keys(self) -> tuple[str, ...]:
        return (self.name, self.name + "_perm")

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {self.name: np.zeros((n, self.cells, 3, self.side, self.side), dtype=np.float32),
                self.name + "_perm": np.zeros(n, dtype=np.int64)}

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        patches, index = _jigsaw_view(self, images, rng, train, stats)
        return {self.name: patches, self.name + "_perm": index}

    #: the smallest image whose 3x3 jigsaw has tiles of 3 px
    MIN_IMAGE_SIZE = 12

    @classmethod
    def for_image_size(cls, image_size: int, **fields) -> "JigsawView":
        """A view scaled to ``image_size`` as PIRL's is to 32 px: a crop of 15/16 of the side
        (30 of 32), cut into a 3x3 grid, a patch of 4/5 of each cell (8 of 10). Below
        ``MIN_IMAGE_SIZE`` a tile would be under 3 px, too small for a 3x3 convolution to see
        anything of its content, and the size is refused."""
        if image_size < cls.MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size {image_size} is too small for a 3x3 jigsaw (tiles under 3 px): "
                f"use a profile with image_size >= {cls.MIN_IMAGE_SIZE}"
            )
        crop = image_size - image_size // 16
        patch = max(1, round(0.8 * (crop // 3)))
        return cls(crop_size=crop, patch_size=patch, **fields)


def _jigsaw_view(view: JigsawView, x: torch.Tensor, rng: np.random.Generator,
                 train: bool, stats: Normalization) -> tuple[np.ndarray, np.ndarray]:
    n, _, h, w = x.shape
    g, p, c, s = view.grid, view.patch_size, view.crop_size, view.side
    cells = g * g
    cell = c // g
    margin = (c - g * cell) / 2  # a crop_size not divisible by grid leaves a centred border
    if train:
        side = np.sqrt(rng.uniform(view.crop_scale[0], view.crop_scale[1], n))  # area fraction -> side
        cw, ch = side * w, side * h
        x0, y0 = rng.random(n) * (w - cw), rng.random(n) * (h - ch)
        off_x = rng.integers(0, cell - p + 1, (n, cells)).astype(np.float64)  # the jitter inside a cell
        off_y = rng.integers(0, cell - p + 1, (n, cells)).astype(np.float64)
    else:
        cw, ch = np.full(n, float(w)), np.full(n, float(h))
        x0 = y0 = np.zeros(n)
        off_x = off_y = np.full((n, cells), (cell - p) / 2)
    # Pixel (i, j) of the patch from cell k = (r, col) is pixel (v, u) of the crop resized to c x c,
    # u = margin + col*cell + off_x + j, and samples the source at x0 + (u + 0.5) * cw / c (edge
    # coordinates), exactly what resizing the crop bilinearly and then slicing it would give.
    r, col = np.divmod(np.arange(cells), g)
    steps = (np.arange(s) + 0.5) * (p / s) - 0.5  # s samples over the patch's p pixels (= arange(p) at s = p)
    u = margin + (col * cell)[None, :, None] + off_x[:, :, None] + steps  # n x cells x s
    v = margin + (r * cell)[None, :, None] + off_y[:, :, None] + steps
    gx = (x0[:, None, None] + (u + 0.5) * (cw / c)[:, None, None]) * (2.0 / w) - 1.0
    gy = (y0[:, None, None] + (v + 0.5) * (ch / c)[:, None, None]) * (2.0 / h) - 1.0
    grid = np.empty((n, cells, s, s, 2), dtype=np.float32)
    grid[..., 0] = gx[:, :, None, :]  # x varies along the patch's columns
    grid[..., 1] = gy[:, :, :, None]  # y along its rows
    grid_t = torch.from_numpy(grid.reshape(n, cells * s, s, 2))  # patches stacked vertically
    patches = F.grid_sample(x, grid_t, mode="bilinear", padding_mode="border", align_corners=False).numpy()
    patches = patches.reshape(n, 3, cells, s, s).transpose(0, 2, 1, 3, 4).reshape(n * cells, 3, s, s)
    if train:
        patches = colour(patches, rng, view.jitter, view.grayscale)  # each patch independently
    if view.tile_normalization:
        patches = _normalise_each_patch(patches, stats)
    patches = patches.reshape(n, cells, 3, s, s)
    perms, index = _draw_permutations(view, rng, n)
    gathered = patches[np.arange(n)[:, None], perms]  # output patch k = input cell perm[k]
    return stats.apply(gathered), index


def _normalise_each_patch(patches: np.ndarray, stats: Normalization) -> np.ndarray:
    """Patches (m x 3 x s x s in [0, 1]) with each channel of each patch moved to the dataset's mean
    and std, ``(x - mean_patch) / std_patch * std + mean``: ``stats.apply`` then gives every patch
    zero mean and unit std per channel (JigsawPuzzlePytorch's per-tile ``Normalize``; a flat
    channel becomes 0). Sent as uint8 pixels, values beyond [0, 1] (|z| > ~2) are clipped."""
    mean = patches.mean(axis=(2, 3), keepdims=True)
    std = patches.std(axis=(2, 3), keepdims=True)
    z = (patches - mean) / np.where(std > 1e-6, std, 1.0)
    target_std = np.asarray(stats.std, dtype=np.float32).reshape(1, 3, 1, 1)
    target_mean = np.asarray(stats.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    return (z * target_std + target_mean).astype(np.float32)


def _draw_permutations(view: JigsawView, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Permutations (n x cells, int64) drawn uniformly from the view's set, and their indices.

    With P = (grid²)! the set is every permutation, so a uniform permutation is drawn directly
    (never materialising the set) and its index is its lexicographic rank (Lehmer code), which is
    its row in ``permutation_set(9!)`` (listed in ``itertools.permutations`` order).
    """
    cells = view.cells
    if view.num_permutations == math.factorial(cells):
        perms = rng.permuted(np.tile(np.arange(cells, dtype=np.int64), (n, 1)), axis=1)
        return perms, _lexicographic_rank(perms)
    index = rng.integers(0, view.num_permutations, n).astype(np.int64)
    return _permutation_table(view.num_permutations, view.permutation_seed)[index], index


@functools.lru_cache(maxsize=16)
def _permutation_table(num_permutations: int, seed: int) -> np.ndarray:
    """``permutation_set`` as a read-only numpy array, cached (it is asked for every batch)."""
    table = permutation_set(num_permutations, seed).numpy().astype(np.int64)
    table.setflags(write=False)
    return table


def _lexicographic_rank(perms: np.ndarray) -> np.ndarray:
    """Rank of each row of ``perms`` (n x m permutations of 0..m-1) in lexicographic order.

    Lehmer code: rank = sum_i d_i * (m-1-i)!, d_i = #{j > i : perm[j] < perm[i]}.
    """
    m = perms.shape[1]
    later = np.triu(np.ones((m, m), dtype=bool), k=1)  # later[i, j] = j > i
    digits = ((perms[:, None, :] < perms[:, :, None]) & later).sum(axis=2)
    weights = np.array([math.factorial(m - 1 - i) for i in range(m)], dtype=np.int64)
    return digits.astype(np.int64) @ weights
