"""A label-free study's pick, checked with labels afterwards: which trial is the pick, when two kNN
numbers may be compared, and what the summary says beside the kNN-chosen study's pick."""

import math

import pandas as pd
import pytest

from sslab.results import metrics, picks
from sslab.results.store import ResultsStore

SHA = {"data/dataset": "cifar10", "data/train_content_sha256": "aaaa", "data/test_content_sha256": "bbbb"}
EVAL = {"eval/knn_k": 200, "eval/probe_epochs": 30}


def _trials(rows):
    return pd.DataFrame([{"status": "ok", "method": "pirl", "seed": 0, "error": "", **row} for row in rows])


def test_the_best_trial_is_the_best_finished_one_by_the_metric_in_its_mode():
    trials = _trials([{"trial_id": "a", "rankme": 30.0}, {"trial_id": "b", "rankme": 50.0},
                      {"trial_id": "c", "rankme": 90.0, "status": "failed"}, {"trial_id": "d", "rankme": math.nan},
                      {"trial_id": "e", "rankme": 10.0, "status": "stopped"}])
    assert picks.best_trial(trials, "rankme", "max")["trial_id"] == "b"
    assert picks.best_trial(trials, "rankme", "min")["trial_id"] == "a"
    assert picks.best_trial(trials, "lidar", "max") is None and picks.best_trial(trials.iloc[0:0], "rankme", "max") is None
    assert picks.best_trial(trials[trials.status != "ok"], "rankme", "max") is None


def test_two_knn_numbers_compare_only_on_the_same_labelled_images_and_evaluation():
    check = {"data/eval_dataset": "cifar10", "data/eval_train_content_sha256": "aaaa",
             "data/eval_test_content_sha256": "bbbb", **EVAL}
    assert picks.same_evaluation(check, {**SHA, **EVAL})  # a kNN-chosen trial: its own training data's
    assert not picks.same_evaluation(check, {**SHA, **EVAL, "data/train_content_sha256": "cccc"})
    assert not picks.same_evaluation(check, {**SHA, **EVAL, "eval/knn_k": 20})
    # a trial evaluated on an --eval-dataset: those images, not its training data's
    evaluated = {**SHA, "data/train_content_sha256": "zzzz", **{k: v for k, v in check.items()}}
    assert picks.same_evaluation(check, evaluated)
    assert not picks.same_evaluation(check, {**evaluated, "data/eval_test_content_sha256": "yyyy"})
    assert picks.same_evaluation(check, {**SHA, **EVAL, "data/eval_dataset": math.nan})  # NaN: no eval dataset


def test_a_studys_store_chosen_by_another_metric_names_the_study_it_came_from():
    for study, metric in (("pirl_search", "rankme"), ("a-b", "embedding/rankme"), ("x", "lidar")):
        assert metrics.chosen_from(metrics.chosen_by(study, metric), metric) == study
    assert metrics.chosen_by("pirl_search", "embedding/rankme") == "pirl_search-embedding_rankme"
    assert metrics.chosen_from("pirl_search", "rankme") is None and metrics.chosen_from("-rankme", "rankme") is None


def _check(store: ResultsStore, trial_id: str, knn: float, checked_at: str, **changes) -> dict:
    row = {"trial_id": trial_id, "picked_by": "rankme", "mode": "max", "picked_value": 42.5,
           "data/eval_dataset": "cifar10", "data/eval_train_content_sha256": "aaaa",
           "data/eval_test_content_sha256": "bbbb", **EVAL, metrics.KNN: knn, metrics.probe("res5"): 0.41,
           picks.RANDOM_INIT + metrics.KNN: 0.238, "checked_at": checked_at, **changes}
    store.append(picks.TABLE, [row])
    return row


def test_the_summary_says_the_picks_knn_beside_the_knn_chosen_studys_pick(tmp_path):
    chosen = ResultsStore(tmp_path, metrics.chosen_by("pirl_search", "rankme"))
    trials = _trials([{"trial_id": "p1", **SHA}, {"trial_id": "p2", **SHA}])
    _check(chosen, "p1", 0.350, "2026-12-08T01:00:00")
    _check(chosen, "p2", 0.372, "2026-12-08T02:00:00")  # the newest check: the current pick
    _check(chosen, "elsewhere", 0.9, "2026-12-08T03:00:00")  # a trial of another setting: not shown
    said = picks.stored_lines(chosen, trials, "rankme")
    assert said[0].startswith("chosen without labels by rankme: p2 (rankme 42.5); evaluated afterwards with the "
                              "labels it never read (cifar10): kNN 0.372, res5 probe 0.410 (random init: kNN 0.238)")
    assert said[1] == "the kNN-chosen study pirl_search has no finished trial in this results root to compare with " \
                      "(run it: sslab run pirl_search)"

    base = ResultsStore(tmp_path, "pirl_search")
    base.write_metadata({"metric": "knn_top1", "mode": "max"})
    for trial_id, knn in (("k1", 0.391), ("k2", 0.401)):
        base.record_trial({"trial_id": trial_id, "method": "pirl", "seed": 0, "status": "ok", "error": "",
                           metrics.KNN: knn, **SHA, **EVAL})
    said = picks.stored_lines(chosen, trials, "rankme")
    assert said[1] == ("the kNN-chosen study pirl_search picked k2: kNN 0.401, so the rankme pick is -0.029 kNN from "
                       "it (one run of each pick: this alone says nothing about rankme in general)")
    base.record_trial({"trial_id": "k2", "method": "pirl", "seed": 0, "status": "ok", "error": "", metrics.KNN: 0.401,
                       **SHA, **EVAL, "eval/knn_k": 20})
    assert "evaluated on other labelled images or settings: not compared" in picks.stored_lines(chosen, trials, "rankme")[1]
    # a study not chosen by another metric, or without a check, says its check alone, or nothing
    plain = ResultsStore(tmp_path, "plain")
    _check(plain, "p1", 0.35, "2026-12-08T01:00:00")
    assert len(picks.stored_lines(plain, trials, "rankme")) == 1
    assert picks.stored_lines(ResultsStore(tmp_path, "none"), trials, "rankme") == []


@pytest.mark.parametrize("value", [None, math.nan])
def test_a_check_without_a_probe_or_baseline_says_the_knn_alone(value):
    (line,) = picks.lines({"trial_id": "t", "picked_by": "lidar", "picked_value": 3.0, "data/eval_dataset": "d",
                           metrics.KNN: 0.5, metrics.probe("res5"): value})
    assert line.endswith("(d): kNN 0.500")
