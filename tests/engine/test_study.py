"""A small study end to end on real CIFAR-10: Tune + Train + Data + evaluation + results store,
then resume after an interruption."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import ray
from optuna.distributions import FloatDistribution

import faults
from small import SMALL, by_name, needs_cifar, trial_name
from sslab.engine import runner
from sslab.engine.other_work import Busy
from sslab.results.store import ResultsStore
from sslab.engine.runner import run_study
from sslab.plan.spec import Specs, name_of
from sslab.plan.study import Search, Study


STUDY = Study(name="mini_lambda", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base={"num_negatives": 64})


def _start_ray():
    from sslab.engine.placement import TRIAL_RESOURCE

    if not ray.is_initialized():  # (again, after a test that checks a finished study needs no Ray)
        ray.init(num_cpus=2, resources={TRIAL_RESOURCE: 10}, include_dashboard=True, log_to_driver=False)


@pytest.fixture
def ray_local():
    _start_ray()
    yield


@pytest.fixture(scope="module", autouse=True)
def _ray_down_after_the_module():
    yield
    ray.shutdown()


def test_bad_values_are_refused_before_any_ray_work(tmp_path):
    bad = Study(name="bad", method="pirl", grid={"loss_weight": [0.5, 1.5]})
    with pytest.raises(ValueError, match=r"loss_weight.*1\.5"):
        run_study(bad, profile=SMALL, root=tmp_path, quiet=True)
    unknown = Study(name="bad", method="pirl", grid={"lambda": [0.5]})
    with pytest.raises(ValueError, match="no hyperparameter"):
        run_study(unknown, profile=SMALL, root=tmp_path, quiet=True)
    assert not ray.is_initialized()


def test_method_config_precedence_method_profile_then_profile_then_base_then_point():
    profile = SMALL.with_overrides(method_defaults={"loss_form": "infonce", "temperature": 0.2, "not_a_pirl_field": 1})
    study = Study(name="s", method="pirl", grid={"temperature": [0.1]}, base={"loss_form": "nce", "bank_momentum": 0.9})
    config = study.method_config("pirl", {"temperature": 0.1}, profile)
    assert config == {"loss_form": "nce", "temperature": 0.1, "bank_momentum": 0.9}
    plain = Study(name="s", method="pirl", grid={})
    assert plain.method_config("pirl", {}, profile)["loss_form"] == "infonce"
    # the method's own adaptation to the local profile sits under everything a study or profile says
    from sslab.plan.profiles import get_profile

    local = get_profile("local")
    from sslab.methods.contrastive.pirl import PIRL

    assert plain.method_config("pirl", {}, local) == PIRL.profile_defaults["local"]
    assert PIRL.profile_defaults["local"]["base_lr"] != 0.7
    assert Study(name="s", method="pirl", base={"base_lr": 0.7}).method_config("pirl", {}, local)["base_lr"] == 0.7


def test_methods_are_a_grid_dimension_and_knobs_must_exist_in_each():
    both = Study(name="two", methods={"pirl": {"loss_weight": 0.25}, "simclr": {}}, grid={"temperature": [0.1, 0.2]})
    assert both.configurations() == [("pirl", {"temperature": 0.1}), ("pirl", {"temperature": 0.2}),
                                     ("simclr", {"temperature": 0.1}), ("simclr", {"temperature": 0.2})]
    assert both.method_config("pirl", {"temperature": 0.1}, SMALL)["loss_weight"] == 0.25
    assert "loss_weight" not in both.method_config("simclr", {"temperature": 0.1}, SMALL)
    both.validate(SMALL)
    lacking = Study(name="neg", methods={"pirl": {}, "simclr": {}}, grid={"num_negatives": [16]})
    with pytest.raises(ValueError, match=r"simclr has no hyperparameter\(s\) \['num_negatives'\] \(methods that have them: npid, pirl\)"):
        lacking.validate(SMALL)
    with pytest.raises(ValueError, match="either method"):
        Study(name="x")


def test_a_profile_may_train_fewer_of_the_methods_and_no_method_it_lacks():
    study = Study(name="three", methods={"simclr": {}, "moco": {}, "byol": {}}, grid={"encoder_momentum": [0.0]},
                  profile_methods={"local": ("byol", "simclr")})
    assert [m for m, _ in study.configurations("local")] == ["simclr", "byol"]  # declaration order
    assert [m for m, _ in study.configurations("cifar")] == ["simclr", "moco", "byol"]
    assert study.methods_for(None) == ["simclr", "moco", "byol"]
    with pytest.raises(ValueError, match=r"profile_methods\['local'\] = \['npid'\] must be a non-empty subset"):
        Study(name="bad", methods={"simclr": {}}, profile_methods={"local": ("npid",)})
    moco = study.with_method("moco")  # --method of a study comparing methods: that one alone, whatever the profile
    assert moco.name == "three" and [m for m, _ in moco.configurations("local")] == ["moco"]
    assert moco.configurations("cifar") == [c for c in study.configurations("cifar") if c[0] == "moco"]
    assert moco.method_names == study.method_names  # its findings and summaries still compare methods
    with pytest.raises(ValueError, match=r"compares methods \['simclr', 'moco', 'byol'\]; --method picks one of them, not 'npid'"):
        study.with_method("npid")


def test_a_method_may_run_as_several_variants_whose_settings_become_knobs():
    study = Study(name="variants", methods={"pirl": [{"loss_weight": 0.0}, {"loss_weight": 0.5, "embedding_dim": 64}],
                                            "simclr": {"projection_dim": 32}}, grid={"temperature": [0.1, 0.2]})
    assert study.knobs == ["temperature", "loss_weight", "embedding_dim"]
    assert study.configurations() == [
        ("pirl", {"loss_weight": 0.0, "temperature": 0.1}), ("pirl", {"loss_weight": 0.0, "temperature": 0.2}),
        ("pirl", {"loss_weight": 0.5, "embedding_dim": 64, "temperature": 0.1}),
        ("pirl", {"loss_weight": 0.5, "embedding_dim": 64, "temperature": 0.2}),
        ("simclr", {"temperature": 0.1}), ("simclr", {"temperature": 0.2})]
    # a variant's settings reach its configuration; a plain entry stays the method's base
    assert study.method_config("pirl", study.configurations()[2][1], SMALL)["embedding_dim"] == 64
    assert study.method_config("simclr", {"temperature": 0.1}, SMALL)["projection_dim"] == 32
    specs = Specs(study, SMALL, {"dataset": "cifar10"})
    assert len({specs.spec(m, p, 0).trial_id for m, p in study.configurations()}) == 6
    # a search's proposal carries every knob; None marks one its method lacks, and the trial never sees it
    assert specs.of_tune_config({"method": "simclr", "loss_weight": None, "temperature": 0.1, "seed": 1}) == (
        specs.spec("simclr", {"temperature": 0.1}, 1))
    study.validate(SMALL)
    with pytest.raises(ValueError, match=r"npid has no hyperparameter\(s\) \['transform_that_is_not'\]"):
        Study(name="typo", methods={"npid": [{"transform_that_is_not": 1}]}).validate(SMALL)
    with pytest.raises(ValueError, match=r"methods\['pirl'\] must be a dict of settings or a non-empty list"):
        Study(name="empty", methods={"pirl": []})


def test_method_flag_moves_a_study_to_another_method_or_refuses_naming_the_knob(tmp_path):
    import subprocess
    import sys

    moved = STUDY.with_method("npid")
    assert moved.name == "mini_lambda-npid" and moved.method_names == ["npid"]
    assert STUDY.with_method("pirl") is STUDY
    env = {**os.environ, "SSLAB_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "studies/pirl_negatives.py", "--method", "simclr"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 2
    assert done.stdout.strip().splitlines()[-1].startswith(
        "pirl_negatives-simclr: error: study 'pirl_negatives-simclr': simclr has no hyperparameter(s) ['num_negatives']")
    assert not (tmp_path / "pirl_negatives-simclr").exists() or not any((tmp_path / "pirl_negatives-simclr").iterdir())


def test_a_local_results_path_is_refused_on_a_multi_machine_cluster(ray_local, tmp_path, monkeypatch):
    from sslab.engine import placement

    two_machines = placement.ClusterShape(nodes=[
        placement.Node("a", "10.0.0.1", {"CPU": 0}, {}), placement.Node("b", "10.0.0.2", {"CPU": 8}, {}),
    ])
    monkeypatch.setattr(placement, "cluster_shape", lambda: two_machines)
    monkeypatch.delenv(placement.SHARED_ENV, raising=False)
    with pytest.raises(placement.CannotPlace, match="local path.*2 machines"):
        run_study(STUDY, profile=SMALL, root=tmp_path, data_dir=tmp_path / "no-data-here", quiet=True)
    # refused before any work: no data was looked for (it is not there), no baseline, no trial
    assert not any((tmp_path / "mini_lambda").rglob("*.parquet"))


@dataclass
class StudyRun:
    root: Path
    trials: pd.DataFrame  # what run_study returned
    new_controllers: set  # the Train controllers and trial actors the run started
    new_trial_actors: set


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """STUDY run once per worker setting (``study_run(workers)``) and kept for the module: the
    store test checks what it wrote, the dashboard test reads the same store."""
    runs: dict[int, StudyRun] = {}

    def ids(class_name):
        return {a.actor_id for a in faults.actors(class_name)}

    def run(workers: int) -> StudyRun:
        if workers not in runs:
            _start_ray()
            root = tmp_path_factory.mktemp(f"study-{workers}-workers")
            controllers, trial_actors = ids("TrainController"), ids("ImplicitFunc")
            trials = run_study(STUDY, profile=SMALL.with_overrides(num_workers=workers), root=root, quiet=True)
            runs[workers] = StudyRun(root, trials, ids("TrainController") - controllers,
                                     ids("ImplicitFunc") - trial_actors)
        return runs[workers]

    return run


@needs_cifar
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "torch-trainer"])
def test_study_writes_the_store_and_resumes_without_rerunning(ray_local, study_run, workers):
    run = study_run(workers)
    root, trials = run.root, run.trials
    new_controllers, new_trial_actors = run.new_controllers, run.new_trial_actors
    if workers == 0:  # no Ray Train run at all, and one trial process served both trials in turn
        assert not new_controllers and len(new_trial_actors) == 1
    else:  # one TorchTrainer per trial
        assert len(new_controllers) == 2
    assert sorted(trials.trial_id.map(name_of)) == [trial_name("pirl", {"loss_weight": w}, 0) for w in (0.0, 1.0)]
    assert list(trials.status) == ["ok", "ok"], trials.error.tolist()
    for column in ["method", "seed", "error", "config/loss_weight", "config/temperature", "knn_top1",
                   "probe_conv1_top1", "probe_res5_top1", "invariance_l2_mean", "wall_s", "images_seen"]:
        assert column in trials, column
    assert (trials.images_seen == 2 * 4 * 50).all()
    store = ResultsStore(root, "mini_lambda")
    epochs = store.read("epochs")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[0, 1], [0, 1]]
    baselines = store.read("baselines")
    assert list(baselines.seed) == [0] and {"knn_top1", "probe_res5_top1"} <= set(baselines)
    invariance = store.read("invariance")
    assert invariance.groupby("trial_id").size().tolist() == [20, 20]

    resumed = trials
    # Everything done: a third run starts no trial at all and needs no Ray (it reads the data, whose
    # fingerprint is part of every trial's specification: changed data would be other trials)
    ray.shutdown()
    final = run_study(STUDY, profile=SMALL.with_overrides(num_workers=workers), root=root, quiet=True)
    pd.testing.assert_frame_equal(final, resumed)
    assert not ray.is_initialized()



# ------------------------------------------------------- the dashboard on the store a real study wrote

APP = Path(__file__).resolve().parents[2] / "src" / "sslab" / "dashboard" / "app.py"


def _plain(value):
    """A plotly trace's JSON with plotly's base64 typed arrays ({"bdata", "dtype"}) as lists."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.tolist() if hasattr(value, "tolist") else value


def _charts(app) -> list[tuple[list[dict], object]]:
    """Every plotly chart of the page: its traces (plain JSON) and its layout."""
    import plotly.io as pio

    figures = [pio.from_json(chart.proto.spec) for chart in app.get("plotly_chart")]
    return [([_plain(t.to_plotly_json()) for t in f.data], f.layout) for f in figures]


@needs_cifar
def test_the_dashboard_reads_and_draws_the_store_a_real_study_wrote(study_run, monkeypatch):
    """The dashboard's reader and every page on the store ``run_study`` wrote (not a hand-made one),
    checked against the study's definition and the rows the platform itself read back: a writer
    and a reader that disagree on a column, a table or study.json fail here."""
    from streamlit.testing.v1 import AppTest

    from sslab.dashboard import store as reader
    from sslab.results import metrics

    run = study_run(0)
    root = str(run.root)
    grid = STUDY.grid["loss_weight"]
    expected_ids = sorted(trial_name("pirl", {"loss_weight": w}, 0) for w in grid)

    # ---- the reader: every table, with the trials the study ran
    found = reader.scan(root)
    assert list(found) == [STUDY.name]
    data = reader.read_study(root, STUDY.name, found[STUDY.name])
    assert data.problem is None, data.problem
    assert (data.kind, data.metric, data.knobs, data.total) == ("grid", metrics.KNN, ["loss_weight"], len(grid))
    trials = by_name(data.trials)
    written = by_name(run.trials)
    assert sorted(trials.index) == expected_ids == sorted(written.index)
    assert sorted(data.trials.trial_id) == sorted(run.trials.trial_id)
    assert (trials["status"] == "ok").all() and (trials["method"] == "pirl").all() and (trials["seed"] == 0).all()
    assert sorted(trials["config/loss_weight"]) == sorted(grid)
    for column in (metrics.KNN, metrics.INVARIANCE, metrics.probe("res5")):
        assert column in trials, f"the dashboard finds no {column} column in the trials table"
        assert trials[column].notna().all(), column
        pd.testing.assert_series_equal(trials[column].sort_index(), written[column].sort_index())
    assert {t: trials.loc[t, "label"] for t in expected_ids} == {
        trial_name("pirl", {"loss_weight": w}, 0): f"{STUDY.name} · loss_weight={w:g} seed 0" for w in grid}
    epochs = data.epochs
    assert {"key", "label", "status", "loss"} <= set(epochs) and epochs["key"].notna().all()
    assert sorted(epochs.groupby("trial_id", observed=True)["epoch"].apply(list).tolist()) == [[0, 1], [0, 1]]
    invariance = data.invariance
    assert "distance" in invariance and invariance["key"].notna().all() and invariance["distance"].notna().all()
    assert invariance.groupby("trial_id", observed=True).size().tolist() == [20, 20]
    assert not data.baselines.empty and data.baselines[metrics.KNN].notna().all()
    status = reader.status_of(data)
    best = written[metrics.KNN].idxmax()
    assert (status.state, status.done, status.counts) == ("complete", len(grid), {"ok": len(grid)})
    assert status.best == f"loss_weight={written.loc[best, 'config/loss_weight']:g}"
    assert status.best_value == pytest.approx(written.loc[best, metrics.KNN])

    # ---- every page, one session switching page after page as a reader does
    monkeypatch.setenv("SSLAB_RESULTS", root)
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    charts = {}
    for page in ("studies", "ablation", "probes", "invariance", "training", "search", "trials"):
        app.switch_page(f"views/{page}.py").run()
        assert not app.exception, (page, [e.value for e in app.exception])
        assert app.title[0].value and not app.warning, (page, [w.value for w in app.warning])
        stopped = [i.value for i in app.info if i.value.startswith("No ") or "vary no" in i.value]
        assert not stopped, (page, stopped)  # the explanations of an empty or unreadable store
        charts[page] = _charts(app)
        if page == "studies":
            row = app.dataframe[0].value.set_index("study").loc[STUDY.name]
            assert (row["state"], row["trials"], row["ok"]) == ("complete", f"{len(grid)}/{len(grid)}", len(grid))
            assert row[f"best {metrics.KNN}"] == pytest.approx(written.loc[best, metrics.KNN])
        if page == "trials":
            shown = by_name(app.dataframe[0].value)
            assert sorted(shown.index) == expected_ids
            pd.testing.assert_series_equal(shown[metrics.KNN].sort_index(), written[metrics.KNN].sort_index())
    assert {page: len(drawn) for page, drawn in charts.items()} == {
        "studies": 0, "ablation": 1, "probes": 1, "invariance": 1, "training": 1,
        "search": 2, "trials": 0}  # (search: importance needs three trials)

    by_weight = written.set_index("config/loss_weight").sort_index()
    (curve,), layout = charts["ablation"][0]  # kNN against λ, one point per grid value
    assert curve["name"] == STUDY.name and curve["x"] == sorted(grid)
    assert curve["y"] == pytest.approx(by_weight[metrics.KNN].tolist())
    baseline = data.baselines[metrics.KNN].mean()
    assert any(shape.y0 == pytest.approx(baseline) for shape in layout.shapes)

    traces, _ = charts["probes"][0]  # the trained trials' profile and the untrained backbone's
    taps = [metrics.probe_tap(c) for c in metrics.probe_columns(written.columns)]
    assert len(traces) == 2 and all(t["x"] == taps for t in traces)
    assert traces[0]["y"] == pytest.approx([written[metrics.probe(t)].mean() for t in taps])

    traces, _ = charts["invariance"][0]  # one ECDF per trial over its 20 samples
    assert len(traces) == len(grid) and all(len(t["x"]) == 20 for t in traces)

    traces, _ = charts["training"][0]  # the loss of each trial, epoch by epoch
    assert len(traces) == len(grid) and all(t["x"] == [0, 1] for t in traces)
    loss = {f"{STUDY.name} · {trials.loc[t, 'label'].split(' · ')[1]}": epochs[epochs["trial_id"].map(name_of) == t]
            .sort_values("epoch")["loss"].tolist() for t in expected_ids}
    assert {t["name"]: pytest.approx(t["y"]) for t in traces} == loss

    (history, _), (parallel, _) = charts["search"]
    assert sorted(next(t for t in history if t["name"] == "ok")["y"]) == pytest.approx(
        sorted(written[metrics.KNN]))
    assert parallel[0]["type"] == "parcoords"
    assert [d["label"] for d in parallel[0]["dimensions"]] == ["loss_weight", metrics.KNN]

SEARCH = Study(
    name="mini_search", method="pirl", base={"num_negatives": 64},
    search=Search(space={"temperature": FloatDistribution(0.05, 0.5, log=True), "loss_weight": FloatDistribution(0.0, 1.0)},
                  trials=3),
)


def test_search_space_values_are_checked_before_ray(tmp_path):
    bad = Study(name="bad", method="pirl", search=Search(space={"loss_weight": FloatDistribution(0.0, 2.0)}))
    with pytest.raises(ValueError, match="loss_weight"):
        run_study(bad, profile=SMALL, root=tmp_path, quiet=True)
    assert SEARCH.configurations() == [("pirl", {"temperature": 0.07, "loss_weight": 0.5})]  # the paper's defaults first


@needs_cifar
def test_search_starts_from_the_paper_defaults_persists_optuna_and_resumes_within_budget(ray_local, tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    trials = run_study(SEARCH, profile=SMALL, root=tmp_path, quiet=True)
    assert len(trials) == 3 and trials.trial_id.is_unique
    assert set(trials.status) <= {"ok", "stopped"}, trials.error.tolist()
    first = trials.sort_values("finished_at").iloc[0]
    assert (first["config/temperature"], first["config/loss_weight"], first.status) == (0.07, 0.5, "ok")
    stopped = trials[trials.status == "stopped"]
    assert (stopped.epochs < SMALL.epochs).all() and stopped.knn_top1.isna().all()
    assert (trials.device_s > 0).all() and (trials.device == "cpu").all()

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "mini_search" / "optuna.journal")))
    name = ResultsStore(tmp_path, "mini_search").metadata()["optuna_study"]  # one per setting
    assert optuna.get_all_study_names(storage) == [name] and name.startswith("mini_search-")
    optuna_study = optuna.load_study(study_name=name, storage=storage)  # Optuna's own tools read it
    assert len(optuna_study.trials) == 3

    more = run_study(SEARCH, profile=SMALL, root=tmp_path, trials=4, quiet=True)  # a larger budget: one more trial
    assert len(more) == 4 and more.trial_id.is_unique
    assert set(trials.trial_id) < set(more.trial_id)
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 4


INTERRUPTED = Study(name="interrupted", method="pirl", grid={"loss_weight": [0.0, 0.5, 1.0]}, base={"num_negatives": 64})
_DRIVER = f"""
import sys
from sslab.plan.profiles import Profile
from sslab.engine.runner import run_study
from sslab.plan.study import Study
run_study({INTERRUPTED!r}, profile={SMALL!r}, root=sys.argv[1], quiet=True)
"""


@needs_cifar
def test_an_interrupted_study_resumes_with_no_duplicate_and_no_gap(ray_local, tmp_path):
    """Ctrl-C the study's driver once its first trial is in the store, then run it again."""
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[2]
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, str(tmp_path)], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trials_path = tmp_path / "interrupted" / "trials"  # the folder of the trials' rows, one file each
    deadline = time.monotonic() + 300
    while not any(trials_path.glob("*.parquet")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, driver.communicate()[0][-3000:]
    driver.send_signal(signal.SIGINT)
    output = driver.communicate(timeout=120)[0]
    before = ResultsStore(tmp_path, "interrupted").read("trials")
    assert 1 <= len(before) < 3, output[-3000:]  # interrupted part-way

    after = run_study(INTERRUPTED, profile=SMALL, root=tmp_path, quiet=True)
    expected = sorted(trial_name("pirl", {"loss_weight": w}, 0) for w in (0.0, 0.5, 1.0))
    assert sorted(after.trial_id.map(name_of)) == expected  # no gap, no duplicate
    assert (after.status == "ok").all(), after.error.tolist()
    kept = after.set_index("trial_id").loc[before.trial_id]  # the very same ids: nothing about them changed
    assert list(kept.finished_at) == list(before.finished_at)  # finished trials were not rerun
    epochs = ResultsStore(tmp_path, "interrupted").read("epochs")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[0, 1]] * 3


@needs_cifar
def test_a_killed_trial_process_resumes_from_its_epoch_checkpoint(ray_local, tmp_path):
    study = Study(name="killed", method="pirl", grid={"loss_weight": [0.5]}, base={"num_negatives": 64})
    trials, seen = faults.run_study_killing(study, SMALL.with_overrides(epochs=4), tmp_path,
                                            victim="ImplicitFunc", after_epoch=1)
    row = trials.iloc[0]
    assert row.status == "ok" and row.restarts == 1, row.error  # Tune started it again, from a checkpoint
    epochs = ResultsStore(tmp_path, "killed").read("epochs").sort_values("epoch").set_index("epoch")
    assert epochs.index.tolist() == [0, 1, 2, 3]  # every epoch once: no gap, no rerun
    before = seen["before"].sort_values("epoch").set_index("epoch")
    pd.testing.assert_series_equal(epochs.loss.loc[before.index], before.loss)  # restored, not retrained
    assert (epochs.restarts.loc[before.index] == 0).all() and (epochs.restarts.loc[before.index.max() + 1:] == 1).all()
    assert row.images_seen == 4 * 4 * 50  # the lost epoch is not counted twice


@needs_cifar
def test_a_step_budget_trains_the_epochs_it_comes_to_on_the_data_and_says_so(ray_local, tmp_path, capsys,
                                                                              monkeypatch):
    """100 images in batches of 50 are 2 steps an epoch: a 5-step budget is 3 epochs (6 steps),
    whatever the profile's nominal epochs; the metadata and the output say so, and a rerun with
    nothing left to do keeps the epochs it came to."""
    # (and a busy machine is said before any work: another study on the same cores)
    zoo = Busy(4242, "python studies/pretext/pretext_zoo.py", float(os.cpu_count()))
    monkeypatch.setattr(runner, "other_work", lambda: [zoo])
    study = Study(name="budget", method="pirl", grid={"loss_weight": [0.5]}, base={"num_negatives": 64})
    profile = SMALL.with_overrides(train_subset=100, epochs=2, steps=5)
    trials = run_study(study, profile=profile, root=tmp_path)
    assert list(trials.status) == ["ok"], trials.error.tolist()
    assert trials.images_seen.tolist() == [3 * 2 * 50]
    epochs = ResultsStore(tmp_path, "budget").read("epochs")
    assert epochs.epoch.tolist() == [0, 1, 2]
    out = capsys.readouterr().out
    assert "5 optimiser steps = 3 epoch(s) of 100 images (2 steps of 50; 6 in all)" in out
    assert "python studies/pretext/pretext_zoo.py (pid 4242" in out and out.index("pid 4242") < out.index("random-init")
    store = ResultsStore(tmp_path, "budget")
    assert store.metadata()["profile"]["epochs"] == 3 and store.metadata()["profile"]["steps"] == 5
    ray.shutdown()
    run_study(study, profile=profile, root=tmp_path, data_dir=tmp_path / "no-data-here", quiet=True)
    assert store.metadata()["profile"]["epochs"] == 3  # not the nominal 2: nothing was loaded to count


@needs_cifar
def test_a_multi_objective_search_trades_knn_against_compute(ray_local, tmp_path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    study = Study(name="pareto", method="pirl", base={"num_negatives": 64},
                  metric=["knn_top1", "device_s"], mode=["max", "min"],
                  search=Search(space={"loss_weight": FloatDistribution(0.0, 1.0)}, trials=2))
    trials = run_study(study, profile=SMALL, root=tmp_path, quiet=True)
    assert len(trials) == 2 and (trials.status == "ok").all(), trials.error.tolist()  # no ASHA on two objectives
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "pareto" / "optuna.journal")))
    pareto = optuna.load_study(study_name=ResultsStore(tmp_path, "pareto").metadata()["optuna_study"], storage=storage)
    assert [d.name for d in pareto.directions] == ["MAXIMIZE", "MINIMIZE"]
    # Optuna saw each trial's (kNN, device seconds) exactly as the store records them ...
    seen = {round(t.params["loss_weight"], 9): tuple(t.values) for t in pareto.trials}
    recorded = {round(w, 9): (k, d) for w, k, d in zip(trials["config/loss_weight"], trials.knn_top1, trials.device_s)}
    assert seen.keys() == recorded.keys() and all(seen[w] == pytest.approx(recorded[w]) for w in seen)
    # ... and its front is the non-dominated set of the store's rows (more kNN is better, less compute is)
    def dominated(a, b):
        return b[0] >= a[0] and b[1] <= a[1] and b != a
    front = {w for w, v in recorded.items() if not any(dominated(v, other) for other in recorded.values())}
    assert {round(t.params["loss_weight"], 9) for t in pareto.best_trials} == front


def test_the_janitor_frees_only_orphaned_sslab_worker_groups(ray_local):
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from sslab.engine.placement import TRAIN_LABEL_SELECTOR, OrphanedWorkerGroupJanitor

    orphan = placement_group([{"CPU": 0.01}], bundle_label_selector=[TRAIN_LABEL_SELECTOR])
    busy = placement_group([{"CPU": 0.01}], bundle_label_selector=[TRAIN_LABEL_SELECTOR])
    foreign = placement_group([{"CPU": 0.01}])  # not an sslab Train group: never touched
    ray.get([orphan.ready(), busy.ready(), foreign.ready()])

    @ray.remote(num_cpus=0.01)
    class Worker:
        def ping(self):
            return "ok"

    worker = Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(busy)).remote()
    assert ray.get(worker.ping.remote()) == "ok"
    janitor = OrphanedWorkerGroupJanitor(grace_s=0.5)
    assert janitor.sweep() == []  # first sight of an unused group starts its grace period
    time.sleep(1.0)
    assert janitor.sweep() == [orphan.id.hex()]
    states = {pg_id: info["state"] for pg_id, info in placement_group_table().items()}
    assert states[orphan.id.hex()] == "REMOVED"
    assert states[busy.id.hex()] == states[foreign.id.hex()] == "CREATED"
    ray.kill(worker)
    for group in (busy, foreign):
        remove_placement_group(group)


@pytest.mark.parametrize("flags, says", [
    (["--subset", "3"], "--subset 3 is smaller than one training batch of profile 'local' (64 images × 1 worker(s)): use --subset 64"),
    (["--profile", "cifar"], "profile 'cifar' trains on GPUs, and this machine has none"),
])
def test_what_cannot_run_is_refused_in_one_line_before_ray_starts(tmp_path, flags, says):
    import subprocess
    import sys

    import torch

    if "cifar" in flags and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"SSLAB_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "studies/pirl_lambda.py", *flags], env=env, cwd=Path(__file__).parents[2],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    # one line and nothing else: Ray never started (ray.init would have logged), no trace back
    assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stdout[-2000:]
    assert not any(tmp_path.iterdir())  # nothing written to the store


def test_views_that_cannot_cut_the_profiles_image_size_are_refused_before_ray(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_init_ray", lambda *_: pytest.fail("Ray was started"))
    tiny_images = SMALL.with_overrides(image_size=8)
    with pytest.raises(ValueError, match="image_size 8 is too small for a 3x3 jigsaw.*image_size >= 12"):
        run_study(STUDY, profile=tiny_images, root=tmp_path, quiet=True)
    assert not (tmp_path / STUDY.name).exists()  # nothing written
    Study(name="simclr_only", method="simclr", grid={"temperature": [0.5]}).validate(tiny_images)  # no jigsaw: fine


@needs_cifar
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "torch-trainer"])
def test_a_nan_trial_costs_one_attempt_and_the_study_goes_on(ray_local, tmp_path, workers):
    """lr 1e30 makes the second step's loss NaN, every time: the trial is recorded failed with the
    epoch and step at once, not retried max_failures times; the other trial still runs."""
    study = Study(name="nan", method="pirl", grid={"base_lr": [1e30, 0.05]}, base={"num_negatives": 64})
    trials = run_study(study, profile=SMALL.with_overrides(num_workers=workers, max_failures=2), root=tmp_path,
                       quiet=True).set_index("config/base_lr")
    failed, ok = trials.loc[1e30], trials.loc[0.05]
    assert failed.status == "failed" and failed.error.startswith("loss became NaN at epoch 0 step 1"), failed.error
    assert failed.restarts == 0 and failed.epochs == 0  # one attempt: Tune started it once
    assert ok.status == "ok", ok.error
