"""Pictures of what a representation learned, computed where the features are: for a fixed set of
test images, their nearest training images, and a 2-D map of the test features.

Both run in the final evaluation of a trained trial (``evaluate.evaluate``, on the trial's device,
from the pooled res5 features the kNN already computed) and of every random-init baseline (the
study's driver), and travel to the results store beside the invariance samples
(``results/pictures.py`` keeps them; the dashboard draws them from the store alone).

- Queries (``query_indices``): ``QUERIES`` test images chosen from the test labels alone, round
  robin over the classes, each class's images in a fixed random order (seed 0). Every trial of a
  setting evaluates the same test subset (``data.split.take_subset`` draws it with seed 0), so every
  trial and seed shows the same queries, and the random-init backbone too.
- Neighbours (``nearest_training_images``): cosine similarity of the pooled res5 features, the
  similarity the kNN votes with (``evaluate.knn_top1``, Wu et al. 2018); the top ``NEIGHBOURS``
  training images of each query, as indices into the evaluation's training subset (the same
  subset for every trial of a setting).
- Map (``embedding_map``): t-SNE (van der Maaten & Hinton 2008; scikit-learn's Barnes-Hut) of the
  L2-normalised features of ``MAP_POINTS`` fixed test images (``map_indices``), after PCA to at most
  50 dimensions, initialised by PCA and seeded with 0, not with the trial's seed.
- Thumbnails (``thumbnails``): PNG images of at most ``THUMBNAIL_SIDE`` px, made once per dataset by
  the study's driver (not per trial), of the queries and the training subset.

numpy, torch and scikit-learn; no Ray. The cost per trial is measured in ``benchmarks/pictures_cost.py``
(docs/dashboard.md#neighbours-and-embedding-map).
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: test images whose neighbours every trial records
QUERIES = 16
#: nearest training images recorded per query
NEIGHBOURS = 8
#: test images placed on the 2-D map
MAP_POINTS = 1000
#: t-SNE's iterations (its first 250 exaggerate the clusters); one thread: on a CPU the trials share,
#: t-SNE's two OpenMP threads waiting on each other took 5 to 10 times as long (docs/dashboard.md)
MAP_ITERATIONS = 500
#: the longest side of a stored thumbnail, px
THUMBNAIL_SIDE = 32
#: the result keys of the final evaluation's pictures (lists of records, like ``INVARIANCE_SAMPLES``)
NEIGHBOUR_SAMPLES = "neighbour_samples"
EMBEDDING_SAMPLES = "embedding_samples"
#: and the seconds they took, beyond the features the kNN computes anyway
PICTURES_SECONDS = "pictures_s"
SAMPLES = (NEIGHBOUR_SAMPLES, EMBEDDING_SAMPLES, PICTURES_SECONDS)


def query_indices(test_labels: np.ndarray, count: int = QUERIES) -> np.ndarray:
    """``count`` test images (indices into the test split as loaded), from the labels alone: round
    robin over the classes in label order, each class's images in a random order drawn with seed 0."""
    labels = np.asarray(test_labels)
    rng = np.random.default_rng(0)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen: list[int] = []
    for rank in range(max((len(p) for p in per_class), default=0)):
        chosen += [int(p[rank]) for p in per_class if rank < len(p)]
        if len(chosen) >= count:
            break
    return np.asarray(chosen[:count], dtype=np.int64)


def map_indices(num_test: int, count: int = MAP_POINTS) -> np.ndarray:
    """The test images on the map: ``count`` of them (all when fewer), drawn with seed 0, sorted."""
    if num_test <= count:
        return np.arange(num_test, dtype=np.int64)
    return np.sort(np.random.default_rng(0).choice(num_test, count, replace=False)).astype(np.int64)


def cosine_neighbours(bank: torch.Tensor, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``bank`` (L2-normalised) most cosine-similar to each row of ``query``:
    (similarities, indices), each queries × k, most similar first. The kNN evaluation votes over
    exactly these (``evaluate.knn_top1``), so the pictures show the neighbours it counted."""
    return (F.normalize(query.float(), dim=1) @ bank.T).topk(min(k, len(bank)), dim=1)


@torch.no_grad()
def nearest_training_images(train_features: torch.Tensor, query_features: torch.Tensor, *, k: int = NEIGHBOURS,
                            device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` training images most cosine-similar to each query: (indices, similarities), each
    queries × k, most similar first."""
    bank = F.normalize(train_features.to(device).float(), dim=1)
    sims, neighbours = cosine_neighbours(bank, query_features.to(device), k)
    return neighbours.cpu().numpy().astype(np.int64), sims.cpu().numpy().astype(np.float32)


def embedding_map(features: torch.Tensor | np.ndarray, *, seed: int = 0) -> np.ndarray:
    """2-D t-SNE coordinates (N × 2, float32) of L2-normalised features, after PCA to at most 50
    dimensions; perplexity 30, or less for fewer than 91 points; ``MAP_ITERATIONS``, one thread."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = F.normalize(torch.as_tensor(features).float(), dim=1).cpu().numpy().astype(np.float64)
    n = len(x)
    if n < 4:  # too few points for t-SNE: their first two principal directions (or zeros)
        out = np.zeros((n, 2))
        if n > 1:
            reduced = PCA(n_components=min(2, n, x.shape[1]), random_state=seed).fit_transform(x)
            out[:, : reduced.shape[1]] = reduced
        return out.astype(np.float32)
    if x.shape[1] > min(50, n):
        x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto",
                max_iter=MAP_ITERATIONS, random_state=seed)
    with threadpool_limits(limits=1):
        return tsne.fit_transform(x).astype(np.float32)


def pictures(train_features: torch.Tensor, test_features: torch.Tensor, train_labels: np.ndarray,
             test_labels: np.ndarray, *, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The neighbours of the queries and the map, as records (``NEIGHBOUR_SAMPLES``: query, query_label,
    rank, neighbour, label, similarity; ``EMBEDDING_SAMPLES``: index, label, x, y), from the pooled
    res5 features of the evaluation's training and test images, and the seconds both took
    (``PICTURES_SECONDS``)."""
    start = time.perf_counter()
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    queries = query_indices(test_labels)
    found, sims = nearest_training_images(train_features, test_features[torch.as_tensor(queries)], device=device)
    neighbours = [{"query": int(q), "query_label": int(test_labels[q]), "rank": rank, "neighbour": int(j),
                   "label": int(train_labels[j]), "similarity": float(s)}
                  for q, row, row_sims in zip(queries, found, sims) for rank, (j, s) in enumerate(zip(row, row_sims))]
    shown = map_indices(len(test_labels))
    xy = embedding_map(test_features[torch.as_tensor(shown)])
    embedding = [{"index": int(i), "label": int(test_labels[i]), "x": float(x), "y": float(y)}
                 for i, (x, y) in zip(shown, xy)]
    return {NEIGHBOUR_SAMPLES: neighbours, EMBEDDING_SAMPLES: embedding, PICTURES_SECONDS: time.perf_counter() - start}


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes:
    """One uint8 HWC image as PNG bytes, shrunk (aspect kept) so its longer side is at most ``side``."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if max(picture.size) > side:
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    return out.getvalue()


def thumbnails(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
               test_labels: np.ndarray, side: int = THUMBNAIL_SIDE) -> list[dict[str, Any]]:
    """The thumbnails the pictures show, as records (split, index, label, png): every training
    image of the evaluation (any may be a neighbour) and the test queries."""
    queries = query_indices(test_labels)
    return ([{"split": "train", "index": i, "label": int(label), "png": thumbnail(image, side)}
             for i, (image, label) in enumerate(zip(train_images, train_labels))]
            + [{"split": "test", "index": int(q), "label": int(test_labels[q]), "png": thumbnail(test_images[q], side)}
               for q in queries])
