"""The store's per-key layout: writes add or replace one trial's files and nothing else, reads
union the files' columns, stores of one file per table still read and take writes."""

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslab.results import table_files
from sslab.results.store import ResultsStore, UnreadableStoreError


def _row(trial_id, status="ok", **extra):
    return {"trial_id": trial_id, "method": "pirl", "seed": 0, "status": status, "error": "", **extra}


def _files(store, table):
    folder = Path(store.table_folder(table))
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _snapshot(path):
    path = Path(path)
    return path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino


def test_a_second_trials_writes_add_files_and_leave_the_first_trials_files_as_they_were(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_epochs({"a": [{"epoch": 0, "loss": 5.0}]})
    store.record_invariance("a", [0.5, 0.6])
    store.record_trial(_row("a", knn_top1=0.3))
    first = {t: _snapshot(store.key_path(t, "a")) for t in ("trials", "epochs", "invariance")}
    time.sleep(0.01)
    store.record_epochs({"b": [{"epoch": 0, "loss": 6.0}]})
    store.record_invariance("b", [0.7])
    store.record_trial(_row("b", knn_top1=0.4))
    for table in ("trials", "epochs", "invariance"):
        assert _snapshot(store.key_path(table, "a")) == first[table], table  # same bytes, never touched
        assert _files(store, table) == ["a.parquet", "b.parquet"]
    assert store.read("trials").trial_id.tolist() == ["a", "b"]


def test_rewriting_a_trial_replaces_its_file_only(tmp_path):
    store = ResultsStore(tmp_path, "s")
    for trial_id in ("a", "b", "c"):
        store.record_trial(_row(trial_id, knn_top1=0.1))
        store.record_epochs({trial_id: [{"epoch": 0, "loss": 5.0}]})
    others = {(t, k): _snapshot(store.key_path(t, k)) for t in ("trials", "epochs") for k in ("a", "c")}
    old_b = _snapshot(store.key_path("trials", "b"))
    time.sleep(0.01)
    store.record_trial(_row("b", status="failed", error="boom"))  # a retry
    store.record_epochs({"b": [{"epoch": 0, "loss": 5.0}, {"epoch": 1, "loss": 4.0}]})  # a longer history
    assert {key: _snapshot(store.key_path(*key)) for key in others} == others
    assert _snapshot(store.key_path("trials", "b"))[0] != old_b[0]
    assert _files(store, "trials") == _files(store, "epochs") == ["a.parquet", "b.parquet", "c.parquet"]
    trials = store.read("trials").set_index("trial_id")
    assert trials.loc["b", "status"] == "failed" and np.isnan(trials.loc["b", "knn_top1"])
    epochs = store.read("epochs")
    assert epochs.groupby("trial_id").epoch.apply(list).to_dict() == {"a": [0], "b": [0, 1], "c": [0]}
    assert not list(Path(store.location).rglob("*.tmp"))


def _as_before(writes):
    """The table the single-file store held after ``writes`` (lists of rows): it concatenated the
    old table with each write in pandas and stored the result through ``pa.Table.from_pandas``."""
    frame = pd.DataFrame()
    for rows in writes:
        new = pd.DataFrame(rows)
        frame = pd.concat([frame, new], ignore_index=True) if not frame.empty else new
        frame = pa.Table.from_pandas(frame, preserve_index=False).to_pandas()
    return frame


def test_reading_unions_the_columns_of_trials_of_different_methods_and_taps(tmp_path):
    writes = [
        [_row("a-pirl", **{"config/loss_weight": 1, "config/transform": "jigsaw", "knn_top1": 0.3,
                           "probe_res5_top1": 0.4, "host/gpu": None, "finished_at": 1.0})],
        [_row("b-rotnet", method="rotnet", **{"config/rotations": 4, "knn_top1": 0.2, "probe_res4_top1": 0.35,
                                               "host/gpu": "A100", "finished_at": 2.0})],
        [_row("c-pirl", status="stopped", **{"config/loss_weight": 0.5, "config/transform": "rotation",
                                             "monitor_knn_top1": 0.1, "finished_at": 3.0})],
        [_row("d-jigsaw", status="failed", error="loss became NaN", method="jigsaw",
              **{"config/permutations": 100, "config/shuffle": True, "finished_at": 4.0})],
    ]
    store = ResultsStore(tmp_path, "s")
    for rows in writes:
        store.record_trial(rows[0])
    trials = store.read("trials")
    expected = _as_before(writes)
    assert list(trials.columns) == list(expected.columns)  # every column of every trial, first seen first
    pd.testing.assert_frame_equal(trials, expected)
    assert trials["config/loss_weight"].tolist()[::2] == [1.0, 0.5]  # an int and a float column: float
    assert trials["config/rotations"].isna().tolist() == [True, False, True, True]
    assert trials["config/shuffle"].tolist() == [None, None, None, True]


def test_files_that_cannot_share_a_column_type_are_joined_by_pandas(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_trial(_row("a", **{"config/size": 32}))
    store.record_trial(_row("b", **{"config/size": "large"}))
    trials = store.read("trials")
    assert trials["config/size"].tolist() == [32, "large"] and trials.trial_id.tolist() == ["a", "b"]


def test_epochs_read_as_the_single_file_store_gave_them(tmp_path):
    histories = {"a": [{"epoch": e, "loss": 9.0 - e, "epoch_s": 2.0} for e in range(3)],
                 "b": [{"epoch": 0, "loss": 7.0, "epoch_s": 2.5, "epoch_cpu_steal": 0.1}]}
    store = ResultsStore(tmp_path, "s")
    for key, history in histories.items():
        store.record_epochs({key: history})
    expected = _as_before([[{"trial_id": k, **r} for r in h] for k, h in histories.items()])
    pd.testing.assert_frame_equal(store.read("epochs"), expected)


def _write_legacy(store, table, rows):
    """A table as stores before the per-key layout wrote it: one file, through pandas."""
    Path(store.location).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), store.table_path(table))


def test_a_single_file_store_reads_and_takes_new_writes_without_losing_rows(tmp_path):
    store = ResultsStore(tmp_path, "old")
    _write_legacy(store, "trials", [_row("a", knn_top1=0.3), _row("b", knn_top1=0.2)])
    _write_legacy(store, "epochs", [{"trial_id": t, "epoch": e, "loss": 5.0 - e} for t in "ab" for e in range(2)])
    _write_legacy(store, "baselines", [{"backbone": "r", "setting_id": "s1", "seed": s, "knn_top1": 0.1 + s}
                                       for s in (0, 1)])
    legacy = {t: _snapshot(store.table_path(t)) for t in ("trials", "epochs", "baselines")}
    assert store.read("trials").trial_id.tolist() == ["a", "b"] and len(store.read("epochs")) == 4
    store.check_readable()

    store.record_trial(_row("a", knn_top1=0.5))  # a retried trial: its new file wins over its old row
    store.record_trial(_row("c", knn_top1=0.6))
    store.record_epochs({"a": [{"epoch": 0, "loss": 3.0}], "c": [{"epoch": 0, "loss": 2.0}]})
    store.record_baseline({"backbone": "r", "setting_id": "s1", "seed": 1, "knn_top1": 0.9})
    trials = store.read("trials")
    assert trials.trial_id.tolist() == ["b", "a", "c"]  # the old file's rows first, then the files'
    assert trials.set_index("trial_id").knn_top1.to_dict() == {"a": 0.5, "b": 0.2, "c": 0.6}
    epochs = store.read("epochs")
    assert epochs.groupby("trial_id").loss.apply(list).to_dict() == {"a": [3.0], "b": [5.0, 4.0], "c": [2.0]}
    assert store.read("baselines").set_index("seed").knn_top1.to_dict() == {0: 0.1, 1: 0.9}
    assert store.finished_trial_ids() == {"a", "b", "c"}
    assert {t: _snapshot(store.table_path(t)) for t in legacy} == legacy  # the old files are never written

    store.append("epochs", [{"trial_id": "b", "epoch": 2, "loss": 3.5}])  # an append keeps the old rows of b
    store.record_epochs({"a": []})  # a's history replaced by none: an empty file hides its old rows
    epochs = store.read("epochs")
    assert epochs.groupby("trial_id").epoch.apply(list).to_dict() == {"b": [0, 1, 2], "c": [0]}
    assert _files(store, "epochs") == ["a.parquet", "b.parquet", "c.parquet"]
    assert pq.read_table(store.key_path("epochs", "a")).num_rows == 0


def test_a_key_replaced_by_no_rows_loses_its_file(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_epochs({"a": [{"epoch": 0, "loss": 1.0}], "b": [{"epoch": 0, "loss": 2.0}]})
    store.record_epochs({"a": []})
    assert _files(store, "epochs") == ["b.parquet"] and store.read("epochs").trial_id.tolist() == ["b"]
    store.append("epochs", [{"trial_id": "b", "epoch": 1, "loss": 1.5}])  # no replace_where: added to b's rows
    assert store.read("epochs").epoch.tolist() == [0, 1]
    with pytest.raises(ValueError, match="key columns"):
        store.append("epochs", [{"trial_id": "b", "epoch": 2}], replace_where={"epoch": 2})
    with pytest.raises(ValueError, match="key columns"):
        store.append("epochs", [{"epoch": 2}])


def test_an_unreadable_trial_file_is_named_with_the_way_out(tmp_path):
    store = ResultsStore(tmp_path, "s")
    for trial_id in ("a", "b", "c"):
        store.record_trial(_row(trial_id))
    bad = Path(store.key_path("trials", "b"))
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    for attempt in (lambda: store.read("trials"), store.check_readable, store.finished_trial_ids):
        with pytest.raises(UnreadableStoreError) as info:
            attempt()
        message = str(info.value)
        assert f"{bad} cannot be read" in message and f"mv {bad} {bad}.unreadable" in message
        assert "recorded again from their last checkpoints" in message and "\n" not in message
    also = Path(store.key_path("trials", "c"))
    also.write_bytes(b"not parquet")
    with pytest.raises(UnreadableStoreError, match="move them aside") as info:
        store.read("trials")
    assert f"{bad} cannot be read (" in str(info.value) and f"{also} cannot be read (" in str(info.value)
    assert f"mv {bad} {bad}.unreadable; mv {also} {also}.unreadable" in str(info.value)
    for path in (bad, also):
        path.rename(path.with_name(path.name + ".unreadable"))  # the way out the message names
    assert store.read("trials").trial_id.tolist() == ["a"]
    store.record_trial(_row("b"))  # the rerun records it again
    assert store.read("trials").trial_id.tolist() == ["a", "b"]


def test_many_unreadable_files_are_counted_past_the_first_few(tmp_path):
    store = ResultsStore(tmp_path, "s")
    for i in range(8):
        store.record_epochs({f"t{i}": [{"epoch": 0, "loss": 1.0}]})
        Path(store.key_path("epochs", f"t{i}")).write_bytes(b"garbage")
    with pytest.raises(UnreadableStoreError) as info:
        store.read("epochs")
    message = str(info.value)
    assert message.count("cannot be read (") == 5 and "and 3 more file(s) of " in message
    assert "the others alike" in message and "\n" not in message


def test_a_damaged_single_file_table_is_named(tmp_path):
    store = ResultsStore(tmp_path, "s")
    store.record_epochs({"a": [{"epoch": 0, "loss": 1.0}]})
    Path(store.table_path("epochs")).write_bytes(b"PAR1 truncated")
    with pytest.raises(UnreadableStoreError, match="epochs.parquet cannot be read.*epoch curves of finished"):
        store.check_readable()


def test_file_names_keep_ids_readable_and_never_collide():
    name = table_files.file_name
    assert name(("pirl-loss_weight=0.5-seed=1-3f9a2c",)) == "pirl-loss_weight=0.5-seed=1-3f9a2c.parquet"
    assert name(("ab12", 0)) == "ab12-0.parquet"
    assert name(("a-b", 1)) != name(("a", "b-1")) and name(("a/b",)) == "a%2Fb.parquet"
    assert name((".hidden",)).startswith("%2E") and name(("x~y",)) == "x%7Ey.parquet"
    long_a, long_b = ("m-" + "k=1.0-" * 60 + "a",), ("m-" + "k=1.0-" * 60 + "b",)
    assert len(name(long_a)) < 255 and name(long_a) != name(long_b)
    assert name((np.int64(3),)) == name((3.0,)) == name((3,))  # one seed, whatever its type


def test_updated_and_stamp_follow_the_writes(tmp_path):
    store = ResultsStore(tmp_path, "s")
    assert store.updated("epochs") is None and store.stamp() == ()
    store.write_metadata({"method": "pirl"})
    store.record_epochs({"a": [{"epoch": 0, "loss": 1.0}]})
    first, stamp = store.updated("epochs"), store.stamp()
    assert abs(first - time.time()) < 60 and [n for n, _, _ in stamp] == ["study.json", "epochs/"]
    time.sleep(0.01)
    store.record_epochs({"b": [{"epoch": 0, "loss": 1.0}]})
    assert store.updated("epochs") > first and dict((n, m) for n, m, _ in store.stamp())["epochs/"] > dict(
        (n, m) for n, m, _ in stamp)["epochs/"]


def test_a_reread_reads_only_the_files_written_since(tmp_path, monkeypatch):
    """The dashboard re-reads a running study whenever a file changes: files unchanged since the
    last read, and written long enough ago that an object store's one-second dates cannot hide a
    rewrite, come from the process's cache."""
    import os

    store = ResultsStore(tmp_path, "s")
    for trial_id in ("a", "b"):
        store.record_epochs({trial_id: [{"epoch": 0, "loss": 1.0}]})
    old = time.time() - 3600
    for trial_id in ("a", "b"):
        os.utime(store.key_path("epochs", trial_id), (old, old))
    assert store.read("epochs").trial_id.tolist() == ["a", "b"]  # read, and kept
    store.record_epochs({"b": [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}]})  # b changes; a does not
    store.record_epochs({"c": [{"epoch": 0, "loss": 2.0}]})
    read = []
    real = ResultsStore._read_file
    monkeypatch.setattr(ResultsStore, "_read_file", lambda self, path: read.append(Path(path).name) or real(self, path))
    assert store.read("epochs").groupby("trial_id").epoch.apply(list).to_dict() == {"a": [0], "b": [0, 1], "c": [0]}
    assert read == ["b.parquet", "c.parquet"]
    read.clear()
    store.read("epochs")
    assert read == ["b.parquet", "c.parquet"]  # written a moment ago: read again each time


def test_a_kept_read_follows_new_columns_removed_files_and_rewrites(tmp_path):
    import os

    store = ResultsStore(tmp_path, "s")
    for trial_id in ("a", "b", "c"):
        store.record_trial(_row(trial_id, knn_top1=0.1))
    old = time.time() - 3600
    for trial_id in ("a", "b", "c"):
        os.utime(store.key_path("trials", trial_id), (old, old))
    store.read("trials")  # kept
    store.record_trial(_row("ab", status="stopped", monitor_knn_top1=0.2))  # a new column, between a and b by name
    Path(store.key_path("trials", "c")).unlink()
    store.record_trial(_row("b", knn_top1=0.9))
    trials = store.read("trials")
    assert trials.trial_id.tolist() == ["a", "ab", "b"]
    assert trials.knn_top1.tolist()[::2] == [0.1, 0.9] and trials.monitor_knn_top1.isna().tolist() == [True, False, True]
    ResultsStore(tmp_path, "s").check_readable()
