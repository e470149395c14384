"""The pick of a study that chose without labels, checked with labels afterwards.

A study whose metric reads no label (``--metric rankme``, a label-free search) trains, stops and
chooses blind: its data is read without labels (``Study.reads_labels``). When that data has
labels after all (CIFAR-10 with ``--metric rankme``), the driver then evaluates the one trial the
study picks, once its choosing is over, as ``--eval-dataset <its own dataset>`` would have: kNN
and the probes on the labelled splits, beside the random-init backbone's on the same images
(``engine/baselines.check_pick``). The row is kept in the ``label_checks`` table, keyed by the
trial: the labels reach this number, never the choice.

Beside it, the study of the same name chosen by kNN (``pirl_search`` beside ``pirl_search-rankme``),
when the results root holds one: its pick and its kNN, compared only when both were evaluated on
exactly the same labelled images (their content hashes) with the same evaluation settings.

Pure pandas over the store: the printed summary and ``sslab report`` both read it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from sslab.results import metrics

#: the store's table of checked picks, one row per picked trial
TABLE = "label_checks"
#: a check row's columns for the random-init backbone's evaluation: ``random_init/<metric>``
RANDOM_INIT = "random_init/"
#: the columns of a check row that say which labelled images it was evaluated on
EVALUATED_ON = ("data/eval_dataset", "data/eval_train_content_sha256", "data/eval_test_content_sha256")


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The finished trial with the best ``metric`` (``mode``: "max" or "min"); None without one."""
    if trials.empty or metric not in trials:
        return None
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    ok = ok[ok[metric].notna()]
    if ok.empty:
        return None
    values = ok[metric].astype(float)
    return ok.loc[values.idxmax() if mode == "max" else values.idxmin()]


def evaluated_on(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """The labelled images a trial's kNN was computed on: its ``--eval-dataset``'s splits, or else
    its own training data's (name, train and test content hashes)."""
    if _given(row.get("data/eval_dataset")):
        return tuple(row.get(c) for c in EVALUATED_ON)
    return row.get("data/dataset"), row.get("data/train_content_sha256"), row.get("data/test_content_sha256")


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def same_evaluation(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two trials' kNN numbers are comparable: the same labelled images and the same
    evaluation settings (every ``eval/*`` field both record)."""
    settings = [c for c in a.keys() if str(c).startswith("eval/") and c in b]
    return evaluated_on(a) == evaluated_on(b) and all(a[c] == b[c] for c in settings)


def lines(check: Mapping[str, Any], base: str | None = None, base_pick: Mapping[str, Any] | None = None) -> list[str]:
    """What a summary says of a checked pick and, given the kNN-chosen study's name and pick, of that."""
    metric, knn = check["picked_by"], check.get(metrics.KNN)
    res5, random_knn = check.get(metrics.probe("res5")), check.get(RANDOM_INIT + metrics.KNN)
    said = [f"chosen without labels by {metric}: {check['trial_id']} ({metric} {check['picked_value']:.4g}); "
            f"evaluated afterwards with the labels it never read ({check['data/eval_dataset']}): "
            f"kNN {knn:.3f}" + (f", res5 probe {res5:.3f}" if _given(res5) else "")
            + (f" (random init: kNN {random_knn:.3f})" if _given(random_knn) else "")]
    if base is None:
        return said
    if base_pick is None:
        return said + [f"the kNN-chosen study {base} has no finished trial in this results root to compare with "
                       f"(run it: sslab run {base})"]
    if not same_evaluation(check, base_pick):
        return said + [f"the kNN-chosen study {base} picked {base_pick['trial_id']}, evaluated on other labelled "
                       "images or settings: not compared"]
    gap = float(knn) - float(base_pick[metrics.KNN])
    return said + [f"the kNN-chosen study {base} picked {base_pick['trial_id']}: kNN {base_pick[metrics.KNN]:.3f}, "
                   f"so the {metric} pick is {gap:+.3f} kNN from it (one run of each pick: this alone says nothing "
                   f"about {metric} in general)"]


def stored_lines(store, trials: pd.DataFrame, metric: str) -> list[str]:
    """``lines`` for the newest check recorded of a trial among ``trials`` (the shown setting's) in
    ``store`` (a ``store.ResultsStore``), with the kNN-chosen study beside it when ``store`` is
    ``<study>-<metric>`` and the results root holds ``<study>``; [] without a check."""
    from sslab.results.store import ResultsStore
    from sslab.results.summary import current_setting

    checks = store.read(TABLE)
    if checks.empty or trials.empty:
        return []
    checks = checks[checks["trial_id"].isin(set(trials["trial_id"]))]
    if checks.empty:
        return []
    check = checks.sort_values("checked_at").iloc[-1].to_dict()
    base = metrics.chosen_from(store.study, metric)
    if base is None:
        return lines(check)
    other = ResultsStore(store.root, base)
    meta = other.metadata()
    shown = current_setting(other.read("trials"), other.read("baselines"), meta).trials
    base_metric, base_mode = metrics.study_metrics(meta)[0]
    pick = best_trial(shown, base_metric, base_mode) if base_metric == metrics.KNN else None
    return lines(check, base, None if pick is None else pick.to_dict())

