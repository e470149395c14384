"""Colour augmentations on float32 batches B x 3 x H x W in [0, 1], vectorised over the batch.

They follow torchvision's ``ColorJitter`` (brightness/contrast/saturation factors uniform in
[1 - s, 1 + s], applied in a random order, clamped to [0, 1] after each) and
``RandomGrayscale`` (ITU-R 601-2 luma).
"""

from __future__ import annotations

import numpy as np

#: Luma weights of ``torchvision.transforms.functional.rgb_to_grayscale`` (ITU-R 601-2).
GRAY = (0.2989, 0.587, 0.114)


def gray(x: np.ndarray) -> np.ndarray:
    """Luma of B x 3 x H x W, as B x 1 x H x W."""
    return GRAY[0] * x[:, 0:1] + GRAY[1] * x[:, 1:2] + GRAY[2] * x[:, 2:3]


def colour(x: np.ndarray, rng: np.random.Generator, strength: float, p_gray: float) -> np.ndarray:
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
            luma = gray(x)
            is_contrast = (op == 1).astype(np.float32).reshape(b, 1, 1, 1)
            is_saturation = (op == 2).astype(np.float32).reshape(b, 1, 1, 1)
            target = is_contrast * luma.mean(axis=(2, 3), keepdims=True) + is_saturation * luma
            x = f * x + (1 - f) * target
            np.clip(x, 0.0, 1.0, out=x)
    if p_gray > 0:
        to_gray = (rng.random(b) < p_gray).reshape(b, 1, 1, 1)
        x = np.where(to_gray, gray(x), x)
    return x
