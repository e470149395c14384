"""The pictures of what was learned, in the results store: each trial's (and each random-init
baseline's) nearest training images of a fixed set of test queries, its 2-D map of the test
features (``evaluation/pictures.py`` computes both), and small thumbnails of a dataset's images.

Layout under ``<root>/<study>/``::

    neighbours/<trial_id>.parquet   trial_id, query, query_label, rank, neighbour, label, similarity
    embedding/<trial_id>.parquet    trial_id, index, label, x, y, pictures_s (the seconds both pictures took)
    thumbnails/<dataset>.parquet    dataset, split ("train" / "test"), index, label, png (PNG bytes, <= 32 px)

``trial_id`` is a trial's id, or a random-init baseline's ``baseline_id(setting_id, seed)``; ``query``
and ``index`` (split "test") index the evaluation's test subset as loaded, ``neighbour`` and
``index`` (split "train") its training subset: the same subsets for every trial of a setting.
``dataset`` is ``dataset_key``: the content hashes of the two splits as loaded (of the labelled
evaluation dataset's, where a run has one), which every trial's and baseline's row carries
(``data/train_content_sha256``, ...), so a trial finds its thumbnails from its own row. The study's driver writes a dataset's thumbnails
once, before its trials; each trial's pictures come with its row (``tune_callbacks``).

Written through ``ResultsStore.append`` like every table (one file per key, replaced whole and
atomically); not among ``store.TABLES``, which every reader loads whole: a reader loads these for
the trials it shows (``read``). A store written before these tables reads as having none.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from sslab.results import table_files as files
from sslab.results.store import ResultsStore

NEIGHBOURS, EMBEDDING, THUMBNAILS = "neighbours", "embedding", "thumbnails"
TABLES = (NEIGHBOURS, EMBEDDING, THUMBNAILS)


def baseline_id(setting_id: str, seed: int) -> str:
    """The key of a random-init baseline's pictures (its baseline setting and seed)."""
    return f"random-init-{setting_id}-seed={int(seed)}"


def dataset_key(data: Mapping[str, Any]) -> str | None:
    """The thumbnails' key of the data a trial or baseline was evaluated on, from its data fields
    (``spec.data_identity``, or a row's ``data/<field>`` columns): the content hashes of the labelled
    evaluation dataset's two splits where it has one (``eval_train_*``), else of the training data's;
    None where they are missing."""
    def field(name: str) -> Any:
        value = data.get(name, data.get(f"data/{name}"))
        return value if isinstance(value, str) else None

    prefix = "eval_" if field("eval_train_content_sha256") else ""
    hashes = [field(f"{prefix}{split}_content_sha256") for split in ("train", "test")]
    if any(h is None or not isinstance(h, str) for h in hashes):
        return None
    return "-".join(hashes)


def record_pictures(store: ResultsStore, trial_id: str, neighbours: list[Mapping[str, Any]] | None,
                    embedding: list[Mapping[str, Any]] | None, seconds: float | None = None) -> None:
    """A trial's (or baseline's) neighbours and map, each replacing what the store held of it;
    ``seconds``, what computing both cost, goes with each point of the map."""
    cost = {} if seconds is None else {"pictures_s": float(seconds)}
    for table, rows, extra in ((NEIGHBOURS, neighbours, {}), (EMBEDDING, embedding, cost)):
        if rows:
            store.append(table, [{"trial_id": trial_id, **row, **extra} for row in rows],
                         replace_where={"trial_id": trial_id})


def has_thumbnails(store: ResultsStore, dataset: str) -> bool:
    return store.fs.get_file_info(store.key_path(THUMBNAILS, dataset)).type == pafs.FileType.File


def record_thumbnails(store: ResultsStore, dataset: str, rows: list[Mapping[str, Any]]) -> None:
    """A dataset's thumbnails (``evaluation.pictures.thumbnails``), in one file."""
    store.append(THUMBNAILS, [{"dataset": dataset, **row} for row in rows], replace_where={"dataset": dataset})


def read(store: ResultsStore, table: str, keys: Iterable[str]) -> pd.DataFrame:
    """The rows of ``keys`` (trial ids, or dataset keys for thumbnails) in one of ``TABLES``, in the
    order given; a key without a file has none (empty: the store has none of them)."""
    parts, bad = [], []
    for key in dict.fromkeys(keys):
        path = store.key_path(table, key)
        if store.fs.get_file_info(path).type != pafs.FileType.File:
            continue
        try:
            with store.fs.open_input_stream(path) as src:
                parts.append(files.decode(src.read()))
        except (pa.ArrowException, OSError) as err:
            bad.append((path, err))
    if bad:
        raise store._unreadable(bad, table)
    return files.to_frame(parts)
