"""The numbers behind each chart, checked against the formulas the fixture stores were written with."""

import math

import numpy as np
import pandas as pd
import pytest

import store_factory
from sslab.dashboard import charts, store


@pytest.fixture(scope="module")
def grid(fixture_root):
    return store.read_study(str(fixture_root), "pirl_lambda")


@pytest.fixture(scope="module")
def search(fixture_root):
    return store.read_study(str(fixture_root), "pirl_search")


def test_ablation_points_are_means_over_seeds_without_failed_trials(grid):
    points = charts.ablation_points(grid.trials, "loss_weight", "knn_top1")
    assert list(points["value"]) == [0.0, 0.5, 1.0]
    expected = {lam: np.mean([store_factory.grid_knn(lam, s) for s in range(3) if (lam, s) != (1.0, 2)])
                for lam in (0.0, 0.5, 1.0)}
    assert points["mean"].tolist() == pytest.approx([expected[v] for v in points["value"]])
    assert points["n"].tolist() == [3, 3, 2]
    assert points["std"].iloc[0] == pytest.approx(np.std([0.2, 0.21, 0.22], ddof=1))


def test_ablation_figure_marks_default_and_baseline(grid):
    points = charts.ablation_points(grid.trials, "loss_weight", "knn_top1")
    baseline = charts.baseline_levels(grid.baselines, "knn_top1")
    assert baseline["mean"].tolist() == [pytest.approx(0.15)] and baseline["n"].tolist() == [3]
    fig = charts.ablation_figure(points, "loss_weight", "knn_top1", defaults={"pirl_lambda": 0.5}, baselines=baseline)
    assert len(fig.data) == 1 and list(fig.data[0].y) == pytest.approx(points["mean"].tolist())
    lines = {(s.x0, s.y0) for s in fig.layout.shapes}
    assert any(x == 0.5 for x, _ in lines) and any(y == pytest.approx(0.15) for _, y in lines)
    assert fig.layout.xaxis.type != "log"


def test_log_axis_for_knobs_spanning_decades():
    assert charts.is_log_scale(pd.Series([256, 4096, 32000]))
    assert not charts.is_log_scale(pd.Series([0.0, 0.5, 1.0]))


def test_probe_profile_keeps_tap_order_and_means(grid):
    profile = charts.probe_profile(grid.trials, "method")
    assert profile["tap"].astype(str).tolist() == list(store_factory.TAPS)
    ok = grid.trials[grid.trials["status"] == "ok"]
    assert profile["mean"].tolist() == pytest.approx([ok[f"probe_{t}_top1"].mean() for t in store_factory.TAPS])
    by_trial = charts.probe_profile(grid.trials, "trial")
    assert by_trial["group"].nunique() == 8  # the failed trial has no probes
    base = charts.baseline_profile(grid.baselines)
    assert base["mean"].tolist() == pytest.approx([0.15 + 0.01 * i for i in range(5)])


def test_a_configuration_pools_its_seeds_and_names_the_method_only_with_the_knobs_it_has(grid):
    profile = charts.probe_profile(grid.trials, "configuration")
    assert profile["group"].unique().tolist() == [f"pirl_lambda · pirl loss_weight={v:g}" for v in (0.0, 0.5, 1.0)]
    ok = grid.trials[grid.trials["status"] == "ok"]
    res5 = profile[profile["tap"] == "res5"].set_index("group")["mean"]
    for value in (0.0, 0.5, 1.0):
        expected = ok[ok["config/loss_weight"] == value]["probe_res5_top1"].mean()
        assert res5[f"pirl_lambda · pirl loss_weight={value:g}"] == pytest.approx(expected)
    invariance = charts.invariance_groups(grid.invariance, grid.trials, "configuration")
    assert invariance.groupby("group").size().tolist() == [150, 150, 100]  # 50 samples × ok seeds
    # in a study of several methods a knob one method lacks (NaN) is left out of its name
    jigsaw = pd.Series({"method": "jigsaw", "config/transform": math.nan, "seed": 0})
    pirl = pd.Series({"method": "pirl", "config/transform": "rotation", "seed": 1})
    assert store.configuration_label(jigsaw, ["transform"], with_method=True) == "jigsaw"
    assert store.trial_label(pirl, ["transform"], with_method=True) == "pirl transform=rotation seed 1"
    with pytest.raises(ValueError, match="choose one of"):
        charts.probe_profile(grid.trials, "seed")


def test_invariance_groups_by_trial_and_method(grid):
    by_trial = charts.invariance_groups(grid.invariance, grid.trials, "trial")
    assert by_trial.groupby("group").size().tolist() == [50] * 8
    by_method = charts.invariance_groups(grid.invariance, grid.trials, "method")
    assert by_method["group"].unique().tolist() == ["pirl_lambda · pirl"] and len(by_method) == 400
    ecdf = charts.invariance_figure(by_method, "ecdf")
    assert ecdf.data[0].y[-1] == pytest.approx(1.0) and np.all(np.diff(ecdf.data[0].x) >= 0)
    assert charts.invariance_figure(by_trial, "histogram").data[0].type == "histogram"


def test_training_curves_mark_failed_and_stopped_trials(grid, search):
    epochs = pd.concat([grid.epochs, search.epochs])
    fig = charts.training_figure(epochs, "loss")
    marks = [t for t in fig.data if t.marker.symbol == "x"]
    assert len(marks) == 1 + 3  # one failed grid trial, three stopped search trials
    assert "loss" in charts.epoch_metrics(epochs) and "epoch" not in charts.epoch_metrics(epochs)


def test_each_epoch_point_says_the_cpu_steal_it_ran_under():
    epochs = pd.DataFrame({"key": ["a"] * 3 + ["b"] * 2, "label": ["a"] * 3 + ["b"] * 2, "status": ["ok"] * 5,
                           "epoch": [0, 1, 2, 0, 1], "epoch_s": [10.0, 10.5, 14.0, 9.0, 9.5],
                           "epoch_cpu_steal": [0.0, 0.01, 0.3, float("nan"), float("nan")]})
    slow, quiet = charts.training_figure(epochs, "epoch_s").data
    np.testing.assert_allclose(slow.customdata, [0.0, 0.01, 0.3])  # epoch 2 was slow: 30 % stolen
    assert "CPU steal %{customdata:.0%}" in slow.hovertemplate
    assert quiet.customdata is None and quiet.hovertemplate is None  # not measured: nothing said
    steal_curve = charts.training_figure(epochs, "epoch_cpu_steal").data[0]
    assert steal_curve.customdata is None  # the steal curve itself does not repeat it


def test_search_history_uses_monitor_values_for_stopped_trials(search):
    history = charts.search_history(search.trials, "knn_top1", "max")
    assert history["number"].tolist() == list(range(10))
    stopped = history[history["status"] == "stopped"]
    assert stopped["value"].notna().all()
    assert history["best_so_far"].is_monotonic_increasing


def test_a_stopped_trials_monitor_value_is_drawn_but_never_counts_as_the_best():
    """In finishing order: ok 0.30, stopped at a monitor kNN of 0.50 (the highest value), ok 0.35,
    failed, ok 0.32. Only completed trials set the best so far."""
    trials = pd.DataFrame({
        "label": list("abcde"), "finished_at": [1.0, 2.0, 3.0, 4.0, 5.0],
        "status": ["ok", "stopped", "ok", "failed", "ok"],
        "knn_top1": [0.30, math.nan, 0.35, math.nan, 0.32],
        "monitor_knn_top1": [math.nan, 0.50, math.nan, math.nan, math.nan],
    })
    history = charts.search_history(trials, "knn_top1", "max")
    assert history["value"].tolist()[:3] == [0.30, 0.50, 0.35]  # the stopped trial is drawn at its monitor value
    assert history["best_so_far"].tolist() == [0.30, 0.30, 0.35, 0.35, 0.35]
    lowest = charts.search_history(trials, "knn_top1", "min")["best_so_far"].tolist()
    assert lowest == [0.30, 0.30, 0.30, 0.30, 0.30]


def test_importance_finds_the_knob_that_drives_the_metric(search):
    importance = charts.param_importance(search.trials, search.knobs, "knn_top1", "max")
    assert set(importance.index) == {"temperature", "loss_weight", "num_negatives"}
    assert importance.sum() == pytest.approx(1.0)
    assert importance.idxmax() == "temperature"  # the fixture's kNN depends on τ alone
    assert charts.param_importance(search.trials.head(2), search.knobs, "knn_top1").empty


def test_parallel_coordinates_use_log10_for_wide_knobs(search):
    fig = charts.parallel_figure(search.trials, search.knobs, "knn_top1")
    labels = [d.label for d in fig.data[0].dimensions]
    assert labels == ["log10 temperature", "loss_weight", "log10 num_negatives", "knn_top1"]
    assert len(fig.data[0].dimensions[0].values) == 10


def test_a_study_comparing_methods_draws_one_ablation_curve_per_method():
    import pandas as pd

    from sslab.dashboard import charts

    trials = pd.DataFrame({
        "study": ["cmp"] * 4 + ["solo"] * 2,
        "method": ["pirl", "pirl", "simclr", "simclr", "pirl", "pirl"],
        "status": "ok",
        "config/temperature": [0.1, 0.2, 0.1, 0.2, 0.1, 0.2],
        "knn_top1": [0.30, 0.32, 0.40, 0.44, 0.25, 0.27],
    })
    points = charts.ablation_points(trials, "temperature", "knn_top1")
    assert sorted(points["study"].unique()) == ["cmp · pirl", "cmp · simclr", "solo"]
    simclr = points[points["study"] == "cmp · simclr"]
    assert simclr["mean"].tolist() == [0.40, 0.44]
