"""A trial's label-free metrics (evaluation/label_free_metrics.py) and how the evaluation reads labels
(evaluate.py): names and modes, what each measure is computed on, the views, and that the measures
read no label while kNN reads the labelled evaluation's."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from sslab import methods
from sslab.evaluation import label_free
from sslab.evaluation.evaluate import evaluate_for_profile, labelled_arrays, monitor, pooled_features
from sslab.evaluation.label_free_metrics import (VIEWS, draw_views, label_free_metrics, measure_views, measures,
                                                 trial_views)
from sslab.methods.base import DataInfo, Method
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.views import CIFAR10, ImageView
from sslab.plan.profiles import Profile
from sslab.plan.study import Study
from sslab.results import metrics

PROFILE = Profile(name="t", width=4, knn_k=5, probe_epochs=2, invariance_samples=8, monitor_images=24, label_free_images=20,
                  lidar_instances=12, lidar_views=3)
DATA = DataInfo(num_samples=40, num_classes=2, image_size=32)


def _method(name: str, seed: int = 0) -> Method:
    torch.manual_seed(seed)
    cls = methods.get(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. PIRL capping N at the tiny bank's size
        return cls.build(cls.Config(), Backbone("resnet10", width=4), DATA)


def _arrays(labels: bool = True, n_train: int = 40, n_test: int = 30, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n_train + n_test) % 2
    return {"train_images": images[:n_train], "test_images": images[n_train:], "stats": CIFAR10,
            "train_labels": y[:n_train] if labels else None, "test_labels": y[n_train:] if labels else None,
            "eval_dataset": None}


def test_every_label_free_name_has_the_mode_of_its_measure_and_alpha_req_none():
    # the names the metrics module declares (what the store, the summary and Study read) are the
    # measures computed, and their modes are label_free.MEASURES' (where a sweep may optimise them)
    computed = measures(torch.randn(60, 16, dtype=torch.float64), torch.randn(10, 3, 16, dtype=torch.float64))
    assert list(computed) and set(computed) == set(metrics.LABEL_FREE)
    for name, measure in metrics.LABEL_FREE.items():
        assert measure.mode == (label_free.MEASURES[name].mode if name in label_free.MEASURES else None), name
        assert metrics.mode_of(name) == metrics.mode_of(metrics.embedding(name)) == measure.mode
        assert metrics.is_label_free(name) and metrics.is_label_free(metrics.embedding(name))
        assert metrics.is_evaluation(name) and not metrics.needs_labels(name)
    assert metrics.LABEL_FREE["alpha_req"].mode is None and "alpha_req" not in label_free.MEASURES
    assert metrics.embedding("rankme") == "embedding/rankme" and metrics.embedding_measure("embedding/rankme") == "rankme"
    assert metrics.embedding_measure("embedding/knn_top1") is None and not metrics.is_label_free("knn_top1")
    assert metrics.needs_labels(metrics.KNN) and metrics.needs_labels(metrics.probe("res4"))


@pytest.mark.parametrize("metric, mode", [("rankme", "max"), ("lidar", "max"), ("alpha_req_gap", "min"),
                                          ("alignment", "min"), ("uniformity", "min"), ("embedding/rankme", "max"),
                                          ("embedding/uniformity", "min"), ("knn_top1", "max"), ("loss", "min")])
def test_a_study_takes_each_metrics_own_mode_and_refuses_the_other(metric, mode):
    assert Study(name="s", method="simclr", metric=metric).mode == mode
    assert Study(name="s", method="simclr", metric=metric, mode=mode).mode == mode
    other = {"max": "min", "min": "max"}[mode]
    with pytest.raises(ValueError, match=rf"{metric} is better {'higher' if mode == 'max' else 'lower'}: its mode is "
                                         rf"'{mode}', not '{other}'"):
        Study(name="s", method="simclr", metric=metric, mode=other)
    assert Study(name="s", method="simclr", metric=metric).reads_labels == metrics.needs_labels(metric)


def test_a_study_refuses_alpha_req_and_an_unknown_mode_and_keeps_several_metrics_modes():
    for metric in ("alpha_req", "embedding/alpha_req"):
        with pytest.raises(ValueError, match=rf"{metric} has no better end .* choose by "
                                             rf"{metric.replace('alpha_req', 'alpha_req_gap')}"):
            Study(name="s", method="simclr", metric=metric)
    with pytest.raises(ValueError, match="the mode of rankme is 'max' or 'min', not 'up'"):
        Study(name="s", method="simclr", metric="rankme", mode="up")
    two = Study(name="s", method="simclr", metric=["uniformity", "device_s"])
    assert two.mode == ["min", "max"]  # device_s has no mode of its own: "max", as before modes were known
    assert Study(name="s", method="simclr", metric=["rankme", "device_s"], mode=["max", "min"]).mode == ["max", "min"]
    with pytest.raises(ValueError, match="uniformity is better lower"):
        Study(name="s", method="simclr", metric=["knn_top1", "uniformity"], mode=["max", "max"])


def test_the_views_are_the_methods_whole_image_augmentations_or_the_standard_crop():
    simclr, rotation = _method("simclr"), _method("rotation")
    own = measure_views(simclr, 32)
    assert own == [v for v in type(simclr).views(simclr.config, 32) if isinstance(v, ImageView)] and own
    assert measure_views(rotation, 32) == measure_views(None, 32) == [ImageView(size=32)]
    images = _arrays()["test_images"][:5]
    drawn = draw_views(own, images, stats=CIFAR10, count=3, seed=7)
    assert drawn.shape == (5, 3, 3, 32, 32) and drawn.dtype == torch.float32
    assert torch.equal(drawn, draw_views(own, images, stats=CIFAR10, count=3, seed=7))  # seeded
    assert not torch.equal(drawn[:, 0], drawn[:, 1]) and not torch.equal(drawn, draw_views(own, images, stats=CIFAR10,
                                                                                              count=3, seed=8))


@pytest.mark.parametrize("name", ["simclr", "pirl", "rotation"])
def test_the_measures_are_of_the_representation_and_of_the_embedding_the_loss_sees(name):
    method = _method(name)
    method.train()
    arrays = _arrays()
    features = pooled_features(method.backbone, arrays["test_images"], ("res5",), stats=CIFAR10)["res5"]
    views = draw_views(measure_views(method, 32), arrays["test_images"][:10], stats=CIFAR10, count=3, seed=0)
    out = label_free_metrics(method.backbone, features, views, method=method)
    assert method.training  # the caller's mode, restored
    with torch.no_grad():
        method.eval()
        by_instance = method.backbone(views.flatten(0, 1)).reshape(10, 3, -1)
        embedded = method.embedding(features)
    assert out["rankme"] == pytest.approx(label_free.rankme(features))
    assert out["alpha_req_gap"] == pytest.approx(abs(label_free.alpha_req(features) - 1))
    assert out["uniformity"] == pytest.approx(label_free.uniformity(features))
    assert out["lidar"] == pytest.approx(label_free.lidar(by_instance), rel=1e-4)
    assert out["alignment"] == pytest.approx(label_free.alignment(by_instance[:, 0], by_instance[:, 1]), rel=1e-4)
    has_embedding = type(method).embedding is not Method.embedding
    assert (embedded is not None) == has_embedding
    assert {k for k in out if metrics.embedding_measure(k)} == (
        {metrics.embedding(m) for m in metrics.LABEL_FREE} if has_embedding else set())
    if has_embedding:
        assert out["embedding/rankme"] == pytest.approx(label_free.rankme(embedded))
        assert out["embedding/rankme"] != pytest.approx(out["rankme"])
    assert all(math.isfinite(v) for k, v in out.items() if "alpha" not in k)


def test_labels_are_read_from_the_labelled_evaluation_only():
    own, blind = _arrays(), _arrays(labels=False)
    assert labelled_arrays(own) is own and labelled_arrays(blind) is None
    other = _arrays(seed=1)
    blind_with_eval = {**blind, "eval_dataset": {k: other[k] for k in ("train_images", "train_labels",
                                                                       "test_images", "test_labels")}}
    assert labelled_arrays(blind_with_eval) is blind_with_eval["eval_dataset"]
    method = _method("simclr")
    with_labels = evaluate_for_profile(method.backbone, own, PROFILE, seed=0, method=method)
    without = evaluate_for_profile(method.backbone, blind, PROFILE, seed=0, method=method)
    evaluated = evaluate_for_profile(method.backbone, blind_with_eval, PROFILE, seed=0, method=method)
    assert metrics.KNN in with_labels and metrics.KNN not in without and metrics.probe("res5") not in without
    # invariance and the label-free measures: the training data's test images, whatever reads the labels
    for name in [metrics.INVARIANCE, *metrics.LABEL_FREE, metrics.embedding("lidar")]:
        assert with_labels[name] == pytest.approx(without[name]) == pytest.approx(evaluated[name]), name
    assert metrics.KNN in evaluated
    # kNN of the evaluation dataset: its own images and labels, not the training data's
    swapped = {**own, **blind_with_eval["eval_dataset"]}
    assert evaluated[metrics.KNN] == evaluate_for_profile(method.backbone, swapped, PROFILE, seed=0)[metrics.KNN]


def test_the_monitor_measures_the_first_test_images_and_keeps_the_trials_views():
    method, arrays, cache = _method("byol"), _arrays(), {}
    first = monitor(method.backbone, arrays, PROFILE, "cpu", method=method, seed=3, cache=cache)
    views = cache[VIEWS]
    assert views.shape[:2] == (PROFILE.lidar_instances, PROFILE.lidar_views)
    assert trial_views(arrays, 99, 99, method=method, seed=0, cache=cache) is views  # drawn once per trial
    again = monitor(method.backbone, arrays, PROFILE, "cpu", method=method, seed=3, cache=cache)
    seconds = metrics.LABEL_FREE_SECONDS
    assert first[seconds] > 0 and {k: v for k, v in again.items() if k != seconds} == {
        k: v for k, v in first.items() if k != seconds} and metrics.KNN in first
    features = pooled_features(method.backbone, arrays["test_images"][:PROFILE.label_free_images], ("res5",),
                               stats=CIFAR10)["res5"]
    assert first["rankme"] == pytest.approx(label_free.rankme(features))
    blind = monitor(method.backbone, _arrays(labels=False), PROFILE, "cpu", method=method, seed=3)
    assert metrics.KNN not in blind and blind["lidar"] == pytest.approx(first["lidar"])
    assert blind["rankme"] == pytest.approx(first["rankme"])
    # the final evaluation measures the same images and views: what TPE is told is what ASHA compared
    final = evaluate_for_profile(method.backbone, arrays, PROFILE, seed=3, method=method, cache=cache)
    for name in [*metrics.LABEL_FREE, *map(metrics.embedding, metrics.LABEL_FREE)]:
        assert final[name] == pytest.approx(first[name], rel=1e-6, nan_ok=True), name
