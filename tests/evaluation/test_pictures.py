"""The pictures of what was learned (``evaluation/pictures.py``): neighbours against a brute-force
search, queries that do not depend on the trial, a map with one point per sampled test image."""

from io import BytesIO

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sslab.evaluation import pictures
from sslab.evaluation.evaluate import evaluate, evaluate_for_profile
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.views import CIFAR10
from sslab.plan.profiles import Profile


def _brute_force(train, queries, k):
    """Every training image's cosine similarity to each query, one pair at a time, sorted."""
    out = []
    for q in queries:
        sims = [float(F.cosine_similarity(q, row, dim=0)) for row in train]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        out.append((order, [sims[i] for i in order]))
    return out


def test_neighbours_are_the_brute_force_nearest_by_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    train, queries = torch.randn(300, 12, generator=g) * 3, torch.randn(9, 12, generator=g)
    found, sims = pictures.nearest_training_images(train, queries, k=8)
    assert found.shape == sims.shape == (9, 8)
    for (order, expected), row, row_sims in zip(_brute_force(train, queries, 8), found, sims):
        assert list(row) == order
        assert row_sims == pytest.approx(expected, abs=1e-5)


def test_the_queries_depend_on_the_test_labels_alone_and_cover_the_classes():
    labels = np.random.default_rng(3).integers(0, 10, 2000)
    first, again = pictures.query_indices(labels), pictures.query_indices(labels.copy())
    assert list(first) == list(again) and len(set(first)) == pictures.QUERIES == 16
    assert sorted(labels[first][:10]) == list(range(10))  # round robin: every class before any twice
    few = pictures.query_indices(np.array([1, 1, 0]))  # fewer test images than queries: each once, class 0's first
    assert few[0] == 2 and sorted(few) == [0, 1, 2]


def test_two_trials_of_other_seeds_record_the_same_queries_and_map_points():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(60) % 4
    drawn = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        backbone = Backbone("resnet18", cifar_stem=True, width=8)
        result = evaluate(backbone, images, labels, images[:40], labels[:40], stats=CIFAR10, knn_k=5, probe_epochs=1,
                          probe_taps=(), pictures=True, seed=seed)
        drawn.append(result.pictures)
    (a, b) = drawn
    assert [r["query"] for r in a[pictures.NEIGHBOUR_SAMPLES]] == [r["query"] for r in b[pictures.NEIGHBOUR_SAMPLES]]
    assert [r["index"] for r in a[pictures.EMBEDDING_SAMPLES]] == [r["index"] for r in b[pictures.EMBEDDING_SAMPLES]]
    # the backbones differ, so what they call near does
    assert [r["neighbour"] for r in a[pictures.NEIGHBOUR_SAMPLES]] != [r["neighbour"] for r in b[pictures.NEIGHBOUR_SAMPLES]]


def test_the_map_has_one_point_per_sampled_test_image_with_its_label():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=g) * 4
    test_labels = np.arange(1500) % 5
    test = centres[torch.as_tensor(test_labels)] + torch.randn(1500, 32, generator=g)
    train_labels = np.arange(200) % 5
    train = centres[torch.as_tensor(train_labels)] + torch.randn(200, 32, generator=g)
    out = pictures.pictures(train, test, train_labels, test_labels)
    points = out[pictures.EMBEDDING_SAMPLES]
    shown = pictures.map_indices(1500)
    assert len(points) == pictures.MAP_POINTS == len(set(shown))
    assert [p["index"] for p in points] == list(shown)
    assert all(p["label"] == test_labels[p["index"]] for p in points)
    xy = np.array([[p["x"], p["y"]] for p in points])
    assert np.isfinite(xy).all() and xy.std(0).min() > 0
    # well separated classes stay together: each point's nearest point on the map is of its class
    dist = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.eye(len(xy)) * 1e9
    labels = np.array([p["label"] for p in points])
    assert (labels[dist.argmin(1)] == labels).mean() > 0.95
    # the neighbours' records: queries × k, each with the query's and the neighbour's labels
    rows = out[pictures.NEIGHBOUR_SAMPLES]
    assert len(rows) == pictures.QUERIES * pictures.NEIGHBOURS
    assert all(r["query_label"] == test_labels[r["query"]] and r["label"] == train_labels[r["neighbour"]] for r in rows)
    assert out[pictures.PICTURES_SECONDS] > 0


def test_a_map_of_few_points_still_has_one_point_each():
    for n in (1, 2, 3, 5, 12):
        xy = pictures.embedding_map(torch.randn(n, 8))
        assert xy.shape == (n, 2) and np.isfinite(xy).all()


def test_thumbnails_are_small_pngs_of_the_training_subset_and_the_queries():
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 64, 48, 3), dtype=np.uint8), rng.integers(0, 256, (20, 64, 48, 3), dtype=np.uint8)
    train_labels, test_labels = np.arange(30) % 3, np.arange(20) % 3
    rows = pictures.thumbnails(train, train_labels, test, test_labels)
    assert [(r["split"], r["index"]) for r in rows[:30]] == [("train", i) for i in range(30)]
    assert [r["index"] for r in rows[30:]] == list(pictures.query_indices(test_labels))
    picture = Image.open(BytesIO(rows[0]["png"]))
    assert picture.format == "PNG" and max(picture.size) == pictures.THUMBNAIL_SIDE and picture.size == (24, 32)
    same_size = pictures.thumbnail(train[0][:32, :32])
    assert np.array_equal(np.asarray(Image.open(BytesIO(same_size))), train[0][:32, :32])  # 32 px: the pixels as they are


def test_evaluate_for_profile_reports_the_pictures_only_when_asked():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    arrays = {"train_images": images, "train_labels": np.arange(40) % 4, "test_images": images[:20],
              "test_labels": np.arange(20) % 4, "stats": CIFAR10}
    profile = Profile(name="p", width=8, knn_k=5, probe_epochs=1, invariance_samples=0)
    backbone = Backbone("resnet18", cifar_stem=True, width=8)
    plain = evaluate_for_profile(backbone, arrays, profile, seed=0)
    assert not set(pictures.SAMPLES) & set(plain)
    drawn = evaluate_for_profile(backbone, arrays, profile, seed=0, pictures=True)
    assert set(pictures.SAMPLES) <= set(drawn) and drawn["knn_top1"] == plain["knn_top1"]
    assert len(drawn[pictures.EMBEDDING_SAMPLES]) == 20
