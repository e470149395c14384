"""A trial's label-free metrics: ``label_free.py``'s measures of its representation and of its
embedding, computed without reading a label.

What each is computed on:

- **the representation**: the backbone's pooled res5 features (what kNN reads) of the evaluation
  images: the first ``label_free_images`` test images of the training data, after every epoch and
  at the end alike (so the per-epoch values that ASHA compares and the final one that TPE is told
  are of the same images). RankMe, α-ReQ (and |α - 1|) and uniformity read these N x D features.
- **the views**: LiDAR and alignment compare augmented views of the same image. They read the
  first ``lidar_instances`` test images, each drawn ``lidar_views`` times through the method's own
  training augmentation: its training views that are whole augmented images (``ImageView``: a
  two-view method's two crops, a memory-bank method's image crop, a classifier's crop), each draw
  giving one view per key. Why these: LiDAR's classes are instances and its samples are the
  method's own augmentations (Thilak et al. 2024, sec. 3), the views whose differences the loss
  teaches the representation to ignore, and alignment is the distance the loss makes small between
  such positives (Wang & Isola 2020, sec. 4); and a whole image is what the backbone reads (a
  patch or a turned copy paired with a label to predict is not). A method without such a view
  (the pretext tasks: patches, tiles, quarter turns, corrupted or grey images) and the random-init
  baseline get sslab's standard crop instead (``ImageView()``: random resized crop, flip, colour
  distortion, grayscale), as docs/label-free.md says. The views are drawn once per trial from a
  generator seeded by the trial's seed and kept in the trial's ``cache``, so every epoch measures
  the same views of the same images and costs forward passes only. Alignment is the mean over
  those images of their first two views.
- **the embedding**: ``Method.embedding`` of the same representations (the projection the loss
  compares), for a method that has one: the same measures as ``embedding/<measure>``.

Nothing here reads a label: the functions take images and features only. torch and numpy, no Ray.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from sslab.evaluation import label_free
from sslab.methods.base import Method
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.views import ImageView, Normalization, View, apply_views
from sslab.results import metrics as names

#: the key under which a trial's ``cache`` keeps its drawn views
VIEWS = "label_free_views"


def measure_views(method: Method | None, image_size: int) -> list[View]:
    """The views LiDAR and alignment draw: ``method``'s training views that are whole augmented
    images (``ImageView``), or sslab's standard crop (``ImageView()``) for a method without one and
    for the random-init baseline (``method`` None)."""
    own = [] if method is None else [v for v in type(method).views(method.config, image_size)
                                     if isinstance(v, ImageView)]
    return own or [ImageView(size=image_size)]


def draw_views(views: list[View], images: np.ndarray, *, stats: Normalization, count: int,
               seed: int) -> torch.Tensor:
    """``count`` augmented views of each of the uint8 N x H x W x 3 ``images``: N x count x 3 x S x S,
    float32, normalised with ``stats``; each draw of ``views`` gives one view per key, drawn from a
    generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    drawn: list[np.ndarray] = []
    while len(drawn) < count:
        arrays = apply_views(views, images, rng, train=True, stats=stats)
        drawn += [arrays[key] for view in views for key in view.keys()]
    return torch.from_numpy(np.stack(drawn[:count], axis=1))


def trial_views(arrays: dict[str, Any], instances: int, count: int, *, method: Method | None, seed: int,
                cache: dict[str, Any] | None = None) -> torch.Tensor:
    """The fixed views of a trial (or of a baseline: ``method`` None): ``count`` views of each of the
    first ``instances`` test images, drawn once and kept in ``cache`` when one is given."""
    if cache is not None and VIEWS in cache:
        return cache[VIEWS]
    images = arrays["test_images"][:instances]
    views = draw_views(measure_views(method, images.shape[1]), images, stats=arrays["stats"], count=count, seed=seed)
    if cache is not None:
        cache[VIEWS] = views
    return views


@torch.no_grad()
def _representations(backbone: Backbone, images: torch.Tensor, device, batch_size: int = 128) -> torch.Tensor:
    """Pooled res5 features (float32, on ``device``) of normalised images B x 3 x S x S, ``batch_size``
    at a time (128: on 2 CPU cores about twice as fast a forward pass as 500 at a time, whose
    activations leave the caches)."""
    return torch.cat([backbone(images[start:start + batch_size].to(device)).float()
                      for start in range(0, len(images), batch_size)])


def _measure(function: Callable[..., float], *args) -> float:
    """A measure, or NaN where it is undefined for these features (too few samples or dimensions,
    non-finite values): one NaN column, not a failed trial."""
    try:
        return function(*args)
    except ValueError:
        return math.nan


def measures(features: torch.Tensor, by_instance: torch.Tensor) -> dict[str, float]:
    """Every label-free measure (``metrics.LABEL_FREE``'s names) of N x D ``features`` and of the
    n x q x D representations ``by_instance`` of q views of n images (LiDAR; alignment of views 0 and 1)."""
    alpha = _measure(label_free.alpha_req, features)
    return {
        "rankme": _measure(label_free.rankme, features),
        "alpha_req": alpha,
        "alpha_req_gap": abs(alpha - 1.0),  # label_free.alpha_req_gap, without fitting α twice
        "uniformity": _measure(label_free.uniformity, features),
        "lidar": _measure(label_free.lidar, by_instance),
        "alignment": _measure(label_free.alignment, by_instance[:, 0], by_instance[:, 1]),
    }


@torch.no_grad()
def label_free_metrics(backbone: Backbone, features: torch.Tensor, views: torch.Tensor, *,
                       method: Method | None = None, device: torch.device | str = "cpu") -> dict[str, float]:
    """The label-free measures of the representation (``features``: pooled res5 of the evaluation
    images, N x D; ``views``: n x q normalised augmented views of n images, ``trial_views``) and,
    when ``method`` has an embedding, of its embedding (``embedding/<measure>``), in eval mode."""
    model = method if method is not None else backbone
    was_training = model.training
    model.eval()
    try:
        n, q = views.shape[:2]
        by_instance = _representations(backbone, views.flatten(0, 1), device).reshape(n, q, -1)
        features = features.to(device).float()
        out = measures(features, by_instance)
        embedded = method.embedding(features) if method is not None else None
        if embedded is not None:
            embedded_views = method.embedding(by_instance.flatten(0, 1)).float().reshape(n, q, -1)
            out.update({names.embedding(k): v for k, v in measures(embedded.float(), embedded_views).items()})
    finally:
        model.train(was_training)
    return out
