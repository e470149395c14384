"""The pictures' tables in the results store (``results/pictures.py``): a round trip, one file per
trial and per dataset, a rewrite that replaces, and stores without them."""

from pathlib import Path

import pytest

from sslab.results import pictures
from sslab.results.store import ResultsStore, UnreadableStoreError

NEIGHBOURS = [{"query": q, "query_label": q % 3, "rank": r, "neighbour": 10 * q + r, "label": (q + r) % 3,
               "similarity": 1.0 - 0.1 * r} for q in (4, 7) for r in range(3)]
EMBEDDING = [{"index": i, "label": i % 3, "x": float(i), "y": -float(i)} for i in range(5)]


def test_a_trials_pictures_and_a_datasets_thumbnails_round_trip(tmp_path):
    store = ResultsStore(tmp_path, "s")
    pictures.record_pictures(store, "trial-a", NEIGHBOURS, EMBEDDING, seconds=1.5)
    baseline = pictures.baseline_id("base123", 0)
    pictures.record_pictures(store, baseline, NEIGHBOURS[:3], EMBEDDING[:2])
    data = {"train_content_sha256": "aa11", "test_content_sha256": "bb22"}
    dataset = pictures.dataset_key(data)
    assert dataset == pictures.dataset_key({f"data/{k}": v for k, v in data.items()}) == "aa11-bb22"
    assert not pictures.has_thumbnails(store, dataset)
    pictures.record_thumbnails(store, dataset, [{"split": "train", "index": 0, "label": 1, "png": b"\x89PNG0"},
                                                {"split": "test", "index": 4, "label": 1, "png": b"\x89PNG1"}])
    assert pictures.has_thumbnails(store, dataset)

    neighbours = pictures.read(store, pictures.NEIGHBOURS, ["trial-a", baseline])
    assert len(neighbours) == len(NEIGHBOURS) + 3
    mine = neighbours[neighbours["trial_id"] == "trial-a"].drop(columns="trial_id").to_dict("records")
    assert mine == NEIGHBOURS
    embedding = pictures.read(store, pictures.EMBEDDING, ["trial-a"])
    assert embedding[["index", "label", "x", "y"]].to_dict("records") == EMBEDDING
    assert (embedding["pictures_s"] == 1.5).all()
    thumbs = pictures.read(store, pictures.THUMBNAILS, [dataset])
    assert list(thumbs["png"]) == [b"\x89PNG0", b"\x89PNG1"] and list(thumbs["split"]) == ["train", "test"]
    # one file per key, beside the store's other tables
    for table, key in ((pictures.NEIGHBOURS, "trial-a"), (pictures.EMBEDDING, baseline),
                       (pictures.THUMBNAILS, dataset)):
        assert Path(store.key_path(table, key)).is_file()
    # the tables every reader loads whole are untouched
    assert store.read("trials").empty and store.read("invariance").empty


def test_a_rewrite_replaces_a_trials_pictures(tmp_path):
    store = ResultsStore(tmp_path, "s")
    pictures.record_pictures(store, "t", NEIGHBOURS, EMBEDDING)
    pictures.record_pictures(store, "t", NEIGHBOURS[:2], EMBEDDING[:1])  # a trial recorded again from its checkpoint
    assert len(pictures.read(store, pictures.NEIGHBOURS, ["t"])) == 2
    assert len(pictures.read(store, pictures.EMBEDDING, ["t"])) == 1


def test_a_store_without_pictures_reads_as_having_none(tmp_path):
    store = ResultsStore(tmp_path, "old")
    store.record_trial({"trial_id": "t", "method": "pirl", "seed": 0, "status": "ok", "error": ""})
    for table in pictures.TABLES:
        assert pictures.read(store, table, ["t"]).empty
    assert pictures.dataset_key({"train_content_sha256": "a"}) is None  # a row without its data's hashes


def test_an_unreadable_pictures_file_is_named_with_the_way_out(tmp_path):
    store = ResultsStore(tmp_path, "s")
    pictures.record_pictures(store, "t", NEIGHBOURS, EMBEDDING)
    Path(store.key_path(pictures.NEIGHBOURS, "t")).write_bytes(b"not parquet")
    with pytest.raises(UnreadableStoreError, match=r"neighbours/t\.parquet cannot be read.*neighbours are lost"):
        pictures.read(store, pictures.NEIGHBOURS, ["t"])


def test_the_thumbnails_key_is_the_labelled_evaluations_data_where_a_run_has_one():
    own = {"data/train_content_sha256": "aa", "data/test_content_sha256": "bb"}
    assert pictures.dataset_key(own) == "aa-bb"
    other = {**own, "data/eval_train_content_sha256": "cc", "data/eval_test_content_sha256": "dd"}
    assert pictures.dataset_key(other) == "cc-dd"
    assert pictures.dataset_key({**own, "data/eval_train_content_sha256": float("nan")}) == "aa-bb"  # another setting's row
