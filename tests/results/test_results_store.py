"""The results store: rows appended, replaced by key, atomic files, resume bookkeeping."""

from pathlib import Path

import pytest

from sslab.results.store import SCHEMA_VERSION, ResultsStore, results_root


def _row(trial_id, status="ok", **extra):
    return {"trial_id": trial_id, "method": "pirl", "seed": 0, "status": status, "error": "", **extra}


def test_trial_rows_are_appended_and_replaced_by_trial_id(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_trial(_row("a", knn_top1=0.3))
    store.record_trial(_row("b", status="failed", error="loss became NaN at epoch 0 step 3"))
    store.record_trial(_row("a", knn_top1=0.4))  # a retried trial replaces its row
    trials = store.read("trials").set_index("trial_id")
    assert sorted(trials.index) == ["a", "b"]
    assert trials.loc["a", "knn_top1"] == pytest.approx(0.4)
    assert store.finished_trial_ids() == {"a", "b"}
    assert store.finished_trial_ids(("ok",)) == {"a"}


def test_bad_trial_rows_are_refused(tmp_path):
    store = ResultsStore(tmp_path, "s")
    with pytest.raises(ValueError, match="status"):
        store.record_trial(_row("a", status="done"))
    with pytest.raises(ValueError, match="lacks columns"):
        store.record_trial({"trial_id": "a", "status": "ok"})


def test_epochs_of_a_trial_are_rewritten_not_duplicated(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_epochs({"a": [{"epoch": 0, "loss": 5.0}]})
    store.record_epochs({"b": [{"epoch": 0, "loss": 6.0}]})
    store.record_epochs({"a": [{"epoch": 0, "loss": 5.0}, {"epoch": 1, "loss": 4.0}]})
    epochs = store.read("epochs")
    assert len(epochs) == 3
    assert list(epochs[epochs.trial_id == "a"].loss) == [5.0, 4.0]


def test_baselines_keyed_by_their_setting_and_seed(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_baseline({"backbone": "r18", "setting_id": "b1", "seed": 0, "knn_top1": 0.2})
    store.record_baseline({"backbone": "r18", "setting_id": "b1", "seed": 1, "knn_top1": 0.25})
    store.record_baseline({"backbone": "r18", "setting_id": "b2", "seed": 0, "knn_top1": 0.3})  # other data: kept apart
    store.record_baseline({"backbone": "r18", "setting_id": "b1", "seed": 0, "knn_top1": 0.21})
    baselines = store.read("baselines").sort_values(["setting_id", "seed"])
    assert list(baselines.knn_top1) == [0.21, 0.25, 0.3]


def test_no_temporary_files_are_left_and_metadata_is_versioned(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_trial(_row("a"))
    store.write_metadata({"method": "pirl"})
    assert sorted(str(p.relative_to(store.location)) for p in Path(store.location).rglob("*")) == [
        "study.json", "trials", f"trials/{Path(store.key_path('trials', 'a')).name}"]
    assert Path(store.key_path("trials", "a")).name == "a.parquet"
    assert store.metadata()["schema_version"] == SCHEMA_VERSION


def test_unwritable_root_is_reported_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="SSLAB_RESULTS"):
        ResultsStore(blocker, "s").check_writable()


def test_results_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SSLAB_RESULTS", str(tmp_path / "env"))
    assert results_root() == str(tmp_path / "env")
    assert results_root(tmp_path / "flag") == str(tmp_path / "flag")
    monkeypatch.delenv("SSLAB_RESULTS")
    monkeypatch.chdir(tmp_path)
    assert results_root() == str(tmp_path / "results")  # absolute: Ray's storage needs it
    assert results_root("s3://bucket/sslab/") == "s3://bucket/sslab"  # a URI is kept as given


def test_a_uri_root_reads_and_writes_through_pyarrow_fs(tmp_path):
    store = ResultsStore(f"file://{tmp_path}/root", "s")
    store.check_writable()
    store.write_metadata({"method": "pirl"})
    store.record_trial(_row("a", knn_top1=0.25))
    assert store.ray_storage == f"file://{tmp_path}/root/s/ray"
    assert (tmp_path / "root" / "s" / "trials" / "a.parquet").is_file()
    again = ResultsStore(f"file://{tmp_path}/root/", "s")
    assert again.read("trials").knn_top1.tolist() == [0.25]
    assert again.metadata()["method"] == "pirl"


def test_the_store_lives_on_s3(s3_bucket):
    store = ResultsStore(f"{s3_bucket}/results", "s")
    store.check_writable()
    store.write_metadata({"method": "pirl"})
    store.record_trial(_row("a", knn_top1=0.25))
    store.record_trial(_row("b", status="failed", error="boom"))
    store.record_trial(_row("a", knn_top1=0.5))
    reader = ResultsStore(f"{s3_bucket}/results", "s")  # e.g. a laptop reading what the cluster wrote
    trials = reader.read("trials").set_index("trial_id")
    assert trials.loc["a", "knn_top1"] == 0.5 and trials.loc["b", "status"] == "failed"
    assert reader.metadata()["schema_version"] == SCHEMA_VERSION
    assert reader.ray_storage == f"{s3_bucket}/results/s/ray"
    assert ResultsStore(f"{s3_bucket}/results", "other").read("trials").empty


def test_one_write_replaces_the_epochs_of_several_trials_and_keeps_the_others(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_epochs({"a": [{"epoch": 0, "loss": 5.0}], "b": [{"epoch": 0, "loss": 6.0}],
                         "c": [{"epoch": 0, "loss": 7.0}]})
    store.record_epochs({"a": [{"epoch": 0, "loss": 5.0}, {"epoch": 1, "loss": 4.0}],
                         "b": [{"epoch": 0, "loss": 6.5}]})
    epochs = store.read("epochs")
    assert sorted(zip(epochs.trial_id, epochs.epoch, epochs.loss)) == [
        ("a", 0, 5.0), ("a", 1, 4.0), ("b", 0, 6.5), ("c", 0, 7.0)]


def test_on_s3_each_trial_is_its_own_object_and_a_bad_one_is_named_by_its_uri(s3_bucket):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow.fs import FileSelector, FileType

    from sslab.results.store import UnreadableStoreError

    store = ResultsStore(f"{s3_bucket}/results", "layout")
    store.record_trial(_row("a", knn_top1=0.25))
    store.record_epochs({"a": [{"epoch": 0, "loss": 5.0}]})
    first = store.fs.open_input_stream(store.key_path("trials", "a")).read()
    store.record_trial(_row("b", knn_top1=0.3, **{"config/extra": "x"}))
    store.record_epochs({"b": [{"epoch": 0, "loss": 6.0}, {"epoch": 1, "loss": 5.5}]})
    store.record_baseline({"backbone": "r18", "setting_id": "b1", "seed": 0, "knn_top1": 0.2})
    store.record_trial(_row("b", knn_top1=0.35, **{"config/extra": "x"}))  # b again: a's object is as it was
    assert store.fs.open_input_stream(store.key_path("trials", "a")).read() == first
    listed = sorted(i.path.rsplit("/", 2)[-2] + "/" + i.base_name
                    for i in store.fs.get_file_info(FileSelector(store.table_folder("x").rsplit("/", 1)[0], recursive=True))
                    if i.type == FileType.File)
    assert listed == ["baselines/b1-0.parquet", "epochs/a.parquet", "epochs/b.parquet", "trials/a.parquet",
                      "trials/b.parquet"]
    reader = ResultsStore(f"{s3_bucket}/results", "layout")
    trials = reader.read("trials").set_index("trial_id")
    assert trials.knn_top1.to_dict() == {"a": 0.25, "b": 0.35} and pd.isna(trials.loc["a", "config/extra"])
    assert reader.read("epochs").groupby("trial_id").epoch.apply(list).to_dict() == {"a": [0], "b": [0, 1]}
    assert reader.read("baselines").knn_top1.tolist() == [0.2]

    # a store of one file per table, written before, on the same bucket
    with store.fs.open_output_stream(store.table_path("invariance")) as out:
        pq.write_table(pa.Table.from_pandas(pd.DataFrame({"trial_id": ["a", "b"], "distance": [1.0, 2.0]})), out)
    store.record_invariance("b", [3.0])
    assert reader.read("invariance").distance.tolist() == [1.0, 3.0]

    with store.fs.open_output_stream(store.key_path("epochs", "b")) as out:
        out.write(b"PAR1 not really")
    with pytest.raises(UnreadableStoreError) as info:
        reader.check_readable()
    uri = f"{s3_bucket}/results/layout/epochs/b.parquet"
    assert f"{uri} cannot be read" in str(info.value) and f"mv {uri} {uri}.unreadable" in str(info.value)
