"""Tests of a decoded split as a Ray Dataset (``to_ray_dataset``, src/sslab/engine/augment.py): its
columns and blocks, and the views computed on it in Ray Data."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sslab.data.catalog import load_split  # noqa: E402
from sslab.data.split import Split  # noqa: E402
from sslab.engine.augment import to_ray_dataset  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_to_ray_dataset_columns_and_views(ray_cluster):
    from sslab.methods.views import ImageView, JigsawView, apply_views

    n = 1000
    rng = np.random.default_rng(0)
    split = Split(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                  labels=rng.integers(0, 10, n).astype(np.int64), idx=np.arange(n, dtype=np.int64),
                  classes=[str(i) for i in range(10)])
    ds = to_ray_dataset(split)
    assert ds.count() == n
    assert ds.materialize().num_blocks() >= 2
    batch = ds.take_batch(n, batch_format="numpy")
    assert set(batch) == {"idx", "image", "label"}
    assert batch["idx"].dtype == np.int64 and batch["label"].dtype == np.int64
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (n, 32, 32, 3)
    order = np.argsort(batch["idx"])
    np.testing.assert_array_equal(batch["idx"][order], split.idx)
    np.testing.assert_array_equal(batch["image"][order], split.images)
    np.testing.assert_array_equal(batch["label"][order], split.labels)

    views = [ImageView(), JigsawView(num_permutations=10)]

    def augment(b):
        out = apply_views(views, b["image"], np.random.default_rng(int(b["idx"][0])), stats=split.normalization)
        return {"idx": b["idx"], **out}

    augmented = ds.map_batches(augment, batch_size=128, batch_format="numpy").take_batch(64)
    assert augmented["image"].shape == (64, 3, 32, 32) and augmented["jigsaw"].shape == (64, 9, 3, 8, 8)
    assert augmented["jigsaw_perm"].dtype == np.int64


def test_cifar_subset_to_ray_dataset(cifar, ray_cluster):
    s = load_split("cifar10", "test", subset=500, seed=0)
    ds = to_ray_dataset(s)
    assert ds.count() == 500
    assert [f for f in ds.schema().names] == ["idx", "image", "label"]
