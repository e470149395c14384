"""The Tune callback writes finished and failed trials into the store as they happen."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from sslab.plan.profiles import Profile
from sslab.results.store import ResultsStore
from sslab.plan.spec import Specs, name_of
from sslab.plan.study import Study
from sslab.engine.tune_callbacks import StoreCallback

PROFILE = Profile(name="p", epochs=2, method_defaults={"loss_form": "infonce"})
STUDY = Study(name="s", method="pirl", grid={"loss_weight": [0.0, 0.5]})
SPECS = Specs(STUDY, PROFILE, {"dataset": "cifar10"})
HALF = SPECS.spec("pirl", {"loss_weight": 0.5}, 1).trial_id


class _Silent:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _trial(loss_weight, last_result, error=None):
    return SimpleNamespace(
        trial_id=f"t{loss_weight}",
        config={"method": "pirl", "loss_weight": loss_weight, "seed": 1},
        last_result=last_result,
        get_error=lambda: error,
        num_failures=0,
    )


def test_finished_trial_row_has_config_metrics_and_invariance(tmp_path):
    store = ResultsStore(tmp_path, "s")
    callback = StoreCallback(store, SPECS, _Silent())
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    history = [{"epoch": 0, "loss": 9.0}, {"epoch": 1, "loss": 8.0}]
    callback.on_trial_result(0, [], trial, {"epoch": 1, "loss": 8.0, "history": history})
    trial.last_result = {
        "epoch": 1, "loss": 8.0, "knn_top1": 0.31, "probe_res5_top1": 0.4, "invariance_l2_mean": 0.9,
        "invariance_samples": [0.8, 1.0], "images_seen": 640, "train_s": 3.0, "device_s": 3.0, "history": history,
        "cpu_steal": 0.2,
    }
    callback.on_trial_complete(0, [], trial)
    (row,) = store.read("trials").to_dict("records")
    assert name_of(row["trial_id"]) == "pirl-loss_weight=0.5-seed=1" and row["status"] == "ok" and row["seed"] == 1
    assert row["trial_id"] == SPECS.spec("pirl", {"loss_weight": 0.5}, 1).trial_id
    assert row["setting_id"] == SPECS.setting_ids[0] and row["train/epochs"] == 2  # how it was made
    assert row["config/loss_weight"] == 0.5 and row["config/loss_form"] == "infonce"  # the profile's default
    assert row["config/temperature"] == pytest.approx(0.07)  # the paper default, recorded
    assert (row["knn_top1"], row["probe_res5_top1"], row["epochs"], row["images_seen"]) == (0.31, 0.4, 2, 640)
    assert (row["device_s"], row["device"], row["cpu_steal"]) == (3.0, "cpu", 0.2)
    assert list(store.read("epochs").loss) == [9.0, 8.0]
    assert list(store.read("invariance").distance) == pytest.approx([0.8, 1.0])


def test_a_trial_stopped_before_its_last_epoch_is_recorded_as_stopped(tmp_path):
    store = ResultsStore(tmp_path, "s")
    trial = _trial(0.0, {"epoch": 0, "loss": 9.0, "knn_top1": 0.18, "images_seen": 320, "device_s": 1.5})
    grid_callback = StoreCallback(store, SPECS, _Silent())
    grid_callback.on_trial_start(0, [], trial)
    grid_callback.on_trial_complete(0, [], trial)  # a grid trial cut short was interrupted: it stays pending
    assert store.read("trials").empty
    callback = StoreCallback(store, SPECS, _Silent(), stops_early=True)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_complete(0, [], trial)  # ASHA (or the time budget) ended it after epoch 1 of 2
    (row,) = store.read("trials").to_dict("records")
    assert row["status"] == "stopped" and "after epoch 1 of 2" in row["error"]
    assert "knn_top1" not in row and row["monitor_knn_top1"] == 0.18  # the cheap monitor, kept apart
    assert (row["epochs"], row["images_seen"], row["device_s"]) == (1, 320, 1.5)


def test_failed_trial_is_recorded_with_its_cause(tmp_path):
    store = ResultsStore(tmp_path, "s")
    callback = StoreCallback(store, SPECS, _Silent())
    error = RuntimeError("ray.train.WorkerGroupError: ...\nNonFiniteLossError: loss became NaN at epoch 2 step 5 (value nan)")
    trial = _trial(0.0, {"epoch": 1, "loss": 7.5, "images_seen": 128}, error)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_error(0, [], trial)
    (row,) = store.read("trials").to_dict("records")
    assert row["status"] == "failed"
    assert row["error"].startswith("loss became NaN at epoch 2 step 5")
    assert row["epochs"] == 2 and row["images_seen"] == 128  # what was computed is kept


def test_callback_pickles_without_its_live_display(tmp_path):
    import pickle

    callback = StoreCallback(ResultsStore(tmp_path, "s"), SPECS, progress=object())
    clone = pickle.loads(pickle.dumps(callback))
    assert clone.progress is None and clone.store.location == callback.store.location


def test_a_failure_reported_as_the_last_result_is_recorded_failed_with_its_cause(tmp_path):
    store = ResultsStore(tmp_path, "s")
    callback = StoreCallback(store, SPECS, _Silent())
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    trial.last_result = {"failure": "loss became NaN at epoch 1 step 3 (value nan); lower the learning rate",
                         "failed_epoch": 1, "epoch": 0, "knn_top1": float("nan"), "images_seen": 128,
                         "device_s": 2.0, "restarts": 0, "history": [{"epoch": 0, "loss": 9.0}]}
    callback.on_trial_complete(0, [], trial)
    row = store.read("trials").iloc[0]
    assert row.status == "failed" and row.error.startswith("loss became NaN at epoch 1 step 3")
    assert row.epochs == 1 and row.images_seen == 128 and row.restarts == 0
    retried = _trial(0.0, {"epoch": 2, "restarts": 0}, error=RuntimeError("node lost"))
    retried.num_failures = 2  # Tune started it twice more
    callback.on_trial_error(0, [], retried)
    assert store.read("trials").set_index("config/loss_weight").loc[0.0, "restarts"] == 2



def _counting_writes(store) -> list:
    """Count the store's epochs writes; returns the list of writes (the trial keys of each)."""
    writes = []
    record_epochs = store.record_epochs

    def record(histories):
        writes.append(sorted(histories))
        record_epochs(histories)

    store.record_epochs = record
    return writes


def _epoch_rows(store):
    epochs = store.read("epochs")
    return {} if epochs.empty else {k: list(g.epoch) for k, g in epochs.groupby("trial_id")}


def test_every_epoch_report_writes_that_trials_epochs_and_no_other_file(tmp_path):
    """The store rewrote its whole epochs table on every write, so the callback held reports back
    (EPOCHS_WRITE_SHARE) to keep a study's writes from growing as the square of its epochs. Each
    trial's epochs are now a file of their own: every report writes its trial's file at once, and
    leaves the other trials' files as they were."""
    store = ResultsStore(tmp_path, "s")
    writes = _counting_writes(store)
    callback = StoreCallback(store, SPECS, _Silent())
    a, b = _trial(0.0, {}), _trial(0.5, {})
    key_a, key_b = (SPECS.spec("pirl", {"loss_weight": w}, 1).trial_id for w in (0.0, 0.5))
    history = {key_a: [], key_b: []}

    def report(trial, key, epoch):
        history[key] = history[key] + [{"epoch": epoch, "loss": 9.0 - epoch}]
        trial.last_result = {"epoch": epoch, "loss": 9.0 - epoch, "history": history[key]}
        callback.on_trial_result(0, [], trial, trial.last_result)

    for t in (a, b):
        callback.on_trial_start(0, [], t)
    report(a, key_a, 0)
    assert writes == [[key_a]] and _epoch_rows(store) == {key_a: [0]}
    a_file = Path(store.key_path("epochs", key_a))
    for epoch in range(3):
        before = a_file.read_bytes(), a_file.stat().st_mtime_ns
        report(b, key_b, epoch)  # b's report: b's file only
        assert (a_file.read_bytes(), a_file.stat().st_mtime_ns) == before
        assert _epoch_rows(store) == {key_a: list(range(epoch + 1)), key_b: list(range(epoch + 1))}
        report(a, key_a, epoch + 1)
    assert writes == [[key_a]] + [[key_b], [key_a]] * 3  # one write per report, of its own trial
    assert sorted(p.name for p in a_file.parent.iterdir()) == sorted(
        Path(store.key_path("epochs", k)).name for k in (key_a, key_b))
    callback.on_trial_complete(0, [], a)  # not finished (2 epochs of PROFILE): interrupted; its epochs are in
    assert len(writes) == 7 and _epoch_rows(store)[key_a] == [0, 1, 2, 3]


def test_a_trials_row_is_never_written_before_its_epochs(tmp_path):
    store = ResultsStore(tmp_path, "s")
    order = []
    record_epochs, record_trial = store.record_epochs, store.record_trial
    store.record_epochs = lambda histories: (order.append("epochs"), record_epochs(histories))
    store.record_trial = lambda row: (order.append("trial"), record_trial(row))
    callback = StoreCallback(store, SPECS, _Silent())
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    first = [{"epoch": 0, "loss": 9.0}]
    callback.on_trial_result(0, [], trial, {"epoch": 0, "loss": 9.0, "history": first})
    assert list(store.read("epochs").epoch) == [0]  # at once
    full = first + [{"epoch": 1, "loss": 8.0}]
    trial.last_result = {"epoch": 1, "loss": 8.0, "knn_top1": 0.3, "history": full}  # never reported as a result
    callback.on_trial_complete(0, [], trial)
    assert order == ["epochs", "epochs", "trial"]
    assert store.read("trials").status.tolist() == ["ok"] and list(store.read("epochs").epoch) == [0, 1]
    failed = _trial(0.0, {"epoch": 0, "loss": 7.0, "history": [{"epoch": 0, "loss": 7.0}]},
                    error=RuntimeError("node lost"))
    callback.on_trial_error(0, [], failed)  # an error's last history, never reported through a result
    assert sorted(store.read("epochs").loss) == [7.0, 8.0, 9.0] and order[3:] == ["epochs", "trial"]
    callback.on_trial_complete(0, [], trial)  # the store has this history already: only the row again
    assert order[5:] == ["trial"]


def test_epochs_whose_write_failed_are_written_again_with_the_trials_row(tmp_path):
    from sslab.results.store import StoreWriteError

    store = ResultsStore(tmp_path, "s")
    record_epochs, failures = store.record_epochs, [StoreWriteError("disk full")]

    def flaky(histories):
        if failures:
            raise failures.pop()
        record_epochs(histories)

    store.record_epochs = flaky
    callback = StoreCallback(store, SPECS, _Silent())
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    history = [{"epoch": 0, "loss": 9.0}, {"epoch": 1, "loss": 8.0}]
    callback.on_trial_result(0, [], trial, {"epoch": 1, "loss": 8.0, "history": history})
    assert store.read("epochs").empty and "disk full" in callback.unrecorded[HALF]
    trial.last_result = {"epoch": 1, "loss": 8.0, "knn_top1": 0.3, "history": history}
    callback.on_trial_complete(0, [], trial)
    assert list(store.read("epochs").epoch) == [0, 1] and store.read("trials").status.tolist() == ["ok"]
    assert callback.unrecorded == {}  # the retry succeeded: nothing is left for a rerun to record


def test_a_trial_stays_unrecorded_while_any_kind_of_its_writes_last_failed(tmp_path):
    from sslab.results.store import StoreWriteError

    store = ResultsStore(tmp_path, "s")
    record_trial = store.record_trial

    def full_disk(row):
        raise StoreWriteError("disk full")

    store.record_trial = full_disk
    callback = StoreCallback(store, SPECS, _Silent())
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    history = [{"epoch": 0, "loss": 9.0}, {"epoch": 1, "loss": 8.0}]
    trial.last_result = {"epoch": 1, "loss": 8.0, "knn_top1": 0.3, "history": history}
    callback.on_trial_complete(0, [], trial)  # its epochs are written, its row is not
    assert list(store.read("epochs").epoch) == [0, 1] and store.read("trials").empty
    assert "disk full" in callback.unrecorded[HALF]
    store.record_trial = record_trial
    other = _trial(0.0, {"epoch": 1, "loss": 7.0, "knn_top1": 0.2, "history": history})
    callback.on_trial_start(0, [], other)
    callback.on_trial_complete(0, [], other)  # another trial's successful writes clear nothing of the first
    assert list(callback.unrecorded) == [HALF]


def _row_as_before(callback, trial, result, *, failure=None, error=None, now=1234.5):
    """The trial's row as ``StoreCallback`` assembled it by hand before ``TrialRow`` (its code, kept
    here as the reference the typed row must reproduce column for column)."""
    import math

    from sslab.results import metrics as names

    spec = SPECS.of_tune_config(trial.config)
    row = {"trial_id": spec.trial_id, "setting_id": spec.setting_id, "baseline_setting": spec.baseline.setting_id,
           **spec.record()}
    wall_s = max(0.0, float(result.get("wall_s", 0.0)))
    if failure is not None or error is not None:
        row.update(
            status="failed", error=failure if failure is not None else error,
            loss=float(result.get("loss", math.nan)),
            epochs=int(result.get("failed_epoch", 0)) if failure is not None else int(result.get("epoch", -1)) + 1,
            wall_s=wall_s, device_s=float(result.get("device_s", math.nan)),
            device="gpu" if PROFILE.use_gpu else "cpu", images_seen=int(result.get("images_seen", 0)),
            restarts=max(int(result.get("restarts", 0)), int(trial.num_failures)), finished_at=now,
            **{f"host/{k}": v for k, v in (result.get("provenance") or {}).items()},
        )
        return row
    epochs = int(result.get("epoch", -1)) + 1
    finished = epochs >= PROFILE.epochs
    metric_keys = [k for k in result if names.is_evaluation(k)]
    if not finished:
        row[names.MONITOR_KNN] = float(result.get(names.KNN, math.nan))
        metric_keys = []
    row.update(
        status="ok" if finished else "stopped",
        error="" if finished else f"stopped early after epoch {epochs} of {PROFILE.epochs}",
        **{k: float(result[k]) for k in metric_keys},
        loss=float(result.get("loss", math.nan)), epochs=epochs, wall_s=wall_s,
        train_s=float(result.get("train_s", math.nan)), eval_s=float(result.get("eval_s", math.nan)),
        device_s=float(result.get("device_s", math.nan)), cpu_steal=float(result.get("cpu_steal", math.nan)),
        device="gpu" if PROFILE.use_gpu else "cpu", images_seen=int(result.get("images_seen", 0)),
        restarts=max(int(result.get("restarts", 0)), int(trial.num_failures)), finished_at=now,
        **{f"host/{k}": v for k, v in (result.get("provenance") or {}).items()},
    )
    return row


def _same(a, b):
    import math

    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("case", ["ok", "stopped", "failure_result", "error"])
def test_the_stored_row_is_the_one_the_callback_assembled_by_hand(tmp_path, monkeypatch, case):
    """``TrialRow`` replaced the hand-built rows of ``on_trial_complete`` and ``_record_failure``:
    the same trial's stored row has the same columns, in the same order, with the same values."""
    import pyarrow.parquet as pq

    from sslab.engine import tune_callbacks

    monkeypatch.setattr(tune_callbacks.time, "time", lambda: 1234.5)
    result = {"epoch": 1, "loss": 8.0, "knn_top1": 0.31, "probe_res5_top1": 0.4, "probe_conv1_top1": 0.2,
              "invariance_l2_mean": 0.9, "images_seen": 640, "train_s": 3.0, "eval_s": 1.0, "device_s": 3.5,
              "cpu_steal": 0.2, "wall_s": 5.0, "restarts": 1, "lr": 0.1,
              "provenance": {"hostname": "node-1", "cpu_model": "EPYC", "torch": "2.5"}}
    error = None
    if case == "stopped":
        result.update(epoch=0)
    elif case == "failure_result":
        result.update(failure="loss became NaN at epoch 1 step 3 (value nan)", failed_epoch=1, epoch=0)
    elif case == "error":
        error = RuntimeError("node lost")
    trial = _trial(0.5, result, error=error)
    trial.num_failures = 2
    store = ResultsStore(tmp_path, "s")
    callback = StoreCallback(store, SPECS, _Silent(), stops_early=True)
    if case == "error":
        callback.on_trial_error(0, [], trial)
        expected = _row_as_before(callback, trial, result, error="node lost")
    else:
        callback.on_trial_complete(0, [], trial)
        expected = _row_as_before(callback, trial, result, failure=result.get("failure"))
    (written,) = pq.read_table(store.key_path("trials", expected["trial_id"])).to_pylist()
    assert list(written) == list(expected)  # the same columns, in the same order
    assert all(_same(written[k], v) for k, v in expected.items()), {k: (written[k], v) for k, v in expected.items()}
    assert expected["restarts"] == 2 and expected["finished_at"] == 1234.5


def test_a_finished_trials_pictures_go_to_the_store_with_its_row_and_not_into_its_epochs(tmp_path):
    from sslab.engine.train import EpochReport
    from sslab.evaluation.pictures import EMBEDDING_SAMPLES, NEIGHBOUR_SAMPLES, PICTURES_SECONDS
    from sslab.results import pictures

    store = ResultsStore(tmp_path, "s")
    callback = StoreCallback(store, SPECS, _Silent())
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    neighbours = [{"query": 3, "query_label": 1, "rank": r, "neighbour": 7 + r, "label": 1, "similarity": 0.9} for r in range(2)]
    embedding = [{"index": i, "label": i % 2, "x": 0.5 * i, "y": 1.0} for i in range(4)]
    evaluation = {"knn_top1": 0.31, NEIGHBOUR_SAMPLES: neighbours, EMBEDDING_SAMPLES: embedding, PICTURES_SECONDS: 2.5}
    report = EpochReport(step_means={"loss": 8.0}, epoch=1, lr=0.1, images_seen=640, epoch_s=1.0, epoch_cpu_steal=0.0,
                         restarts=0, timing={}, evaluation=evaluation, provenance={}, train_s=3.0, eval_s=1.0,
                         device_s=3.0, wall_s=5.0, cpu_steal=0.0)
    assert not {NEIGHBOUR_SAMPLES, EMBEDDING_SAMPLES, PICTURES_SECONDS} & set(report.row())  # the epochs table's row
    report.history = [report.row()]
    trial.last_result = report.to_result()
    callback.on_trial_complete(0, [], trial)
    (row,) = store.read("trials").to_dict("records")
    assert row["knn_top1"] == 0.31 and not {NEIGHBOUR_SAMPLES, EMBEDDING_SAMPLES, PICTURES_SECONDS} & set(row)
    stored = pictures.read(store, pictures.NEIGHBOURS, [HALF])
    assert stored.drop(columns="trial_id").to_dict("records") == neighbours
    points = pictures.read(store, pictures.EMBEDDING, [HALF])
    assert list(points["x"]) == [0.0, 0.5, 1.0, 1.5] and (points["pictures_s"] == 2.5).all()
