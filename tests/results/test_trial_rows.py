"""The typed trial row: one constructor from a trial's last result, the columns the store has always written."""

import math

import pytest

from sslab.results.rows import TrialRow
from sslab.results.store import ResultsStore

IDENTITY = {"trial_id": "pirl-loss_weight=0.5-seed=1-abc", "setting_id": "s1", "baseline_setting": "b1",
            "method": "pirl", "seed": 1, "config/loss_weight": 0.5, "config/transform": "jigsaw",
            "train/epochs": 2, "eval/knn_k": 200, "data/dataset": "cifar10"}
RESULT = {"epoch": 1, "loss": 8.0, "knn_top1": 0.31, "probe_conv1_top1": 0.2, "probe_res5_top1": 0.4,
          "invariance_l2_mean": 0.9, "lr": 0.1, "images_seen": 640, "train_s": 3.0, "eval_s": 1.0,
          "device_s": 3.5, "cpu_steal": 0.2, "restarts": 1, "history": [], "invariance_samples": [0.8],
          "provenance": {"hostname": "node-1", "torch": "2.5"}}
SPEC_COLUMNS = list(IDENTITY)


def _row(status, result=RESULT, **kwargs):
    return TrialRow.from_result(IDENTITY, result, status=status, epochs=kwargs.pop("epochs", 2), wall_s=5.0,
                                device="cpu", finished_at=100.0, **kwargs)


def test_a_finished_trials_record_has_its_evaluation_and_every_timing():
    record = _row("ok", tune_failures=0).to_record()
    assert list(record) == SPEC_COLUMNS + [
        "status", "error", "knn_top1", "probe_conv1_top1", "probe_res5_top1", "invariance_l2_mean", "loss", "epochs",
        "wall_s", "train_s", "eval_s", "device_s", "cpu_steal", "device", "images_seen", "restarts", "finished_at",
        "host/hostname", "host/torch"]
    assert record["knn_top1"] == 0.31 and record["restarts"] == 1 and record["host/hostname"] == "node-1"
    assert (record["status"], record["error"], record["epochs"], record["finished_at"]) == ("ok", "", 2, 100.0)


def test_a_stopped_trial_keeps_its_per_epoch_knn_apart_and_no_evaluation():
    record = _row("stopped", epochs=1, error="stopped early after epoch 1 of 2", tune_failures=3).to_record()
    assert list(record)[len(SPEC_COLUMNS):len(SPEC_COLUMNS) + 3] == ["monitor_knn_top1", "status", "error"]
    assert record["monitor_knn_top1"] == 0.31 and "knn_top1" not in record and "probe_res5_top1" not in record
    assert record["restarts"] == 3 and record["train_s"] == 3.0 and record["cpu_steal"] == 0.2


def test_a_failed_trial_records_what_it_computed_and_no_evaluation_or_time_split():
    record = _row("failed", {"epoch": 0, "loss": 7.5, "images_seen": 128}, epochs=1, error="loss became NaN").to_record()
    assert list(record) == SPEC_COLUMNS + ["status", "error", "loss", "epochs", "wall_s", "device_s", "device",
                                           "images_seen", "restarts", "finished_at"]
    assert math.isnan(record["device_s"]) and record["images_seen"] == 128 and record["restarts"] == 0


def test_the_row_is_stored_as_its_record(tmp_path):
    store = ResultsStore(tmp_path, "s")
    row = _row("ok")
    store.record_trial(row)
    stored = store.read("trials").iloc[0]
    assert {k: stored[k] for k in ("trial_id", "knn_top1", "host/torch", "config/transform")} == {
        k: row.to_record()[k] for k in ("trial_id", "knn_top1", "host/torch", "config/transform")}


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status"):
        _row("done")
