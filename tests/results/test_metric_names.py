"""The metric names and directions the results wing defines for every reader (summary, dashboard)."""

import pytest

from sslab.results import metrics


def test_the_label_free_measures_are_named_once_with_their_better_end():
    assert list(metrics.LABEL_FREE) == ["rankme", "alpha_req", "alpha_req_gap", "lidar", "alignment", "uniformity"]
    assert all(m.description and m.mode in ("max", "min", None) for m in metrics.LABEL_FREE.values())
    assert metrics.mode_of("alpha_req") is None  # best in a band around 1: its gap to 1 is the objective


def test_the_label_free_modes_are_the_evaluations():
    label_free = pytest.importorskip("sslab.evaluation.label_free")  # torch
    for name, measure in label_free.MEASURES.items():
        assert metrics.LABEL_FREE[name].mode == measure.mode, name
    assert set(metrics.LABEL_FREE) - set(label_free.MEASURES) == {"alpha_req"}


def test_mode_of_every_metric():
    assert metrics.mode_of(metrics.KNN) == metrics.mode_of(metrics.probe("res3")) == "max"
    assert metrics.mode_of(metrics.LOSS) == "min" and metrics.mode_of("uniformity") == "min"
    assert metrics.mode_of(metrics.INVARIANCE) is None and metrics.mode_of("not_a_metric") is None
    assert metrics.label_free_columns(["lidar", "knn_top1", "rankme"]) == ["rankme", "lidar"]
