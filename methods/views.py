"""Views: what the data pipeline produces per image, declared as data, and a batched CPU
implementation of them.

A method declares the views it needs (``ImageView``, ``JigsawView``); the platform calls
``apply_views`` inside Ray Data on uint8 batches N x H x W x 3 and hands the resulting float32
arrays to the method. Everything here is pure numpy/torch and works on the whole batch at once:
crops, flips and the jigsaw patch grid are per-sample sampling grids through a single
``torch.nn.functional.grid_sample`` call (bilinear), and colour jitter is per-sample factors
applied with numpy broadcasting. All randomness comes from the ``numpy.random.Generator`` passed in,
so the same generator state gives bit-identical output.

References
----------
- PIRL: I. Misra and L. van der Maaten, "Self-Supervised Learning of Pretext-Invariant
  Representations", CVPR 2020 (arXiv:1912.01991), sec. 4.1: v_I is a random resized crop with
  flip and colour jitter; v_I^t is a random crop covering >= 60% of the image, split into a 3x3
  grid, a patch taken at a random position inside each cell, each patch colour-jittered and
  grayscaled independently, and the patches shuffled by a permutation from a set of size P.
- Jigsaw: M. Noroozi and P. Favaro, "Unsupervised Learning of Visual Representations by Solving
  Jigsaw Puzzles", ECCV 2016, sec. 3: tiles taken with random jitter inside each cell so that
  edge continuity cannot solve the puzzle; permutation sets in ``sslab.methods.jigsaw``.
- The image-view augmentations follow torchvision's ``RandomResizedCrop`` (area fraction in
  ``scale``, log-uniform aspect ratio in ``ratio``, 10 tries then the whole image),
  ``RandomHorizontalFlip``, ``ColorJitter`` (brightness/contrast/saturation factors uniform in
  [1 - s, 1 + s], applied in a random order, clamped to [0, 1] after each) and
  ``RandomGrayscale`` (ITU-R 601-2 luma).

Limitation: sampling is bilinear without anti-aliasing, which is exact for CIFAR-sized inputs
(crops are never minified by more than the crop itself) but aliases when a large image is
shrunk by a big factor in one step; pre-resize such datasets when decoding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sslab.methods.jigsaw import permutation_set

#: CIFAR-10 channel statistics used to normalise every view.
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)

#: Luma weights of ``torchvision.transforms.functional.rgb_to_grayscale`` (ITU-R 601-2).
_GRAY = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class ImageView:
    """PIRL's v_I: random resized crop, horizontal flip, colour jitter, grayscale.

    Output ``name``: float32 N x 3 x size x size, normalised with ``MEAN``/``STD``.
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
        _check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        _check(_is_int(self.size) and self.size >= 1, "size", self.size, "an integer >= 1")
        _check(_is_range(self.scale) and 0 < self.scale[0] <= self.scale[1] <= 1, "scale", self.scale,
               "(lo, hi) with 0 < lo <= hi <= 1")
        _check(_is_range(self.ratio) and 0 < self.ratio[0] <= self.ratio[1], "ratio", self.ratio,
               "(lo, hi) with 0 < lo <= hi")
        _check(_is_number(self.jitter) and 0 <= self.jitter, "jitter", self.jitter, "a number >= 0")
        _check(_is_number(self.grayscale) and 0 <= self.grayscale <= 1, "grayscale", self.grayscale, "[0, 1]")


@dataclass(frozen=True)
class JigsawView:
    """PIRL's v_I^t: a grid of patches with jitter inside each cell, reordered by a permutation.

    Output ``name``: float32 N x grid² x 3 x patch_size x patch_size (normalised), and
    ``name + "_perm"``: int64 N, the index of the drawn permutation in
    ``sslab.methods.jigsaw.permutation_set(num_permutations, permutation_seed)``.
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

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and self.name != "", "name", self.name, "a non-empty string")
        _check(_is_int(self.grid) and 1 <= self.grid <= 4, "grid", self.grid,
               "an integer in [1, 4] (a permutation index of (grid²)! must fit in int64)")
        total = math.factorial(self.grid * self.grid)
        if self.grid == 3:
            _check(_is_int(self.num_permutations) and 1 <= self.num_permutations <= total,
                   "num_permutations (P)", self.num_permutations, f"an integer in [1, {total}]")
        else:
            _check(self.num_permutations == total, "num_permutations (P)", self.num_permutations,
                   f"{total} (= (grid²)!, any permutation): permutation sets exist for grid=3 only")
        _check(_is_int(self.crop_size) and self.crop_size >= self.grid, "crop_size", self.crop_size,
               f"an integer >= grid ({self.grid})")
        cell = self.crop_size // self.grid
        _check(_is_int(self.patch_size) and 1 <= self.patch_size <= cell, "patch_size", self.patch_size,
               f"an integer in [1, crop_size // grid = {cell}]")
        _check(_is_range(self.crop_scale) and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
               "crop_scale", self.crop_scale, "(lo, hi) with 0 < lo <= hi <= 1")
        _check(_is_number(self.jitter) and 0 <= self.jitter, "jitter", self.jitter, "a number >= 0")
        _check(_is_number(self.grayscale) and 0 <= self.grayscale <= 1, "grayscale", self.grayscale, "[0, 1]")

    @property
    def cells(self) -> int:
        """Number of patches per image, grid²."""
        return self.grid * self.grid


def apply_views(views: Sequence[ImageView | JigsawView], images: np.ndarray,
                rng: np.random.Generator, train: bool = True) -> dict[str, np.ndarray]:
    """Produce every view in ``views`` for a batch of uint8 images N x H x W x 3 (RGB).

    Returns a dict: for an ``ImageView`` its ``name`` -> float32 N x 3 x size x size; for a
    ``JigsawView`` its ``name`` -> float32 N x grid² x 3 x p x p (already permuted) and
    ``name + "_perm"`` -> int64 N. Patch k of image n is cell ``perm[k]`` of that image, cells
    numbered row-major, where ``perm = permutation_set(P, permutation_seed)[out_perm[n]]``.

    ``train=True`` draws the augmentations described in the module docstring.
    ``train=False``: an ``ImageView`` is the full image resized to ``size`` (no flip, no colour
    change); a ``JigsawView`` cuts centred patches from the full image resized to ``crop_size``,
    no colour change, but still draws a permutation from ``rng``.

    Views are produced in the order given, each drawing its randomness from ``rng`` in turn, so
    the same generator state gives identical output.
    """
    images = _check_images(images)
    names: set[str] = set()
    for view in views:
        if not isinstance(view, ImageView | JigsawView):
            raise TypeError(f"views must be ImageView or JigsawView instances, got {type(view).__name__}")
        keys = [view.name] + ([view.name + "_perm"] if isinstance(view, JigsawView) else [])
        if names.intersection(keys):
            raise ValueError(f"two views produce the output key {sorted(names.intersection(keys))[0]!r}; "
                             "give each view a distinct name")
        names.update(keys)
    if len(images) == 0:
        return _empty_views(views, images.shape[0])
    # Resampling goes through torch (grid_sample); the per-pixel arithmetic is numpy, which is
    # single-threaded: on tensors this small torch's intra-op threads cost more than they give
    # (5-30x slower on a busy 2-core machine), and changing torch's thread count would be global
    # state. Parallelism comes from Ray Data running several batches at once.
    # The float copy also makes read-only inputs (Arrow-backed batches) fine for torch.
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    x *= np.float32(1 / 255)
    source = torch.from_numpy(x)  # N x 3 x H x W in [0, 1]
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for view in views:
            if isinstance(view, ImageView):
                out[view.name] = _image_view(view, source, rng, train)
            else:
                out[view.name], out[view.name + "_perm"] = _jigsaw_view(view, source, rng, train)
    return out


def _empty_views(views: Sequence[ImageView | JigsawView], n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for view in views:
        if isinstance(view, ImageView):
            out[view.name] = np.zeros((n, 3, view.size, view.size), dtype=np.float32)
        else:
            out[view.name] = np.zeros((n, view.cells, 3, view.patch_size, view.patch_size), dtype=np.float32)
            out[view.name + "_perm"] = np.zeros(n, dtype=np.int64)
    return out


# --------------------------------------------------------------------------- image view


def _image_view(view: ImageView, x: torch.Tensor, rng: np.random.Generator, train: bool) -> np.ndarray:
    n, _, h, w = x.shape
    size = view.size
    if not train:
        y = x if (h, w) == (size, size) else F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return _normalise(y.numpy())
    cw, ch, x0, y0 = _random_resized_crop(rng, n, h, w, view.scale, view.ratio)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0) if view.flip else np.ones(n)
    # Output pixel u (edge coordinates: pixel k spans [k, k+1)) samples the source at
    # x0 + (u + 0.5) * cw / size, or at its mirror image inside the box when flipped; grid_sample
    # wants that in normalised coordinates (align_corners=False): 2 * x / w - 1.
    t = (np.arange(size) + 0.5) / size  # output pixel centres as fractions of the box
    tx = np.where(sign[:, None] < 0, 1 - t, t)  # n x size
    grid = np.empty((n, size, size, 2), dtype=np.float32)
    grid[..., 0] = ((x0[:, None] + tx * cw[:, None]) * (2.0 / w) - 1.0)[:, None, :]
    grid[..., 1] = ((y0[:, None] + t * ch[:, None]) * (2.0 / h) - 1.0)[:, :, None]
    y = F.grid_sample(x, torch.from_numpy(grid), mode="bilinear", padding_mode="border", align_corners=False)
    y = _colour(y.numpy(), rng, view.jitter, view.grayscale)
    return _normalise(y)


def _random_resized_crop(rng: np.random.Generator, n: int, h: int, w: int,
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


# --------------------------------------------------------------------------- jigsaw view


def _jigsaw_view(view: JigsawView, x: torch.Tensor, rng: np.random.Generator,
                 train: bool) -> tuple[np.ndarray, np.ndarray]:
    n, _, h, w = x.shape
    g, p, c = view.grid, view.patch_size, view.crop_size
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
    steps = np.arange(p)
    u = margin + (col * cell)[None, :, None] + off_x[:, :, None] + steps  # n x cells x p
    v = margin + (r * cell)[None, :, None] + off_y[:, :, None] + steps
    gx = (x0[:, None, None] + (u + 0.5) * (cw / c)[:, None, None]) * (2.0 / w) - 1.0
    gy = (y0[:, None, None] + (v + 0.5) * (ch / c)[:, None, None]) * (2.0 / h) - 1.0
    grid = np.empty((n, cells, p, p, 2), dtype=np.float32)
    grid[..., 0] = gx[:, :, None, :]  # x varies along the patch's columns
    grid[..., 1] = gy[:, :, :, None]  # y along its rows
    grid_t = torch.from_numpy(grid.reshape(n, cells * p, p, 2))  # patches stacked vertically
    patches = F.grid_sample(x, grid_t, mode="bilinear", padding_mode="border", align_corners=False).numpy()
    patches = patches.reshape(n, 3, cells, p, p).transpose(0, 2, 1, 3, 4).reshape(n * cells, 3, p, p)
    if train:
        patches = _colour(patches, rng, view.jitter, view.grayscale)  # each patch independently
    patches = patches.reshape(n, cells, 3, p, p)
    perms, index = _draw_permutations(view, rng, n)
    gathered = patches[np.arange(n)[:, None], perms]  # output patch k = input cell perm[k]
    return _normalise(gathered), index


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


# --------------------------------------------------------------------------- colour


def _gray(x: np.ndarray) -> np.ndarray:
    """Luma of B x 3 x H x W, as B x 1 x H x W."""
    return _GRAY[0] * x[:, 0:1] + _GRAY[1] * x[:, 1:2] + _GRAY[2] * x[:, 2:3]


def _colour(x: np.ndarray, rng: np.random.Generator, strength: float, p_gray: float) -> np.ndarray:
    """ColorJitter(brightness=s, contrast=s, saturation=s) in a random order per sample, then
    RandomGrayscale(p), all vectorised over the batch B x 3 x H x W (float32 in [0, 1]).

    Each jitter op is a blend x <- f x + (1 - f) t towards a target t: 0 for brightness, the mean
    luma of the image for contrast, the per-pixel luma for saturation (torchvision's
    ``adjust_brightness/contrast/saturation``), clamped to [0, 1] after each op. So one step for
    the whole batch picks each sample's factor and target by its op and blends once.
    """
    b = x.shape[0]
    if strength > 0:
        lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
        factors = rng.uniform(lo, hi, (b, 3)).astype(np.float32)  # columns: brightness, contrast, saturation
        order = np.argsort(rng.random((b, 3)), axis=1)  # a random order of the three ops per sample
        rows = np.arange(b)
        for step in range(3):
            op = order[:, step]
            f = factors[rows, op].reshape(b, 1, 1, 1)
            gray = _gray(x)
            is_contrast = (op == 1).astype(np.float32).reshape(b, 1, 1, 1)
            is_saturation = (op == 2).astype(np.float32).reshape(b, 1, 1, 1)
            target = is_contrast * gray.mean(axis=(2, 3), keepdims=True) + is_saturation * gray
            x = f * x + (1 - f) * target
            np.clip(x, 0.0, 1.0, out=x)
    if p_gray > 0:
        to_gray = (rng.random(b) < p_gray).reshape(b, 1, 1, 1)
        x = np.where(to_gray, _gray(x), x)
    return x


def _normalise(x: np.ndarray) -> np.ndarray:
    """(x - MEAN) / STD per channel (channel axis -3), as a contiguous float32 array."""
    out = (x - MEAN.reshape(3, 1, 1)) / STD.reshape(3, 1, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- validation


def _check_images(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        desc = (f"{type(images).__name__} {getattr(images, 'dtype', '')} shape {getattr(images, 'shape', '')}")
        raise ValueError(f"images must be a uint8 numpy array N x H x W x 3 (RGB), got {desc}")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"images must have positive height and width, got shape {images.shape}")
    return images


def _check(ok: bool, field: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{field} = {value!r} is invalid: must be {allowed}")


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)


def _is_range(v: object) -> bool:
    return isinstance(v, tuple | list) and len(v) == 2 and all(_is_number(e) for e in v)
