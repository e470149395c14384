"""The view protocol and ``apply_views``, the one entry point the data pipeline calls.

A *view* is what the data pipeline produces per image for a method: a random
crop, a grid of jigsaw patches, a rotated copy, ... Each view type is one
frozen dataclass implementing ``View``: the output keys it produces, an empty
batch of them, and ``apply`` on a whole batch. A method declares its views as
data (instances of these classes, known from its configuration alone) and the
platform runs them inside Ray Data on uint8 batches. A new view type is one
new class; nothing else changes.

All randomness comes from the ``numpy.random.Generator`` passed in, so the same
generator state gives bit-identical output. Normalisation statistics belong to
the dataset (``Normalization``), never to a view.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of a dataset's RGB pixels in [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise ValueError(f"Normalization needs 3 means and 3 positive stds, got {self.mean}, {self.std}")

    @classmethod
    def of(cls, images: np.ndarray, max_images: int | None = None, chunk_pixels: int = 1 << 19) -> "Normalization":
        """The exact per-channel statistics of uint8 images N x H x W x 3 in [0, 1] units (std
        floored at 1e-3), over every image or at most ``max_images`` taken evenly over the array
        (datasets are often sorted by class, so the first images are no fair sample).

        Each channel's 256 values are counted ~``chunk_pixels`` pixels at a time, so memory stays
        bounded whatever the image size; 0.4-0.9 s for CIFAR-10's 50,000 images on 2 cores.
        """
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
            raise ValueError(f"Normalization.of needs uint8 images N x H x W x 3 with N >= 1, got {images.dtype} "
                             f"{images.shape}")
        if max_images is not None:
            images = images[:: max(1, -(-len(images) // max_images))]
        chunk = max(1, chunk_pixels // max(1, images.shape[1] * images.shape[2]))
        counts = np.zeros(3 * 256, dtype=np.int64)
        offset = np.array([0, 256, 512], dtype=np.intp)
        for start in range(0, len(images), chunk):
            pixels = images[start:start + chunk].reshape(-1, 3)
            counts += np.bincount((pixels + offset).ravel(), minlength=3 * 256)
        counts = counts.reshape(3, 256).astype(np.float64)
        values = np.arange(256, dtype=np.float64) / 255.0
        total = counts.sum(axis=1)
        mean = counts @ values / total
        var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total
        return cls(tuple(float(m) for m in mean), tuple(float(max(math.sqrt(v), 1e-3)) for v in var))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std per channel (channel axis -3), as a contiguous float32 array."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


    def for_transfer(self, dtype: str) -> "Normalization":
        """The statistics the views apply before their trip to the trainer: these (``float32``:
        normalised floats), or ``Uint8Pixels`` (``uint8``: pixels, normalised on the trainer)."""
        if dtype not in ("float32", "uint8"):
            raise ValueError(f"view transfer dtype {dtype!r} must be 'float32' or 'uint8'")
        return self if dtype == "float32" else Uint8Pixels(self.mean, self.std)


@dataclass(frozen=True)
class Uint8Pixels(Normalization):
    """Views sent as uint8 pixels, a quarter of float32's bytes through the object store and the
    network, and normalised on the training device (``normalise``). Every view that ends with
    ``stats.apply`` (image crops, jigsaw patches) then yields uint8; the rounding to 1/255 is
    what an 8-bit image pipeline (torchvision on uint8 tensors) does anyway."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rint(np.clip(x, 0.0, 1.0) * 255.0), dtype=np.uint8)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (channel axis -3) → float32 (x / 255 - mean) / std, on their device."""
        mean, std = _per_channel(self.mean, pixels.device), _per_channel(self.std, pixels.device)
        return (pixels.float() / 255.0 - mean) / std


@functools.lru_cache(maxsize=16)
def _per_channel(values: tuple[float, float, float], device: torch.device) -> torch.Tensor:
    """A 3 x 1 x 1 float32 tensor on ``device``, made once (a copy to a GPU every step would wait for it)."""
    return torch.tensor(values, dtype=torch.float32, device=device).reshape(3, 1, 1)


#: CIFAR-10's training-set statistics (for tests and benchmarks on CIFAR-10 only).
CIFAR10 = Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@runtime_checkable
class View(Protocol):
    """What every view type implements. ``name`` prefixes its output keys."""

    name: str

    def keys(self) -> tuple[str, ...]:
        """The output keys, in order (e.g. ``("jigsaw", "jigsaw_perm")``)."""
        ...

    def empty(self, n: int) -> dict[str, np.ndarray]:
        """Arrays of the right dtype and trailing shape with ``n`` rows (used for n = 0)."""
        ...

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        """The view of every image of ``images`` (float32 N x 3 x H x W in [0, 1], N >= 1).

        ``train=True`` draws the random augmentation; ``train=False`` is the deterministic
        evaluation form (the whole image, centred patches, ...).
        """
        ...


def apply_views(views: Sequence[View], images: np.ndarray, rng: np.random.Generator,
                train: bool = True, *, stats: Normalization) -> dict[str, np.ndarray]:
    """Produce every view in ``views`` for a batch of uint8 images N x H x W x 3 (RGB).

    Views are produced in the order given, each drawing its randomness from ``rng`` in turn, so
    the same generator state gives identical output. Two views may not produce the same key.
    """
    images = _check_images(images)
    names: set[str] = set()
    for view in views:
        if not isinstance(view, View):
            raise TypeError(f"views must implement the View protocol (keys, empty, apply), got {type(view).__name__}")
        keys = view.keys()
        if names.intersection(keys):
            raise ValueError(f"two views produce the output key {sorted(names.intersection(keys))[0]!r}; "
                             "give each view a distinct name")
        names.update(keys)
    if len(images) == 0:
        return {k: v for view in views for k, v in view.empty(0).items()}
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
            out.update(view.apply(source, rng, train=train, stats=stats))
    return out


# --------------------------------------------------------------------------- validation


def _check_images(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        desc = (f"{type(images).__name__} {getattr(images, 'dtype', '')} shape {getattr(images, 'shape', '')}")
        raise ValueError(f"images must be a uint8 numpy array N x H x W x 3 (RGB), got {desc}")
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"images must have positive height and width, got shape {images.shape}")
    return images


def check(ok: bool, field: str, value: object, allowed: str) -> None:
    """Raise ValueError naming a view field, its value and what is allowed."""
    if not ok:
        raise ValueError(f"{field} = {value!r} is invalid: must be {allowed}")


def is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and math.isfinite(v)


def is_range(v: object) -> bool:
    return isinstance(v, tuple | list) and len(v) == 2 and all(is_number(e) for e in v)


@dataclass(frozen=True)
class Augmented:
    """A view that draws its training-time augmentation in evaluation mode too.

    Invariance is the distance between the representations of an image and of its transformed
    version t(x) (PIRL sec. 5.2): a method whose transformation *is* its training augmentation
    (SimCLR and the Siamese family) declares ``[ImageView(name="clean"), Augmented(ImageView(...))]``.
    """

    view: View

    @property
    def name(self) -> str:
        return self.view.name

    def keys(self) -> tuple[str, ...]:
        return self.view.keys()

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return self.view.empty(n)

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        return self.view.apply(images, rng, train=True, stats=stats)
