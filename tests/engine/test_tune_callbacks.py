"""The Tune callback writes finished and failed trials into the store as they happen."""

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



class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _slow_writes(store, clock, seconds: float) -> list:
    """Make each epochs write take ``seconds`` of ``clock``'s time; returns the list of writes (the
    trial keys of each)."""
    writes = []
    record_epochs = store.record_epochs

    def record(histories):
        writes.append(sorted(histories))
        record_epochs(histories)
        clock.now += seconds

    store.record_epochs = record
    return writes


def _epoch_rows(store):
    epochs = store.read("epochs")
    return {} if epochs.empty else {k: list(g.epoch) for k, g in epochs.groupby("trial_id")}


def test_running_trials_epochs_wait_while_writing_them_would_take_more_than_its_share(tmp_path):
    """Every epoch report rewrote the whole epochs table, whatever that cost: a study's time in
    writes grew as the square of its epochs. Now, after a write of t seconds, reports wait until
    t / share seconds after it began, and then go out together; a trial's end writes its own."""
    store, clock = ResultsStore(tmp_path, "s"), _Clock()
    writes = _slow_writes(store, clock, 0.2)  # at a share of 0.02: one write per 10 s at most
    callback = StoreCallback(store, SPECS, _Silent(), epochs_write_share=0.02, clock=clock)
    a, b = _trial(0.0, {}), _trial(0.5, {})
    key_a, key_b = (SPECS.spec("pirl", {"loss_weight": w}, 1).trial_id for w in (0.0, 0.5))
    history = {key_a: [], key_b: []}

    def report(trial, key, epoch):
        history[key] = history[key] + [{"epoch": epoch, "loss": 9.0 - epoch}]
        trial.last_result = {"epoch": epoch, "loss": 9.0 - epoch, "history": history[key]}
        callback.on_trial_result(0, [], trial, trial.last_result)

    for t in (a, b):
        callback.on_trial_start(0, [], t)
    report(a, key_a, 0)  # nothing written yet: at once
    assert writes == [[key_a]] and _epoch_rows(store) == {key_a: [0]}
    for epoch, now in ((0, 2.0), (1, 4.0), (2, 6.0)):
        clock.now = now
        report(b, key_b, epoch)
        report(a, key_a, epoch + 1)
    assert writes == [[key_a]] and _epoch_rows(store) == {key_a: [0]}  # within 10 s of the write: waiting
    clock.now = 10.0
    report(b, key_b, 3)  # both trials' newest histories in one write
    assert writes[1:] == [[key_a, key_b]] and _epoch_rows(store) == {key_a: [0, 1, 2, 3], key_b: [0, 1, 2, 3]}
    clock.now = 11.0
    report(a, key_a, 4)
    callback.on_trial_complete(0, [], a)  # not finished (2 epochs of PROFILE): interrupted, yet written now
    assert writes[2:] == [[key_a]] and _epoch_rows(store)[key_a] == [0, 1, 2, 3, 4]
    report(b, key_b, 4)
    assert len(writes) == 3  # 0.2 s after the last write
    callback.on_experiment_end([])
    assert writes[3:] == [[key_b]] and _epoch_rows(store)[key_b] == [0, 1, 2, 3, 4]
    callback.on_trial_complete(0, [], a)
    callback.on_experiment_end([])
    assert len(writes) == 4  # nothing left to write: the store has every reported epoch


def test_cheap_writes_keep_every_epoch_report_in_the_store_at_once(tmp_path):
    store, clock = ResultsStore(tmp_path, "s"), _Clock()
    writes = _slow_writes(store, clock, 0.01)  # 0.5 s to the next write at a share of 0.02
    callback = StoreCallback(store, SPECS, _Silent(), clock=clock)
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    history = []
    for epoch in range(3):
        clock.now += 1.0  # an epoch takes a second
        history = history + [{"epoch": epoch, "loss": 1.0}]
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "history": history})
        assert list(store.read("epochs").epoch) == list(range(epoch + 1))
    assert len(writes) == 3


def test_a_trials_row_is_never_written_before_its_epochs(tmp_path):
    store, clock = ResultsStore(tmp_path, "s"), _Clock()
    _slow_writes(store, clock, 1.0)
    callback = StoreCallback(store, SPECS, _Silent(), clock=clock)
    trial = _trial(0.5, {})
    callback.on_trial_start(0, [], trial)
    first = [{"epoch": 0, "loss": 9.0}]
    callback.on_trial_result(0, [], trial, {"epoch": 0, "loss": 9.0, "history": first})
    full = first + [{"epoch": 1, "loss": 8.0}]
    callback.on_trial_result(0, [], trial, {"epoch": 1, "loss": 8.0, "history": full})
    assert list(store.read("epochs").epoch) == [0]  # the second report waits
    trial.last_result = {"epoch": 1, "loss": 8.0, "knn_top1": 0.3, "history": full}
    callback.on_trial_complete(0, [], trial)
    assert store.read("trials").status.tolist() == ["ok"] and list(store.read("epochs").epoch) == [0, 1]
    failed = _trial(0.0, {"epoch": 0, "loss": 7.0, "history": [{"epoch": 0, "loss": 7.0}]},
                    error=RuntimeError("node lost"))
    callback.on_trial_error(0, [], failed)  # an error's last history, never reported through a result
    assert sorted(store.read("epochs").loss) == [7.0, 8.0, 9.0]


def test_epochs_whose_write_failed_are_written_again_with_the_trials_row(tmp_path):
    from sslab.results.store import StoreWriteError

    store, clock = ResultsStore(tmp_path, "s"), _Clock()
    record_epochs, failures = store.record_epochs, [StoreWriteError("disk full")]

    def flaky(histories):
        if failures:
            raise failures.pop()
        record_epochs(histories)

    store.record_epochs = flaky
    callback = StoreCallback(store, SPECS, _Silent(), clock=clock)
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
