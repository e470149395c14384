"""Every page of the Streamlit app, driven by streamlit.testing's AppTest on fixture stores."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import store_factory
from dashboard_testing import figure_of

APP = str(Path(__file__).resolve().parents[2] / "src" / "sslab" / "dashboard" / "app.py")
#: page → number of plotly charts it draws on the fixture root
PAGES = {"studies": 0, "ablation": 1, "probes": 1, "invariance": 1, "training": 1, "search": 3, "trials": 0,
         "label_free": 6, "neighbours": 0, "embedding": 0}  # the fixture root's trials recorded no pictures


def open_page(root, page, monkeypatch, **state):
    monkeypatch.setenv("SSLAB_RESULTS", str(root))
    app = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    app.switch_page(f"views/{page}.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_fixture_store(fixture_root, page, monkeypatch):
    app = open_page(fixture_root, page, monkeypatch)
    assert len(app.get("plotly_chart")) == PAGES[page]
    assert app.title[0].value


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_an_empty_root(tmp_path, page, monkeypatch):
    app = open_page(tmp_path / "nothing-here", page, monkeypatch)
    assert not app.get("plotly_chart")
    assert any("No studies under" in i.value and "nothing-here" in i.value for i in app.info)


def test_studies_page_lists_states_and_problems(fixture_root, monkeypatch):
    app = open_page(fixture_root, "studies", monkeypatch)
    table = app.dataframe[0].value.set_index("study")
    assert table.loc["pirl_lambda", "state"] == "complete" and table.loc["pirl_lambda", "trials"] == "9/9"
    assert table.loc["pirl_lambda", "best configuration"] == "loss_weight=1"
    assert table.loc["pirl_running", "running"] == 1
    assert table.loc["pirl_old", "state"] == "unreadable"
    assert any("pirl_old" in w.value and "schema version 0" in w.value for w in app.warning)


def test_ablation_curve_has_one_point_per_configuration_with_the_right_mean(fixture_root, monkeypatch):
    app = open_page(fixture_root, "ablation", monkeypatch, studies=["pirl_lambda"])
    (trace,), layout = figure_of(app.get("plotly_chart")[0])
    assert trace["x"] == [0.0, 0.5, 1.0]
    expected = [(0.2 + 0.21 + 0.22) / 3, (0.25 + 0.26 + 0.27) / 3, (0.30 + 0.31) / 2]  # λ=1 seed 2 failed
    assert trace["y"] == pytest.approx(expected)
    assert trace["error_y"]["array"][2] == pytest.approx(pd.Series([0.30, 0.31]).std())
    shapes = {(s.x0, s.y0) for s in layout.shapes}
    assert (0.5, 0) in shapes  # the paper default λ = 0.5
    assert any(y == pytest.approx(0.15) for _, y in shapes)  # the random-init baseline


def test_ablation_metric_switch_redraws_the_chosen_metric(fixture_root, monkeypatch):
    app = open_page(fixture_root, "ablation", monkeypatch, studies=["pirl_lambda"])
    app.selectbox(key="ablation_metric").set_value("probe_res5_top1").run()
    (trace,), _ = figure_of(app.get("plotly_chart")[0])
    assert trace["y"][0] == pytest.approx((0.2 + 0.21 + 0.22) / 3 + 0.08)


def test_trials_from_two_studies_are_compared_on_the_same_chart(fixture_root, monkeypatch):
    grid = "pirl_lambda/pirl-loss_weight=1.0-temperature=0.07-seed=2"  # failed
    stopped = next(k for k in _keys(fixture_root, "pirl_search", "stopped"))
    app = open_page(fixture_root, "training", monkeypatch, trials=[grid, stopped])
    traces, _ = figure_of(app.get("plotly_chart")[0])
    lines = [t for t in traces if t.get("showlegend") is not False]
    assert len(lines) == 2 and {t["name"].split(" · ")[0] for t in lines} == {"pirl_lambda", "pirl_search"}
    assert sum(t["marker"].get("symbol") == "x" for t in traces) == 2  # both ended early


def test_trials_page_filters_and_offers_csv(fixture_root, monkeypatch):
    app = open_page(fixture_root, "trials", monkeypatch, studies=["pirl_lambda"])
    assert len(app.dataframe[0].value) == 9
    app.multiselect(key="trials_status").set_value(["failed"]).run()
    shown = app.dataframe[0].value
    assert shown["status"].tolist() == ["failed"] and "NaN" in shown["error"].iloc[0]
    assert app.get("download_button")


def test_search_page_draws_history_importance_and_parallel_coordinates(fixture_root, monkeypatch):
    app = open_page(fixture_root, "search", monkeypatch, studies=["pirl_search"])
    history, importance, parallel = (figure_of(c)[0] for c in app.get("plotly_chart"))
    assert sum(len(t["x"]) for t in history if t["name"] in ("ok", "stopped")) == 10
    (bars,) = importance
    assert bars["y"][-1] == "temperature"  # sorted ascending: the most important knob last
    assert parallel[0]["type"] == "parcoords"


def test_a_large_store_opens_with_bounded_charts(tmp_path, monkeypatch):
    store_factory.write_large(tmp_path, trials=1000, epochs=200, invariance_samples=20)
    app = open_page(tmp_path, "training", monkeypatch)
    traces, _ = figure_of(app.get("plotly_chart")[0])
    assert len([t for t in traces if t.get("showlegend") is not False]) == 20  # the 20 best, not 1,000 lines
    app = open_page(tmp_path, "trials", monkeypatch)
    assert len(app.dataframe[0].value) == 1000


def test_the_dashboard_never_imports_ray_or_torch(fixture_root):
    code = textwrap.dedent(f"""
        import os, sys
        os.environ["SSLAB_RESULTS"] = {str(fixture_root)!r}
        from streamlit.testing.v1 import AppTest
        for page in {list(PAGES)!r}:
            app = AppTest.from_file({APP!r}, default_timeout=120).run()
            app.switch_page(f"views/{{page}}.py").run()
            assert not app.exception, page
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "torch", "torchvision")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _keys(root, study, status):
    from sslab.dashboard import store

    trials = store.read_study(str(root), study).trials
    return trials.loc[trials["status"] == status, "key"].tolist()


def test_ablation_curve_leaves_out_studies_that_hold_the_knob_fixed(tmp_path, monkeypatch):
    store_factory.write_grid(tmp_path, "pirl_lambda")
    fixed = store_factory.write_grid(tmp_path, "pirl_other", values=(0.5,), seeds=2, fail=None)
    meta = fixed.metadata()
    fixed.write_metadata({**{k: v for k, v in meta.items() if k not in ("schema_version", "study")}, "knobs": ["temperature"]})
    app = open_page(tmp_path, "ablation", monkeypatch)
    assert app.selectbox(key="ablation_knob").value == "loss_weight"
    traces, _ = figure_of(app.get("plotly_chart")[0])
    assert [t["name"] for t in traces] == ["pirl_lambda"]


def test_pages_explain_a_table_the_store_lacks(tmp_path, monkeypatch):
    store_factory.write_grid(tmp_path, seeds=1, fail=None)
    shutil.rmtree(tmp_path / "pirl_lambda" / "invariance")
    app = open_page(tmp_path, "invariance", monkeypatch)
    assert not app.get("plotly_chart") and "invariance table" in app.info[0].value
