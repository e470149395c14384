"""Label-free measures in the dashboard: the *Label-free vs kNN* page, and the measures as the
metric of the Search and Ablation pages, on stores written directly with known values."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

import store_factory
from dashboard_testing import figure_of
from sslab.dashboard import agreement, charts
from sslab.results import metrics
from sslab.results.store import ResultsStore
from test_app import open_page

METHODS, TEMPERATURES, SEEDS = ("simclr", "byol"), (0.05, 0.1, 0.2, 0.5), (0, 1)
NEW, OLD = "setting-new", "setting-old"


def _rows(setting: str, seed_offset: int = 0) -> list[dict]:
    """Every (method, τ, seed) trial of one setting with random kNN, a probe and label-free values:
    RankMe and uniformity follow kNN with noise, α-ReQ does not; one more trial failed."""
    rng = np.random.default_rng(7 + seed_offset)
    rows = []
    for method in METHODS:
        for t in TEMPERATURES:
            for seed in SEEDS:
                knn = float(rng.uniform(0.2, 0.5))
                rows.append({"trial_id": f"{method}-t{t}-s{seed}-{setting}", "setting_id": setting, "baseline_setting": "b",
                             "method": method, "seed": seed, "config/temperature": t, "status": "ok", "epochs": 5,
                             "knn_top1": knn, "probe_res5_top1": knn + float(rng.normal(0, 0.05)),
                             "rankme": 50 + 100 * knn + float(rng.normal(0, 4)),
                             "uniformity": -3 * knn + float(rng.normal(0, 0.15)), "alpha_req": float(rng.uniform(0.5, 1.5)),
                             "embedding/uniformity": -2 * knn + float(rng.normal(0, 0.3)),
                             "finished_at": float(len(rows))})
    rows[3]["rankme"] = math.nan  # measured for every trial but this one
    rows.append({"trial_id": f"simclr-failed-{setting}", "setting_id": setting, "baseline_setting": "b", "method": "simclr",
                 "seed": 0, "config/temperature": 1.0, "status": "failed", "error": "loss became NaN", "epochs": 2})
    return rows


def write_label_free(root, name: str = "lf_grid", *, earlier: bool = False) -> pd.DataFrame:
    """A two-method grid over τ with two seeds; ``earlier``: a smoke run's setting is in the store too."""
    store = ResultsStore(root, name)
    settings = {NEW: {"command": "sslab run lf_grid", "profile": {"name": "cifar"}, "first_run": "2026-02-01"}}
    if earlier:
        settings[OLD] = {"command": "sslab run lf_grid --epochs 1", "profile": {"name": "local"}, "first_run": "2026-01-01"}
    store.write_metadata({"methods": list(METHODS), "kind": "grid", "knobs": ["temperature"],
                          "defaults": {"temperature": 0.1}, "seeds": len(SEEDS), "metric": "knn_top1", "mode": "max",
                          "total_trials": 16, "setting_ids": [NEW], "baseline_setting": "b", "settings": settings})
    rows = _rows(NEW) + (_rows(OLD, 1)[:5] if earlier else [])
    store.append("trials", rows)
    return pd.DataFrame(rows)


def kendall_by_hand(x, y) -> float:
    """τ-b straight from its definition: (concordant − discordant) / √(untied in x · untied in y)."""
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in combinations(range(len(x)), 2))
    untied_x = sum(x[i] != x[j] for i, j in combinations(range(len(x)), 2))
    untied_y = sum(y[i] != y[j] for i, j in combinations(range(len(x)), 2))
    return s / math.sqrt(untied_x * untied_y)


def _charts(app) -> dict[str, tuple]:
    """The page's scatters by measure (their title is ``<measure> against <target>``)."""
    found = {}
    for chart in app.get("plotly_chart"):
        traces, layout = figure_of(chart)
        found[layout.title.text.split(" against ")[0]] = (traces, layout)
    return found


def test_each_measure_is_drawn_with_the_rank_correlations_computed_independently(tmp_path, monkeypatch):
    rows = write_label_free(tmp_path)
    app = open_page(tmp_path, "label_free", monkeypatch)
    drawn = _charts(app)
    # the measures present, the representation's and the embedding's (embedding/<measure>)
    table = app.dataframe[0].value.set_index("measure")
    assert list(table.index) == ["rankme", "alpha_req", "uniformity", "embedding/uniformity"]
    assert set(drawn) == set(table.index)
    ok = rows[rows["status"] == "ok"]
    for measure in drawn:
        both = ok.dropna(subset=[measure])
        signed = both[measure] * (-1 if metrics.mode_of(measure) == "min" else 1)  # +1: the labels' order
        rho = signed.corr(both["knn_top1"], method="spearman")
        tau = kendall_by_hand(signed.to_numpy(), both["knn_top1"].to_numpy())
        assert table.loc[measure, "spearman"] == pytest.approx(rho)
        assert table.loc[measure, "kendall"] == pytest.approx(tau)
        assert table.loc[measure, "trials"] == len(both)
        traces, layout = drawn[measure]
        note = layout.annotations[0].text
        assert f"Spearman ρ = {rho:+.2f}" in note and f"Kendall τ = {tau:+.2f}" in note and f"{len(both)} trials" in note
        points = [t for t in traces if t["name"] in METHODS]  # coloured by method: one trace each
        assert sorted(t["name"] for t in points) == sorted(METHODS)
        assert sum(len(t["x"]) for t in points) == len(both)


def test_a_min_measure_picks_the_lowest_and_the_regret_is_measured_from_the_best(tmp_path, monkeypatch):
    rows = write_label_free(tmp_path)
    app = open_page(tmp_path, "label_free", monkeypatch)
    table = app.dataframe[0].value.set_index("measure")
    ok = rows[rows["status"] == "ok"]
    for measure, pick in (("uniformity", ok["uniformity"].idxmin()), ("rankme", ok["rankme"].idxmax()),
                          ("embedding/uniformity", ok["embedding/uniformity"].idxmin())):
        picked = ok.loc[pick]
        assert table.loc[measure, "better"] == agreement.BETTER[metrics.mode_of(measure)]
        assert table.loc[measure, "picked knn_top1"] == pytest.approx(picked["knn_top1"])
        assert table.loc[measure, "regret"] == pytest.approx(ok["knn_top1"].max() - picked["knn_top1"])
        label = f"{picked['method']} temperature={picked['config/temperature']:.4g} seed {picked['seed']}"
        assert table.loc[measure, "picks"] == label
        traces, _ = _charts(app)[measure]
        (ring,) = [t for t in traces if t["name"] == f"picked by {measure}"]
        assert ring["x"] == [pytest.approx(picked[measure])]
    assert table.loc["uniformity", "better"] == table.loc["embedding/uniformity", "better"] == "lower is better"
    assert table.loc["embedding/uniformity", "description"].endswith("(of the embedding)")
    assert table.loc["rankme", "better"] == "higher is better"
    # α-ReQ has no better end: it is drawn and correlated, but picks nothing
    assert math.isnan(table.loc["alpha_req", "regret"]) and table.loc["alpha_req", "picks"] == ""
    assert not [t for t in _charts(app)["alpha_req"][0] if t["name"] == "picked by alpha_req"]


def test_the_probe_can_be_the_target_and_trials_coloured_by_configuration(tmp_path, monkeypatch):
    rows = write_label_free(tmp_path)
    app = open_page(tmp_path, "label_free", monkeypatch)
    app.radio(key="label_free_target").set_value("probe_res5_top1").run()
    app.radio(key="label_free_by").set_value("configuration").run()
    table = app.dataframe[0].value.set_index("measure")
    ok = rows[rows["status"] == "ok"]
    picked = ok.loc[ok["uniformity"].idxmin()]
    assert table.loc["uniformity", "regret"] == pytest.approx(ok["probe_res5_top1"].max() - picked["probe_res5_top1"])
    rho = (-ok["uniformity"]).corr(ok["probe_res5_top1"], method="spearman")  # lower is better: negated
    assert table.loc["uniformity", "spearman"] == pytest.approx(rho)
    traces, layout = _charts(app)["uniformity"]
    assert layout.title.text == "uniformity against probe_res5_top1"
    groups = [t for t in traces if not t["name"].startswith(("picked", "best"))]
    assert len(groups) == len(METHODS) * len(TEMPERATURES)  # one colour per configuration, seeds pooled
    assert "simclr temperature=0.05" in {t["name"] for t in groups}


def test_the_page_says_when_no_trial_has_a_label_free_measure(tmp_path, monkeypatch):
    store_factory.write_grid(tmp_path, seeds=1, fail=None)
    app = open_page(tmp_path, "label_free", monkeypatch)
    assert not app.get("plotly_chart")
    (info,) = app.info
    assert "pirl_lambda" in info.value and "no label-free measure" in info.value
    assert "Rerun the study with the current sslab" in info.value


def test_an_earlier_runs_setting_can_be_chosen(tmp_path, monkeypatch):
    write_label_free(tmp_path, earlier=True)
    app = open_page(tmp_path, "label_free", monkeypatch)
    assert app.dataframe[0].value.set_index("measure").loc["uniformity", "trials"] == 16
    assert any("other setting" in c.value for c in app.caption)
    (earlier,) = [o for o in app.selectbox(key="label_free_setting_lf_grid").options if "--epochs 1" in o]
    app.selectbox(key="label_free_setting_lf_grid").set_value(earlier).run()
    assert not app.exception
    assert app.dataframe[0].value.set_index("measure").loc["uniformity", "trials"] == 5


def test_search_page_offers_the_label_free_measures_with_their_direction(fixture_root, monkeypatch):
    app = open_page(fixture_root, "search", monkeypatch, studies=["pirl_search"])
    chooser = app.selectbox(key="search_metric")
    assert chooser.value == "knn_top1"  # the study's own metric first
    assert charts.metric_label("uniformity") in chooser.options and "alpha_req" not in chooser.options
    assert "lower is better" in charts.metric_label("uniformity")
    chooser.set_value("uniformity").run()
    history, importance, parallel = (figure_of(c)[0] for c in app.get("plotly_chart"))
    (ok,) = [t for t in history if t["name"] == "ok"]
    (best,) = [t for t in history if t["name"] == "best so far"]
    values = pd.Series([v if v is not None else math.nan for v in best["y"]])
    assert values.iloc[-1] == pytest.approx(min(ok["y"]))  # the lowest, not the highest
    assert values.is_monotonic_decreasing
    assert parallel[0]["dimensions"][-1]["label"] == "uniformity"


def test_ablation_marks_the_best_of_a_min_measure_at_its_lowest_mean(tmp_path, monkeypatch):
    rows = write_label_free(tmp_path)
    app = open_page(tmp_path, "ablation", monkeypatch)
    app.selectbox(key="ablation_metric").set_value("uniformity").run()
    traces, layout = figure_of(app.get("plotly_chart")[0])
    means = rows[rows["status"] == "ok"].groupby(["method", "config/temperature"])["uniformity"].mean()
    marked = sorted((a.x, a.y) for a in layout.annotations if a.text == "best")  # x in log10: τ spans a factor 10
    lowest = sorted((math.log10(means[m].idxmin()), means[m].min()) for m in METHODS)
    assert marked == [(pytest.approx(x), pytest.approx(y)) for x, y in lowest]
    assert sorted(t["name"] for t in traces) == [f"lf_grid · {m}" for m in sorted(METHODS)]
    captions = " ".join(c.value for c in app.caption)
    assert "lower is better" in captions and "paper default temperature=0.1" in captions
    assert app.dataframe[0].value["best"].sum() == len(METHODS)


def test_agreement_ranks_an_infinite_value_last_without_drawing_it():
    trials = pd.DataFrame({"status": "ok", "label": list("abcd"), "method": "m", "knn_top1": [0.1, 0.2, 0.3, 0.4],
                           "alpha_req_gap": [math.inf, 0.5, 0.2, 0.1]})
    (row,) = agreement.agreement_rows(trials).to_dict("records")
    assert row["spearman"] == pytest.approx(1.0) and row["kendall"] == pytest.approx(1.0)  # the labels' order
    assert row["picks"] == "d" and row["regret"] == 0.0
    fig = agreement.agreement_figure(trials, "alpha_req_gap", metrics.KNN, row)
    assert sum(len(t.x) for t in fig.data if t.name == "m") == 3
    assert "1 trial(s) at ±∞" in fig.layout.annotations[0].text


def test_the_embeddings_measures_are_offered_and_labelled_as_such():
    trials = pd.DataFrame({"status": "ok", "knn_top1": [0.1, 0.2], "embedding/rankme": [3.0, 4.0], "rankme": [1.0, 2.0],
                           "embedding/unknown": [1.0, 2.0]})
    assert charts.trial_metrics(trials) == ["knn_top1", "rankme", "embedding/rankme"]
    assert charts.metric_label("embedding/rankme").endswith("of the embedding (higher is better)")
    assert charts.metric_label("embedding/unknown") == "embedding/unknown"


def test_best_mask_follows_the_mode():
    points = pd.DataFrame({"study": ["a", "a", "b", "b"], "mean": [1.0, 2.0, 3.0, 0.5]})
    assert charts.best_mask(points, "max").tolist() == [False, True, True, False]
    assert charts.best_mask(points, "min").tolist() == [True, False, False, True]
    assert not charts.best_mask(points, None).any()
