"""Reading the results store for the dashboard: discovery, states, labels and every broken store."""

import math
import shutil
import time

import pytest

import store_factory
from sslab.dashboard import store


def _load(root, name):
    return store.read_study(str(root), name, store.scan(str(root))[name])


def test_scan_lists_study_folders_only(fixture_root, tmp_path):
    assert list(store.scan(str(fixture_root))) == ["pirl_lambda", "pirl_old", "pirl_running", "pirl_search"]
    (tmp_path / "not_a_study").mkdir()
    (tmp_path / ".hidden").mkdir()
    assert store.scan(str(tmp_path)) == {}
    assert store.scan(str(tmp_path / "missing")) == {}


def test_stamp_changes_exactly_when_the_study_writes(tmp_path):
    written = store_factory.write_grid(tmp_path, seeds=1, fail=None)
    before = store.scan(str(tmp_path))["pirl_lambda"]
    assert store.scan(str(tmp_path))["pirl_lambda"] == before
    time.sleep(0.01)
    written.record_epochs({"pirl-extra": [{"epoch": 0, "loss": 1.0}]})
    after = store.scan(str(tmp_path))["pirl_lambda"]
    assert dict((n, m) for n, m, _ in after)["epochs/"] != dict((n, m) for n, m, _ in before)["epochs/"]


def test_grid_study_reads_with_labels_and_status(fixture_root):
    data = _load(fixture_root, "pirl_lambda")
    assert data.problem is None and data.kind == "grid" and data.knobs == ["loss_weight"]
    assert len(data.trials) == 9 and set(data.trials["study"]) == {"pirl_lambda"}
    assert "pirl_lambda · loss_weight=0.5 seed 1" in set(data.trials["label"])
    assert data.trials["key"].is_unique
    # the trial-level tables carry the same key and label
    assert set(data.epochs["key"]) == set(data.trials["key"])
    assert set(data.invariance["key"]) <= set(data.trials["key"])
    status = store.status_of(data)
    assert status.state == "complete" and (status.done, status.total) == (9, 9)
    assert status.counts == {"ok": 8, "failed": 1}
    # the best configuration is λ = 1 over its 2 surviving seeds: (0.30 + 0.31) / 2
    assert status.best == "loss_weight=1" and status.best_value == pytest.approx(0.305)
    assert status.best_spread.endswith("(n=2)")
    assert status.device_s == pytest.approx(9 * 80.0)
    assert status.cpu_steal == pytest.approx(0.1)  # every trial's share, weighted by its wall time


def test_the_findings_a_study_declares_are_judged_from_its_trials(fixture_root):
    verdicts = store.findings_of(_load(fixture_root, "pirl_lambda")).set_index("claim")
    # λ=.5: 0.25, 0.26, 0.27 vs λ=0: 0.20, 0.21, 0.22 — 0.05 apart, spread 0.01 + 0.01
    assert verdicts.loc["λ = 0.5 beats λ = 0", "verdict"] == "reproduced"
    # λ=1 (0.30, 0.31; seed 2 failed) is above λ=0 beyond the spread: the claim is contradicted
    assert verdicts.loc["λ = 0 beats λ = 1", "verdict"] == "contradicted"
    assert verdicts.loc["λ = 0 beats λ = 1", "worse_n"] == 2


def test_running_trial_appears_and_study_counts_as_running(fixture_root):
    data = _load(fixture_root, "pirl_running")
    assert list(data.trials["status"]) == ["running"] and list(data.trials["epochs"]) == [2]
    status = store.status_of(data)
    assert status.state == "running" and status.done == 0 and status.counts == {"running": 1}
    # the same store, an hour without a write, is interrupted
    assert store.status_of(data, now=data.updated + 3600).state == "interrupted"


def test_old_schema_version_is_a_message_not_an_error(fixture_root):
    data = _load(fixture_root, "pirl_old")
    assert data.trials.empty and "schema version 0" in data.problem and "rerun" in data.problem
    assert store.status_of(data).state == "unreadable"


def test_corrupt_table_names_the_file_and_keeps_the_rest(tmp_path):
    store_factory.write_grid(tmp_path, seeds=1, fail=None)
    (tmp_path / "pirl_lambda" / "epochs.parquet").write_bytes(b"PAR1 truncated")
    data = _load(tmp_path, "pirl_lambda")
    assert "epochs.parquet cannot be read" in data.problem
    assert data.epochs.empty and len(data.trials) == 3


def test_missing_study_json_guesses_the_knobs(tmp_path):
    store_factory.write_grid(tmp_path, seeds=1, fail=None)
    (tmp_path / "pirl_lambda" / "study.json").unlink()
    data = _load(tmp_path, "pirl_lambda")
    assert "study.json is missing" in data.problem
    assert data.knobs == ["loss_weight"] and len(data.trials) == 3
    assert store.status_of(data).total is None


def test_study_json_only_is_not_started(tmp_path):
    store_factory.write_half_written(tmp_path)
    shutil.rmtree(tmp_path / "pirl_running" / "epochs")
    data = _load(tmp_path, "pirl_running")
    assert data.trials.empty and data.problem is None
    assert store.status_of(data, now=time.time() + 3600).state == "not started"
    assert math.isnan(store.status_of(data).best_value)
