"""Evaluation of frozen representations: kNN, linear probes per tap, invariance.

All functions take a backbone (and optionally its method) in eval mode and
plain arrays, so the same code evaluates a trained trial inside a Ray Train
worker and the random-init baseline in the study driver.

- kNN top-1 (Wu et al. 2018, sec. 3.4): cosine similarity of L2-normalised
  pooled res5 features, the k nearest training images vote with weight
  exp(s/τ).
- Linear probes (Misra & van der Maaten 2019, sec. 5.1; Goyal et al. 2019): one linear classifier per
  tap (conv1, res2..res5) on globally average-pooled, standardised, frozen
  features.
- Invariance (Misra & van der Maaten 2019, sec. 5.2, Fig. 3): for test images, the l2 distance
  between the method's two normalised representations of an image and of its transformed
  version (``Method.invariance_pair``); the samples are kept for histograms.
- The label-free measures (RankMe, α-ReQ, LiDAR, alignment, uniformity: ``label_free_metrics.py``),
  of the representation and of the method's embedding, after every epoch and at the end.

kNN and the probes read labels: those of the training data's own splits, or of a labelled
evaluation dataset (``labelled_arrays``), and none at all where there are none to read (data
without labels, or a study that chooses without them). Invariance and the label-free measures
never read one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sslab.evaluation import pictures as drawn
from sslab.evaluation.label_free_metrics import label_free_metrics, trial_views
from sslab.methods.base import Method
from sslab.methods.blocks.backbone import TAPS, Backbone
from sslab.methods.views import ImageView, Normalization, apply_views
from sslab.results import metrics as names
from sslab.plan.profiles import Profile


@torch.no_grad()
def pooled_features(
    backbone: Backbone,
    images: np.ndarray,
    taps: Sequence[str] = TAPS,
    *,
    stats: Normalization,
    batch_size: int = 500,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Globally average-pooled features (N × C_tap, float32, CPU) of uint8 HWC images at each tap,
    normalised with the training set's ``stats``."""
    was_training = backbone.training
    backbone.eval()
    chunks: dict[str, list[torch.Tensor]] = {tap: [] for tap in taps}
    for batch in evaluation_batches(images, stats, batch_size=batch_size, device=device):
        maps = backbone.features(batch["image"], taps=taps)
        for tap in taps:
            chunks[tap].append(maps[tap].float().mean(dim=(2, 3)).cpu())
    backbone.train(was_training)
    return {tap: torch.cat(parts) for tap, parts in chunks.items()}


def evaluation_batches(images: np.ndarray, stats: Normalization, *, batch_size: int = 500,
                       device: torch.device | str = "cpu", channels_last: bool = False):
    """uint8 HWC images as batches {``image``: the evaluation view (resized, normalised), ``idx``:
    the row numbers}, produced one batch at a time (what ``pooled_features`` reads, and what
    ``Method.before_training`` gets of the training split, whose row i is the image of idx i)."""
    view = ImageView(size=images.shape[1])
    rng = np.random.default_rng(0)  # eval views draw nothing, but the signature wants a generator
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for start in range(0, len(images), batch_size):
        chunk = apply_views([view], images[start : start + batch_size], rng, train=False, stats=stats)[view.name]
        yield {"image": torch.from_numpy(chunk).to(device, memory_format=memory_format),
               "idx": torch.arange(start, start + len(chunk), device=device)}


@torch.no_grad()
def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.07,
    chunk: int = 1000,
    device: torch.device | str = "cpu",
) -> float:
    """Weighted kNN top-1 accuracy (Wu et al. 2018): votes exp(cos/τ) from the k nearest, computed
    on ``device`` (the trial's)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    bank = F.normalize(train_features.to(device).float(), dim=1)
    train_labels, test_labels = train_labels.to(device), test_labels.to(device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, len(test_features), chunk):
        sims, neighbours = drawn.cosine_neighbours(bank, test_features[start : start + chunk].to(device), k)
        votes = torch.zeros(len(neighbours), num_classes, device=device)
        votes.scatter_add_(1, train_labels[neighbours], (sims / temperature).exp())
        correct += (votes.argmax(1) == test_labels[start : start + chunk]).sum()
    return int(correct) / len(test_features)  # one read, at the end


def linear_probe_top1(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.02,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> float:
    """Top-1 of a linear classifier trained on frozen, standardised features (Adam, cosine LR), on
    ``device`` (the trial's); the batch order is drawn on the CPU, so it is the same on any device."""
    generator = torch.Generator().manual_seed(seed)
    train_x, train_y, test_x, test_y = (t.to(device) for t in (train_x, train_y, test_x, test_y))
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    probe = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        probe.reset_parameters()
    probe.to(device)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(train_x) // batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(train_x), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size].to(device)
            loss = F.cross_entropy(probe(train_x[rows]), train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        return float((probe(test_x).argmax(1) == test_y).float().mean())


@torch.no_grad()
def invariance_distances(
    method: Method,
    images: np.ndarray,
    *,
    stats: Normalization,
    seed: int = 0,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
) -> np.ndarray | None:
    """l2 distance between the method's two normalised representations of each image, e.g.
    f(v_I) and g(v_I^t) (Misra & van der Maaten 2019, Fig. 3); None for a method without an invariance pair."""
    views = method.invariance_views(method.config, images.shape[1])
    if views is None:
        return None
    was_training = method.training
    method.eval()
    rng = np.random.default_rng(seed)
    distances = []
    for start in range(0, len(images), batch_size):
        arrays = apply_views(views, images[start : start + batch_size], rng, train=False, stats=stats)
        batch = {key: torch.from_numpy(value).to(device) for key, value in arrays.items()}
        f, g = method.invariance_pair(batch)
        distances.append((f.float() - g.float()).norm(dim=1).cpu())
    method.train(was_training)
    return torch.cat(distances).numpy()


@dataclass
class Evaluation:
    """Scalar metrics (``knn_top1``, ``probe_<tap>_top1``, ``invariance_l2_mean``) and samples."""

    metrics: dict[str, float]
    invariance: np.ndarray | None = field(default=None, repr=False)
    #: the nearest training images of the fixed queries, the 2-D map and their seconds (``pictures.SAMPLES``)
    pictures: dict[str, Any] | None = field(default=None, repr=False)
    #: the test images' pooled res5 features kNN read (the label-free measures read them too)
    features: torch.Tensor | None = field(default=None, repr=False)


def evaluate(
    backbone: Backbone,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    stats: Normalization,
    method: Method | None = None,
    knn_k: int = 200,
    knn_temperature: float = 0.07,
    probe_epochs: int = 100,
    probe_taps: Sequence[str] = TAPS,
    invariance_samples: int = 0,
    pictures: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Evaluation:
    """kNN on pooled res5, a linear probe per tap, given a method its invariance and, with ``pictures``,
    the queries' neighbours and the map from the same res5 features (``pictures.py``)."""
    taps = tuple(dict.fromkeys([*probe_taps, "res5"]))
    train_feats = pooled_features(backbone, train_images, taps, stats=stats, device=device)
    test_feats = pooled_features(backbone, test_images, taps, stats=stats, device=device)
    y_train, y_test = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    metrics = {
        names.KNN: knn_top1(
            train_feats["res5"], y_train, test_feats["res5"], y_test, k=knn_k, temperature=knn_temperature,
            device=device,
        )
    }
    for tap in probe_taps:
        metrics[names.probe(tap)] = linear_probe_top1(
            train_feats[tap], y_train, test_feats[tap], y_test, epochs=probe_epochs, seed=seed, device=device
        )
    invariance = None
    if method is not None and invariance_samples > 0:
        invariance = invariance_distances(method, test_images[:invariance_samples], stats=stats, seed=seed,
                                          device=device)
        if invariance is not None:
            metrics[names.INVARIANCE] = float(invariance.mean())
    shown = (drawn.pictures(train_feats["res5"], test_feats["res5"], train_labels, test_labels, device=device)
             if pictures else None)
    return Evaluation(metrics, invariance, shown, test_feats["res5"])


#: the final evaluation's per-image invariance distances (the store's invariance table), beside its metrics
INVARIANCE_SAMPLES = "invariance_samples"


def evaluate_for_profile(
    backbone: Backbone,
    arrays: dict[str, Any],
    profile: Profile,
    *,
    seed: int,
    method: Method | None = None,
    pictures: bool = False,
    device: torch.device | str = "cpu",
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The profile's evaluation as report metrics: kNN and the probes on the labelled evaluation
    (``labelled_arrays``; none without one) and, with ``pictures``, the entries of
    ``pictures.SAMPLES``; invariance when a method is given; the label-free measures
    (``label_free_metrics.py``).

    ``arrays``: train_images/labels, test_images/labels, ``stats`` (the training split's
    ``Normalization``) and ``eval_dataset`` (``data.train_test.evaluation_arrays``). Invariance and
    the label-free measures read the training data's test images and no label. ``cache``: the
    trial's, which keeps its label-free views. Used for trained trials and for the random-init
    baseline alike, so both are measured the same way.
    """
    labelled = labelled_arrays(arrays)
    own = labelled is arrays  # the training data's own labelled splits: invariance on their test images, as ever
    out: dict[str, Any] = {}
    invariance, features = None, None
    if labelled is not None:
        result = evaluate(
            backbone,
            labelled["train_images"],
            labelled["train_labels"],
            labelled["test_images"],
            labelled["test_labels"],
            stats=arrays["stats"],
            method=method if own else None,
            knn_k=profile.knn_k,
            knn_temperature=profile.knn_temperature,
            probe_epochs=profile.probe_epochs,
            invariance_samples=profile.invariance_samples if own else 0,
            pictures=pictures,
            seed=seed,
            device=device,
        )
        out.update(result.metrics)
        out.update(result.pictures or {})
        invariance, features = result.invariance, result.features if own else None
    if not own and method is not None and profile.invariance_samples > 0:
        invariance = invariance_distances(method, arrays["test_images"][: profile.invariance_samples],
                                          stats=arrays["stats"], seed=seed, device=device)
        if invariance is not None:
            out[names.INVARIANCE] = float(invariance.mean())
    if invariance is not None:
        out[INVARIANCE_SAMPLES] = np.asarray(invariance, dtype=np.float32).tolist()
    start = time.perf_counter()
    n = profile.label_free_images
    features = features[:n] if features is not None else pooled_features(  # kNN's, or (no kNN on these) their own
        backbone, arrays["test_images"][:n], ("res5",), stats=arrays["stats"], device=device)["res5"]
    views = trial_views(arrays, profile.lidar_instances, profile.lidar_views, method=method, seed=seed, cache=cache)
    out.update(label_free_metrics(backbone, features, views, method=method, device=device))
    out[names.LABEL_FREE_SECONDS] = time.perf_counter() - start
    return out


def labelled_arrays(arrays: dict[str, Any]) -> dict[str, Any] | None:
    """The images and labels kNN and the linear probes read (``train_images``, ``train_labels``,
    ``test_images``, ``test_labels``): the labelled evaluation dataset's when the run has one
    (``eval_dataset``), else the training data's own splits; None when neither has labels (data
    without labels, or a study that chooses without them, whose data is read blind)."""
    if arrays.get("eval_dataset") is not None:
        return arrays["eval_dataset"]
    return arrays if arrays.get("train_labels") is not None else None


def monitor(backbone: Backbone, arrays: dict[str, Any], profile: Profile, device, *, method: Method | None = None,
            seed: int = 0, cache: dict[str, Any] | None = None) -> dict[str, float]:
    """The cheap per-epoch evaluation (curves, ASHA): kNN on the first ``monitor_images`` train and
    test images of the labelled evaluation (``labelled_arrays``; none without one), and the
    label-free measures of the training data's first ``label_free_images`` test images (their
    features kNN's where it reads the same images) and of the trial's fixed views (kept in ``cache``)."""
    n, stats = profile.monitor_images, arrays["stats"]
    out: dict[str, float] = {}
    labelled = labelled_arrays(arrays)
    test = None
    if labelled is arrays:
        test = pooled_features(backbone, arrays["test_images"][:n], ("res5",), stats=stats, device=device)["res5"]
    if labelled is not None:
        queries = test if labelled is arrays else pooled_features(
            backbone, labelled["test_images"][:n], ("res5",), stats=stats, device=device)["res5"]
        bank = pooled_features(backbone, labelled["train_images"][:n], ("res5",), stats=stats, device=device)["res5"]
        out[names.KNN] = knn_top1(bank, torch.as_tensor(labelled["train_labels"][:n]), queries,
                                  torch.as_tensor(labelled["test_labels"][:n]), k=profile.knn_k,
                                  temperature=profile.knn_temperature, device=device)
    start = time.perf_counter()
    m = profile.label_free_images
    features = test[:m] if test is not None and m <= n else pooled_features(
        backbone, arrays["test_images"][:m], ("res5",), stats=stats, device=device)["res5"]
    views = trial_views(arrays, profile.lidar_instances, profile.lidar_views, method=method, seed=seed, cache=cache)
    out.update(label_free_metrics(backbone, features, views, method=method, device=device))
    out[names.LABEL_FREE_SECONDS] = time.perf_counter() - start
    return out
