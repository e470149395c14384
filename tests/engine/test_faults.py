"""Faults injected into real studies: a damaged results store, a full disk, a dataset with corrupt
images, another Ray instance on the machine. Each ends with every finished trial intact in the
store, no trial run twice, and one clear message. (A killed study driver and a killed trial
process are in test_study.py, a killed Train worker and a lost node in test_multinode.py, a
corrupt newest checkpoint in test_checkpoints.py.)"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from PIL import Image

import faults
from small import SMALL, by_name, needs_cifar, trial_name
from sslab import cli
from sslab.engine import runner
from sslab.plan.profiles import Profile
from sslab.results.store import ResultsStore, StoreWriteError, UnreadableStoreError
from sslab.engine.runner import run_study
from sslab.plan.spec import name_of
from sslab.plan.study import Study
from sslab.engine.tune_callbacks import StoreCallback


STUDY = Study(name="faulty", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base={"num_negatives": 64})
KEYS = sorted(trial_name("pirl", {"loss_weight": w}, 0) for w in (0.0, 1.0))


@pytest.fixture
def starts(monkeypatch) -> dict[str, int]:
    """How many times Tune started each trial, by the readable part of its id (the callback runs in
    this process, the study's driver)."""
    counted: dict[str, int] = {}
    original = StoreCallback.on_trial_start

    def counting(self, iteration, trials, trial, **info):
        key = self.specs.of_tune_config(trial.config).trial_id  # the runner's spec, looked up
        counted[name_of(key)] = counted.get(name_of(key), 0) + 1
        return original(self, iteration, trials, trial, **info)

    monkeypatch.setattr(StoreCallback, "on_trial_start", counting)
    return counted


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _one_line_exit(capsys, call) -> str:
    """Run ``call``, which must exit with one line on stderr and no traceback; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    captured = capsys.readouterr()
    message = captured.err.strip() or str(exit_info.value.code)
    assert exit_info.value.code not in (0, None)
    assert "\n" not in message and "Traceback" not in message, message
    return message


@needs_cifar
def test_a_truncated_trials_table_stops_every_command_in_one_line_and_the_rerun_records_from_checkpoints(
        ray_local, tmp_path, capsys, monkeypatch, starts):
    before = by_name(run_study(STUDY, profile=SMALL, root=tmp_path, quiet=True)).sort_index()
    assert list(before.index) == KEYS and (before.status == "ok").all(), before.error.tolist()
    tables = sorted((tmp_path / STUDY.name / "trials").glob("*.parquet"))  # every trial's row: the whole table
    assert len(tables) == len(KEYS)
    for table in tables:
        _truncate(table)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "_init_ray", lambda *_: pytest.fail("Ray was started for a store that cannot be read"))
        started = time.perf_counter()
        line = _one_line_exit(capsys, lambda: cli.run(STUDY, ["--results", str(tmp_path)]))
        assert time.perf_counter() - started < 10
        for table in tables:
            assert f"{table} cannot be read" in line and f"mv {table} {table}.unreadable" in line, line
        assert "recorded again from their last checkpoints" in line
        patch.setattr(cli, "_study", lambda name: STUDY)
        for command in ("report", "status"):
            said = _one_line_exit(capsys, lambda: cli.main([command, STUDY.name, "--results", str(tmp_path)]))
            assert all(f"mv {table}" in said for table in tables), said

    # the way out the message names: move the files aside and run again
    for table in tables:
        table.rename(table.with_name(table.name + ".unreadable"))
    starts.clear()
    epochs_before = ResultsStore(tmp_path, STUDY.name).read("epochs")
    after = by_name(run_study(STUDY, profile=SMALL, root=tmp_path, quiet=True)).sort_index()
    assert list(after.index) == KEYS and (after.status == "ok").all(), after.error.tolist()
    # recorded from the last checkpoints, not trained again: the same metrics, one resume each
    pd.testing.assert_series_equal(after.knn_top1, before.knn_top1)
    pd.testing.assert_series_equal(after.images_seen, before.images_seen)
    assert (after.restarts == 1).all()
    assert (after.wall_s >= before.wall_s * 0.5).all()  # the cost of the first run is still counted
    pd.testing.assert_frame_equal(ResultsStore(tmp_path, STUDY.name).read("epochs"), epochs_before)


def test_a_truncated_epochs_table_or_study_file_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    store = ResultsStore(tmp_path, STUDY.name)
    store.write_metadata({"profile": SMALL.to_dict()})
    store.record_epochs({"t": [{"epoch": 0, "loss": 1.0}]})
    monkeypatch.setattr(runner, "_init_ray", lambda *_: pytest.fail("Ray was started"))
    epochs = Path(store.key_path("epochs", "t"))
    _truncate(epochs)
    with pytest.raises(UnreadableStoreError, match="epochs/t.parquet cannot be read"):
        store.check_readable()
    line = _one_line_exit(capsys, lambda: cli.run(STUDY, ["--results", str(tmp_path)]))
    assert f"mv {epochs}" in line and "epoch curves of finished trials are lost" in line

    epochs.unlink()
    study_json = tmp_path / STUDY.name / "study.json"
    study_json.write_text(study_json.read_text()[:20])
    line = _one_line_exit(capsys, lambda: cli.run(STUDY, ["--results", str(tmp_path)]))
    assert f"mv {study_json}" in line and "written again" in line


@needs_cifar
def test_a_full_disk_after_a_trial_finished_is_said_once_not_retried_and_the_rerun_records_it(
        ray_local, tmp_path, monkeypatch, starts):
    """The results root fills up between the first and the second trial's row (simulated ENOSPC:
    no tmpfs or quota can be mounted without privileges)."""
    real_replace = ResultsStore._replace
    full = {"on": True}

    def replace(self, path, data):
        if full["on"] and "/trials/" in path and any(Path(path).parent.glob("*.parquet")):  # after the first row
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_replace(self, path, data)

    monkeypatch.setattr(ResultsStore, "_replace", replace)
    with pytest.raises(StoreWriteError) as failure:
        run_study(STUDY, profile=SMALL, root=tmp_path, quiet=True)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("1 trial(s) finished but are not fully recorded") and "No space left on device" in message
    assert "run the same command again" in message
    assert starts == {key: 1 for key in KEYS}  # a finished trial is not retried for a failed write
    kept = ResultsStore(tmp_path, STUDY.name).read("trials")
    assert len(kept) == 1 and kept.status.iloc[0] == "ok"  # the row written before the disk filled is intact

    full["on"] = False  # space freed
    starts.clear()
    after = by_name(run_study(STUDY, profile=SMALL, root=tmp_path, quiet=True)).sort_index()
    assert list(after.index) == KEYS and (after.status == "ok").all()
    unrecorded = (set(KEYS) - set(kept.trial_id.map(name_of))).pop()
    assert starts == {unrecorded: 1}  # only the unrecorded trial ran again ...
    assert after.loc[unrecorded, "restarts"] == 1  # ... from its last checkpoint, without training
    assert after.loc[name_of(kept.trial_id.iloc[0]), "finished_at"] == kept.finished_at.iloc[0]
    epochs = ResultsStore(tmp_path, STUDY.name).read("epochs")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[0, 1]] * 2


def _folder_with_corrupt_third(root: Path) -> int:
    """train/test folders of 3 classes where every third file is not a decodable image; returns
    how many of the training files are corrupt."""
    rng = np.random.default_rng(0)
    corrupt = 0
    for split, count in (("train", 45), ("test", 15)):
        for label in range(3):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                path = folder / f"{i}.png"
                if i % 3 == 2:
                    path.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(64))  # a PNG header, then garbage
                    corrupt += split == "train"
                else:
                    pixels = np.clip(rng.normal(60 + 70 * label, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(path)
    return corrupt


def test_a_dataset_with_a_third_of_its_images_corrupt_trains_and_says_so_every_run(ray_local, tmp_path, capsys):
    corrupt = _folder_with_corrupt_third(tmp_path / "data")
    tiny = Profile(
        name="tiny", dataset=f"imagefolder:{tmp_path / 'data'}", image_size=16, train_subset=None, test_subset=None,
        width=4, epochs=1, batch_size=30, num_workers=0, knn_k=5, probe_epochs=2, invariance_samples=10,
        monitor_images=30, torch_threads=1,
        method_defaults={"num_negatives": 32, "lr_scaling": "none", "base_lr": 0.05, "warmup_epochs": 0},
    )
    os.environ["SSLAB_CACHE"] = str(tmp_path / "cache")
    try:
        for name in ("first", "second"):  # the second run reads the decode cache
            study = Study(name=name, method="pirl", grid={"loss_weight": [0.5]})
            trials = run_study(study, profile=tiny, root=tmp_path / "results", quiet=False)
            out = capsys.readouterr().out
            assert f"{corrupt} unreadable image(s) skipped in the train split" in out, out[-2000:]
            assert (trials.status == "ok").all(), trials.error.tolist()
            assert trials.images_seen.iloc[0] == 90  # the 90 readable images: 3 full batches of 30
    finally:
        os.environ.pop("SSLAB_CACHE", None)


@needs_cifar
def test_another_ray_instance_on_the_machine_confuses_no_state_api_call(ray_local, tmp_path):
    """Every state-API call names this driver's cluster: with a second Ray instance running (a
    test cluster, another user's study), the janitor, the cluster's shape and a TorchTrainer
    trial all see this one."""
    from ray.cluster_utils import Cluster

    from sslab.engine import placement

    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"elsewhere": 1}})
    try:
        own = ray.get_runtime_context().gcs_address
        assert other.address != own
        shape = placement.cluster_shape()
        assert [n.resources.get("CPU") for n in shape.nodes] == [2.0]
        assert not any("elsewhere" in n.resources for n in shape.nodes)
        assert placement.OrphanedWorkerGroupJanitor().sweep() == []  # raises if it asked the wrong cluster
        study = Study(name="beside", method="pirl", grid={"loss_weight": [0.5]}, base={"num_negatives": 64})
        with placement.OrphanedWorkerGroupJanitor(interval_s=0.5, grace_s=60) as janitor:
            trials = run_study(study, profile=SMALL.with_overrides(num_workers=1, epochs=1), root=tmp_path, quiet=True)
            workers = faults.actors("RayTrainWorker")  # this cluster's, asked by address
        assert (trials.status == "ok").all(), trials.error.tolist()
        assert janitor.sweeps >= 2 and janitor.failures == [] and janitor.removed == []
        assert workers and all(w.state == "DEAD" for w in workers)
    finally:
        other.shutdown()


@needs_cifar
def test_a_corrupt_newest_checkpoint_is_said_and_the_trial_resumes_from_the_one_before(
        ray_local, tmp_path, capsys, starts):
    study = Study(name="corrupt", method="pirl", grid={"loss_weight": [0.5]}, base={"num_negatives": 64})
    first = run_study(study, profile=SMALL, root=tmp_path, quiet=True)
    key = first.trial_id.iloc[0]
    checkpoints = sorted((tmp_path / "corrupt" / "ray" / "train" / key).glob("epoch-*.pt"))
    assert [c.name for c in checkpoints] == ["epoch-000000.pt", "epoch-000001.pt"]
    _truncate(checkpoints[-1])  # the newest: a disk that filled up mid-copy
    shutil.rmtree(tmp_path / "corrupt" / "trials")  # as if the row had not been written yet
    starts.clear()
    again = run_study(study, profile=SMALL, root=tmp_path, quiet=False)
    out = capsys.readouterr().out
    assert f"{key}: resumed from an older checkpoint: " in out and "epoch-000001.pt does not load" in out
    row = again.iloc[0]
    assert row.status == "ok" and row.restarts == 1 and starts == {name_of(key): 1}
    assert row.images_seen == first.images_seen.iloc[0]  # epoch 1 trained again, epoch 0 not
    epochs = ResultsStore(tmp_path, "corrupt").read("epochs")
    assert epochs.epoch.tolist() == [0, 1] and epochs.restarts.tolist() == [0, 1]
