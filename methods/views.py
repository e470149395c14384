"""Views: what the data pipeline produces per image, declared as data.

(Skeleton: the batched implementation `apply_views` is being written.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: CIFAR-10 channel statistics used to normalise every view.
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


@dataclass(frozen=True)
class ImageView:
    """PIRL's v_I: random resized crop, horizontal flip, colour jitter, grayscale."""

    name: str = "image"
    size: int = 32
    scale: tuple[float, float] = (0.2, 1.0)
    flip: bool = True
    jitter: float = 0.4
    grayscale: float = 0.2


@dataclass(frozen=True)
class JigsawView:
    """PIRL's v_I^t: a grid of patches with jitter inside each cell, reordered by a permutation."""

    name: str = "jigsaw"
    num_permutations: int = math.factorial(9)
    permutation_seed: int = 0
    grid: int = 3
    crop_size: int = 30
    patch_size: int = 8
    jitter: float = 0.4
    grayscale: float = 0.2
