"""A decoded split (``Split``), its identity and its class-balanced subsets.

A ``Split`` holds uint8 images N x H x W x 3, int64 labels (None for data without labels: an
ImageFolder whose split folders hold the images directly, a Parquet file without a ``label``
column, or labelled data read blind by a study that chooses without labels, ``without_labels``) and
indices, class names and the per-channel ``normalization`` statistics of its pixels. ``Split.identity()`` is a small JSON-able
fingerprint of a loaded split (sizes, classes, image shape and a SHA-256 of its pixels, labels and
class names) for a result to record exactly which data it was computed on.

Normalisation statistics
------------------------
``Split.normalization`` (a ``sslab.methods.views.Normalization``) is the exact per-channel mean
and standard deviation, in [0, 1] units, of all pixels of the split as decoded (after resizing).
It is computed once at decode time and stored in the cache metadata, so a cached load does not
recompute it (over CIFAR-10's 50,000 training images it takes 0.4-0.9 s on 2 cores, too much
to add to every cached load). Each split carries its own statistics; normalise *every* split
of a dataset with the **train** split's (``sslab.data.catalog.train_normalization(dataset)``, or
``load_split(dataset, "train").normalization``), never the test split's own. A subset keeps the
statistics of the split it was drawn from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sslab.methods.views import Normalization  # imported where used: it pulls in torch


@dataclass
class Split:
    """One split of a dataset, decoded: what ``load_split`` returns.

    ``normalization`` is the per-channel mean/std of this split's pixels (see the module
    docstring); when not given it is computed from ``images`` (left None only for an empty
    split). Normalise every split with the *train* split's statistics.
    """

    images: np.ndarray  # uint8 N x H x W x 3 (RGB)
    labels: np.ndarray | None  # int64 N, indices into ``classes``; None: the split has no labels (no classes)
    idx: np.ndarray  # int64 N, unique, 0..N-1 within the (sub)set
    classes: list[str]
    skipped: int = 0  # corrupt/unreadable images skipped while decoding (the first decode's, also when cached)
    source: str = ""  # what it was read from (a path, or the cache file)
    normalization: Normalization | None = None  # this split's pixel statistics, in [0, 1] units
    #: the images' shorter side (min(H, W), px) as stored in the source, before any resizing: the
    #: median over the split's images and the smallest. None when unknown (a Split built by hand).
    #: A subset keeps the values of the split it was drawn from.
    source_side: int | None = None
    source_side_min: int | None = None

    def __post_init__(self) -> None:
        if self.normalization is None and len(self.images) > 0:
            from sslab.methods.views import Normalization

            self.normalization = Normalization.of(self.images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        """Whether the split has labels (``labels`` is None for data without them)."""
        return self.labels is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def without_labels(self) -> "Split":
        """The same images without labels or class names, made without reading either: what a study
        that chooses without labels trains and measures on."""
        return Split(images=self.images, labels=None, idx=self.idx, classes=[], skipped=self.skipped,
                     source=self.source, normalization=self.normalization, source_side=self.source_side,
                     source_side_min=self.source_side_min)

    def identity(self) -> dict[str, Any]:
        """A small JSON-able fingerprint of exactly these images, labels and class names, in this order:

        ``{"num_images": N, "num_classes": C, "classes": [...] (the names when C <= 20, else None),
        "classes_sha1": "<40 hex>" (sha1 of the names joined by newlines), "image_shape": [H, W],
        "content_sha256": "<16 hex>"}``: always these keys, so records of any dataset have the same fields.

        ``content_sha256`` is the first 16 hex digits of a SHA-256 over the shape, the uint8 pixels,
        the labels (little-endian int64) and the class names; it changes when any pixel, label or
        class name (or their order) changes. Computed on each call (the split may be changed in
        place): ~0.1 s for CIFAR-10's 50,000 training images. A split without labels hashes its
        pixels alone, and has 0 classes.
        """
        images = np.ascontiguousarray(self.images, dtype=np.uint8)
        labels = np.ascontiguousarray(self.labels, dtype="<i8") if self.labelled else None
        if images.ndim != 4 or (labels is not None and len(images) != len(labels)):
            raise ValueError(f"inconsistent Split: images {images.shape}, labels "
                             f"{labels.shape if labels is not None else None}")
        names = json.dumps([str(c) for c in self.classes], ensure_ascii=False).encode()
        shape = labels.shape if labels is not None else "unlabelled"
        digest = hashlib.sha256(f"sslab-split|{images.shape}|{shape}|".encode())
        digest.update(images.reshape(-1))
        if labels is not None:
            digest.update(labels)
        digest.update(names)
        out: dict[str, Any] = {"num_images": int(len(images)), "num_classes": len(self.classes)}
        out["classes"] = [str(c) for c in self.classes] if len(self.classes) <= 20 else None
        out["classes_sha1"] = hashlib.sha1("\n".join(map(str, self.classes)).encode()).hexdigest()
        out["image_shape"] = [int(images.shape[1]), int(images.shape[2])]
        out["content_sha256"] = digest.hexdigest()[:16]
        return out


def _check_subset_arg(subset: int | None) -> None:
    if subset is None:
        return
    if isinstance(subset, bool) or not isinstance(subset, int | np.integer) or subset < 1:
        raise ValueError(f"subset = {subset!r} is invalid: must be None (the whole split) or an integer >= 1")


def _subset_quotas(counts: np.ndarray, k: int) -> np.ndarray:
    """Images per class: k // C each, the remainder one each to the first classes; classes with
    too few images keep all they have and their shortfall is spread over the others."""
    quota = np.zeros_like(counts)
    remaining = k
    while remaining > 0:
        room = counts - quota
        active = np.flatnonzero(room > 0)
        base, extra = divmod(remaining, len(active))
        add = np.full(len(active), base)
        add[:extra] += 1
        add = np.minimum(add, room[active])
        quota[active] += add
        remaining -= int(add.sum())
    return quota


def take_subset(full: Split, k: int, seed: int, what: str = "the split") -> Split:
    """A class-balanced subset of ``k`` images drawn with ``seed`` (what ``load_split(subset=k)`` returns);
    of a split without labels, ``k`` images drawn uniformly with ``seed``."""
    _check_subset_arg(k)
    n = len(full)
    if k > n:
        raise ValueError(f"subset = {k} is larger than {what} ({n} images); use subset <= {n} or None for all")
    if not full.labelled:
        order = np.random.default_rng(seed).permutation(n)[:k]
        return Split(images=full.images[order], labels=None, idx=np.arange(k, dtype=np.int64), classes=[],
                     skipped=full.skipped, source=full.source, normalization=full.normalization,
                     source_side=full.source_side, source_side_min=full.source_side_min)
    counts = np.bincount(full.labels, minlength=len(full.classes))
    quota = _subset_quotas(counts, int(k))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(full.labels == c))[:q] for c, q in enumerate(quota) if q > 0]
    order = rng.permutation(np.concatenate(chosen))
    return Split(images=full.images[order], labels=full.labels[order], idx=np.arange(k, dtype=np.int64),
                 classes=list(full.classes), skipped=full.skipped, source=full.source,
                 normalization=full.normalization,  # the whole split's statistics, not the subset's
                 source_side=full.source_side, source_side_min=full.source_side_min)
