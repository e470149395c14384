"""Photometric augmentations on float32 batches B x 3 x H x W in [0, 1], vectorised over the batch.

They follow torchvision's ``transforms.v2`` semantics, each sample with its own parameters:

- ``ColorJitter(brightness, contrast, saturation, hue)``: brightness/contrast/saturation factors
  uniform in [max(0, 1 - s), 1 + s], a hue shift uniform in [-h, h], the enabled ops applied in a
  random order per sample, clamped to [0, 1] after each blend (``adjust_brightness``,
  ``adjust_contrast``, ``adjust_saturation``, ``adjust_hue``);
- ``RandomGrayscale(p)`` (ITU-R 601-2 luma, as ``rgb_to_grayscale``);
- ``GaussianBlur(kernel_size, sigma)`` (separable kernel, reflect padding, as ``gaussian_blur``);
- ``RandomSolarize(threshold=0.5)`` (x -> 1 - x where x >= 0.5, as ``solarize``; BYOL's solarisation
  on [0, 1] images).

The ``random_*`` functions draw their parameters from a ``numpy.random.Generator``; the functions
taking explicit per-sample parameters (``apply_jitter``, ``adjust_hue``, ``gaussian_blur``,
``solarize``) are what they call, and what the tests compare with torchvision sample by sample.
A disabled op (strength or probability 0) draws no random numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Luma weights of ``torchvision.transforms.functional.rgb_to_grayscale`` (ITU-R 601-2).
GRAY = (0.2989, 0.587, 0.114)

#: Op ids of the colour jitter, in torchvision's ``ColorJitter`` numbering (its ``fn_idx``).
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def gray(x: np.ndarray) -> np.ndarray:
    """Luma of B x 3 x H x W, as B x 1 x H x W."""
    return GRAY[0] * x[:, 0:1] + GRAY[1] * x[:, 1:2] + GRAY[2] * x[:, 2:3]


def jitter_strengths(jitter: float | Sequence[float]) -> tuple[float, float, float, float]:
    """(brightness, contrast, saturation, hue) strengths from a view's ``jitter`` field.

    A number s is the shorthand for ColorJitter(s, s, s) without hue (PIRL's jitter); a sequence
    is the four strengths of ColorJitter(b, c, s, h).
    """
    if isinstance(jitter, Sequence):
        b, c, s, h = (float(v) for v in jitter)
        return b, c, s, h
    s = float(jitter)
    return s, s, s, 0.0


# --------------------------------------------------------------------------- colour jitter


def random_color_jitter(x: np.ndarray, rng: np.random.Generator,
                        strengths: tuple[float, float, float, float], p: float = 1.0) -> np.ndarray:
    """``RandomApply([ColorJitter(b, c, s, h)], p)`` on each sample of B x 3 x H x W.

    Draws, in this order and only for what is enabled: the factors of the enabled
    brightness/contrast/saturation ops (B x k, uniform in [max(0, 1 - s), 1 + s]), the hue shifts
    (B, uniform in [-h, h]), a random order of the enabled ops per sample, and, when p < 1, which
    samples are jittered at all. With b = c = s and no hue this is the draw sequence sslab has
    always used (PIRL's results depend on it).
    """
    n = x.shape[0]
    ops = [op for op in (BRIGHTNESS, CONTRAST, SATURATION, HUE) if strengths[op] > 0]
    if not ops or p <= 0:
        return x
    factors = np.ones((n, 4), dtype=np.float32)  # column HUE holds the shift, not a factor
    blends = [op for op in ops if op != HUE]
    if blends:
        lo = np.array([max(0.0, 1.0 - strengths[op]) for op in blends])
        hi = np.array([1.0 + strengths[op] for op in blends])
        factors[:, blends] = rng.uniform(lo, hi, (n, len(blends)))
    if HUE in ops:
        factors[:, HUE] = rng.uniform(-strengths[HUE], strengths[HUE], n)
    order = np.asarray(ops)[np.argsort(rng.random((n, len(ops))), axis=1)]
    if p >= 1:
        return apply_jitter(x, factors, order)
    chosen = np.flatnonzero(rng.random(n) < p)
    if len(chosen):
        x = x.copy()
        x[chosen] = apply_jitter(x[chosen], factors[chosen], order[chosen])
    return x


def apply_jitter(x: np.ndarray, factors: np.ndarray, order: np.ndarray) -> np.ndarray:
    """ColorJitter with explicit per-sample parameters on B x 3 x H x W (float32 in [0, 1]).

    ``factors`` is B x 4: brightness, contrast, saturation factors and the hue shift (torchvision's
    ``brightness_factor``, ..., ``hue_factor``); ``order`` is B x k op ids (``BRIGHTNESS``, ...,
    ``HUE``), applied left to right (torchvision's ``fn_idx`` without the disabled ops).

    Each of brightness, contrast and saturation is a blend x <- f x + (1 - f) t towards a target
    t: 0 for brightness, the image's mean luma for contrast, the per-pixel luma for saturation
    (torchvision's ``_blend``), clamped to [0, 1]. So one step for the whole batch picks each
    sample's factor and target by its op and blends once; samples whose op at this step is the
    hue shift blend with f = 1 (an exact no-op) and are then rotated in HSV.
    """
    b = x.shape[0]
    rows = np.arange(b)
    for step in range(order.shape[1]):
        op = order[:, step]
        f = np.where(op == HUE, np.float32(1), factors[rows, np.minimum(op, SATURATION)])
        f = f.astype(np.float32).reshape(b, 1, 1, 1)
        luma = gray(x)
        is_contrast = (op == CONTRAST).astype(np.float32).reshape(b, 1, 1, 1)
        is_saturation = (op == SATURATION).astype(np.float32).reshape(b, 1, 1, 1)
        target = is_contrast * luma.mean(axis=(2, 3), keepdims=True) + is_saturation * luma
        x = f * x + (1 - f) * target
        np.clip(x, 0.0, 1.0, out=x)
        hue = np.flatnonzero(op == HUE)
        if len(hue):
            x[hue] = adjust_hue(x[hue], factors[hue, HUE])
    return x


def adjust_hue(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """torchvision's ``adjust_hue`` with one shift per sample: rotate the hue by ``shift`` turns.

    x is B x 3 x H x W in [0, 1], shift a length-B array in [-0.5, 0.5]. As torchvision (after
    Pillow), the hue is the hexcone model's, in sixths of a turn: (g - b) / (max - min) where red
    is the max channel (ties go to red, then green), 2 + (b - r) / (max - min) where green is,
    4 + (r - g) / (max - min) otherwise. It is shifted modulo 6 and converted back keeping value
    and saturation, i.e. each pixel's max and min channel: channel = min + (max - min) * w(H),
    with the usual piecewise-linear weights w_R = clip(|H - 3| - 1, 0, 1),
    w_G = clip(2 - |H - 2|, 0, 1), w_B = clip(2 - |H - 4|, 0, 1). That is torchvision's
    six-sector table in closed form (equal up to float rounding, ~1e-7), with one floor and no
    per-channel modulo; gray pixels (max = min) stay as they are.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = x.max(axis=1)
    minc = x.min(axis=1)
    span = maxc - minc
    inv = np.float32(1) / np.where(span > 0, span, np.float32(1))
    h6 = np.where(maxc == r, g - b, np.where(maxc == g, 2 * span + b - r, 4 * span + r - g))
    h6 *= inv
    h6 += (6 * np.asarray(shift, dtype=np.float32)).reshape(-1, 1, 1)
    h6 -= np.float32(6) * np.floor(h6 * np.float32(1 / 6))  # into [0, 6)
    out = np.empty_like(x)
    for channel, (centre, sign, offset) in enumerate(((3, 1, -1), (2, -1, 2), (4, -1, 2))):
        w = np.abs(h6 - np.float32(centre))
        if sign < 0:
            np.negative(w, out=w)
        w += np.float32(offset)
        np.clip(w, 0, 1, out=w)
        w *= span
        np.add(w, minc, out=out[:, channel])
    return out


# --------------------------------------------------------------------------- grayscale


def random_grayscale(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """``RandomGrayscale(p)``: each sample replaced by its luma (in all 3 channels) with probability p."""
    if p <= 0:
        return x
    to_gray = (rng.random(x.shape[0]) < p).reshape(-1, 1, 1, 1)
    return np.where(to_gray, gray(x), x)


# --------------------------------------------------------------------------- blur and solarisation


def blur_kernel_size(size: int) -> int:
    """SimCLR's kernel size for images of side ``size``: 10% of the side, made odd.

    SimCLR (``data_util.random_blur``: ``kernel_size = height // 10``, radius = kernel_size // 2,
    kernel 2 * radius + 1) and BYOL (23 for 224 px) use this; 3 at 32 px, 9 at 96 px, 23 at 224 px.
    Below 20 px it is 1, i.e. no blur (and no random draws for it).
    """
    return 2 * ((size // 10) // 2) + 1


def random_gaussian_blur(x: np.ndarray, rng: np.random.Generator, p: float,
                         sigma: tuple[float, float], kernel_size: int) -> np.ndarray:
    """``RandomApply([GaussianBlur(kernel_size, sigma)], p)``: each sample blurred with probability p,
    with its own sigma uniform in ``sigma``.

    Draws which samples are blurred (only when p < 1), then one sigma per blurred sample.
    """
    if p <= 0 or kernel_size <= 1:
        return x
    n = x.shape[0]
    chosen = np.arange(n) if p >= 1 else np.flatnonzero(rng.random(n) < p)
    if len(chosen) == 0:
        return x
    sigmas = rng.uniform(sigma[0], sigma[1], len(chosen))
    if len(chosen) == n:
        return gaussian_blur(x, sigmas, kernel_size)
    x = x.copy()
    x[chosen] = gaussian_blur(x[chosen], sigmas, kernel_size)
    return x


def gaussian_blur(x: np.ndarray, sigma: np.ndarray, kernel_size: int) -> np.ndarray:
    """torchvision's ``gaussian_blur(x, kernel_size, sigma)`` with one sigma per sample.

    The kernel is separable, w_i ∝ exp(-i² / (2σ²)) for i = -r..r (r = kernel_size // 2),
    normalised to sum 1 (torchvision's ``_get_gaussian_kernel1d``); borders are reflect-padded
    (torch's ``"reflect"``, the edge pixel not repeated). Rows are blurred first, then columns;
    each pass is ``kernel_size`` shifted multiply-adds over the whole batch.

    SimCLR's and BYOL's TensorFlow code pad with zeros ('SAME'), which darkens a border of r
    pixels; sslab follows torchvision, as the PyTorch ports (solo-learn, lightly) do.
    """
    n, _, h, w = x.shape
    r = kernel_size // 2
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets[None, :] / np.asarray(sigma, dtype=np.float64)[:, None]) ** 2)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)  # n x k
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (r, r)), mode="reflect")
    rows = np.zeros_like(x)
    for i in range(kernel_size):
        rows += weights[:, i].reshape(n, 1, 1, 1) * padded[..., i:i + w]
    padded = np.pad(rows, ((0, 0), (0, 0), (r, r), (0, 0)), mode="reflect")
    out = np.zeros_like(x)
    for i in range(kernel_size):
        out += weights[:, i].reshape(n, 1, 1, 1) * padded[:, :, i:i + h]
    return out


def random_solarize(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """``RandomSolarize(0.5, p)``: each sample solarised with probability p (BYOL, Barlow Twins)."""
    if p <= 0:
        return x
    chosen = (rng.random(x.shape[0]) < p) if p < 1 else np.ones(x.shape[0], dtype=bool)
    return np.where(chosen.reshape(-1, 1, 1, 1), solarize(x), x)


def solarize(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """torchvision's ``solarize(x, threshold)``: x -> 1 - x where x >= threshold (BYOL's
    ``tf.where(image < 0.5, image, 1 - image)`` on [0, 1] images)."""
    return np.where(x >= threshold, 1 - x, x)


# --------------------------------------------------------------------------- shorthand


def colour(x: np.ndarray, rng: np.random.Generator, strength: float | Sequence[float], p_gray: float,
           p_jitter: float = 1.0) -> np.ndarray:
    """``RandomApply([ColorJitter(...)], p_jitter)`` then ``RandomGrayscale(p_gray)`` on B x 3 x H x W.

    ``strength`` is a view's ``jitter`` field (a number s for ColorJitter(s, s, s), or the four
    strengths b, c, s, h). The jigsaw view applies this to every patch independently.
    """
    x = random_color_jitter(x, rng, jitter_strengths(strength), p_jitter)
    return random_grayscale(x, rng, p_gray)
