"""Choosing without labels: rank agreement, regret, and the verdicts on claims about them."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from sslab.plan.study import Picks, RanksBetter, Study
from sslab.results import metrics, selection
from sslab.results.summary import CONTRADICTED, NOT_ESTABLISHED, REPRODUCED, judge


def test_spearman_is_the_correlation_of_the_ranks():
    assert selection.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert selection.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x, y = [0.3, 0.1, 0.9, 0.5, 0.7], [2.0, 1.0, 3.0, 5.0, 4.0]
    d = np.array([2, 1, 5, 3, 4]) - np.array([2, 1, 3, 5, 4])  # rank differences, no ties
    assert selection.spearman(x, y) == pytest.approx(1 - 6 * np.sum(d ** 2) / (5 * (25 - 1)))
    assert math.isnan(selection.spearman([1, 1, 1], [1, 2, 3])) and math.isnan(selection.spearman([1, 2], [1, 2]))


def test_kendall_tau_b_counts_concordant_pairs_with_ties_corrected():
    x, y = [1, 2, 2, 3], [1, 3, 2, 2]
    # by hand: pairs (i<j) concordant 3, discordant 1; 5 pairs untied in x, 5 in y: τ_b = 2 / √(5·5)
    assert selection.kendall(x, y) == pytest.approx(0.4)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=9), rng.normal(size=9)
    pairs = list(combinations(range(9), 2))
    expected = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs) / len(pairs)  # no ties: τ_a
    assert selection.kendall(a, b) == pytest.approx(expected)


def test_the_bootstrap_interval_holds_the_statistic_and_narrows_to_it_for_a_perfect_order():
    x = np.arange(8.0)
    assert selection.bootstrap_interval(x, 2 * x + 1, selection.spearman) == (pytest.approx(1.0), pytest.approx(1.0))
    rng = np.random.default_rng(1)
    noisy = x + rng.normal(0, 3, 8)
    low, high = selection.bootstrap_interval(x, noisy, selection.spearman)
    assert low < selection.spearman(x, noisy) < high and high - low > 0.1


def _trials(knn, measure, method="simclr", seeds=1, noise=0.0, name="rankme"):
    """One trial per configuration and seed: ``config/temperature`` numbers the configurations."""
    rng = np.random.default_rng(0)
    rows = [{"trial_id": f"{method}-{c}-{s}", "status": "ok", "method": method, "config/temperature": float(c),
             "seed": s, "knn_top1": k + rng.normal(0, noise), name: m}
            for c, (k, m) in enumerate(zip(knn, measure)) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_regret_is_the_best_target_minus_that_of_the_configuration_the_measure_picks():
    table = selection.per_configuration(_trials([0.40, 0.45, 0.42], [3.0, 2.0, 9.0]), ["temperature"],
                                         ["knn_top1", "rankme"])
    assert selection.regret(table, "rankme", "max") == (pytest.approx(0.03), 2)  # picks 0.42, best is 0.45
    assert selection.regret(table, "rankme", "min") == (pytest.approx(0.0), 1)


def test_the_selection_table_signs_a_min_measure_so_that_plus_one_agrees_with_the_labels():
    knn = [0.30, 0.35, 0.40, 0.45]
    trials = pd.concat([_trials(knn, [1, 2, 3, 4]), _trials(knn, [4, 3, 2, 1], name="alignment").drop(
        columns=["knn_top1", "status", "seed", "method", "config/temperature"])], axis=1)
    table = selection.selection_table(trials, ["temperature"], {"rankme": "max", "alignment": "min"})
    rows = table.set_index("measure")
    assert rows.loc["rankme", "spearman"] == pytest.approx(1) and rows.loc["alignment", "spearman"] == pytest.approx(1)
    assert rows.loc["alignment", "kendall"] == pytest.approx(1) and (table["regret"] == 0).all()
    assert set(table["target"]) == {"knn_top1"}  # no probe column in these trials: no row for it


def test_picks_is_reproduced_contradicted_or_not_established_by_regret_and_spread():
    claim = Picks("RankMe picks within 0.01", "rankme", "max", method="simclr").to_dict()
    picks_best = _trials([0.40, 0.45, 0.44], [1.0, 5.0, 2.0], seeds=3, noise=0.001)
    assert judge(claim, picks_best, "knn_top1")["verdict"] == REPRODUCED
    picks_worst = _trials([0.30, 0.45, 0.44], [9.0, 5.0, 2.0], seeds=3, noise=0.001)
    verdict = judge(claim, picks_worst, "knn_top1")
    assert verdict["verdict"] == CONTRADICTED and verdict["difference"] == pytest.approx(-0.15, abs=0.01)
    one_seed = judge(claim, _trials([0.40, 0.45, 0.44], [1.0, 5.0, 2.0]), "knn_top1")
    assert one_seed["verdict"] == NOT_ESTABLISHED and "one seed establishes nothing" in one_seed["why"]


def test_ranks_better_compares_the_two_measures_rank_agreement_by_a_paired_bootstrap():
    knn = np.linspace(0.3, 0.5, 9)
    trials = _trials(knn, knn * 10, seeds=2, noise=0.0005)  # rankme orders the configurations as kNN does
    trials["lidar"] = np.repeat(np.random.default_rng(3).permutation(9).astype(float), 2)  # lidar: at random
    claim = RanksBetter("LiDAR ranks better than RankMe", "lidar", "max", "rankme", "max").to_dict()
    verdict = judge(claim, trials, "knn_top1")
    assert verdict["verdict"] == CONTRADICTED and verdict["worse_mean"] == pytest.approx(1)
    opposite = RanksBetter("RankMe ranks better than LiDAR", "rankme", "max", "lidar", "max").to_dict()
    assert judge(opposite, trials, "knn_top1")["verdict"] == REPRODUCED
    assert judge(opposite, trials[trials["seed"] == 0], "knn_top1")["verdict"] == NOT_ESTABLISHED


def test_a_study_refuses_a_claim_with_a_bad_mode_or_an_untrained_method():
    from small import SMALL

    study = Study(name="s", method="simclr", grid={"temperature": [0.1, 0.5]},
                  findings=(Picks("x", "rankme", "highest"),))
    with pytest.raises(ValueError, match="a mode is 'max' or 'min'"):
        study.validate(SMALL)
    study = Study(name="s", method="simclr", grid={"temperature": [0.1, 0.5]},
                  findings=(RanksBetter("x", "lidar", "max", "rankme", "max", method="vicreg"),))
    with pytest.raises(ValueError, match="names method 'vicreg', which the study does not train"):
        study.validate(SMALL)


def test_every_summary_says_how_far_the_label_free_measures_could_have_chosen():
    from rich.console import Console

    from sslab.reports import markdown_report
    from sslab.results.progress import print_summary

    knn = [0.30, 0.35, 0.40, 0.45]
    trials = pd.concat([_trials(knn, [1.0, 2.0, 3.0, 4.0]), _trials(knn, [4.0, 1.0, 2.0, 3.0], method="vicreg")],
                       ignore_index=True)
    console = Console(record=True, width=200)
    print_summary(console, {}, ["temperature"], "knn_top1", "max", trials, pd.DataFrame())
    text = console.export_text()
    assert "choosing without labels" in text
    simclr = next(line for line in text.splitlines() if "simclr" in line and "rankme" in line)
    assert "1.000 [1.000, 1.000]" in simclr and simclr.rstrip(" │").endswith("0.000")  # the right order: no regret
    vicreg = next(line for line in text.splitlines() if "vicreg" in line and "rankme" in line)
    assert vicreg.rstrip(" │").endswith("0.150")  # rankme picks vicreg's 0.30, the best is 0.45
    report = markdown_report("s", ["temperature"], "knn_top1", "max", trials, pd.DataFrame())
    assert "| simclr | rankme | knn_top1 | 4 | 1 | +1.00 [+1.00, +1.00]" in report
    print_summary(console := Console(record=True, width=200), {}, ["temperature"], "knn_top1", "max",
                  trials.drop(columns=["rankme"]), pd.DataFrame())
    assert "choosing without labels" not in console.export_text()  # no measure: no table


def test_the_embeddings_measures_are_judged_too_for_the_methods_that_have_one():
    knn = [0.30, 0.35, 0.40, 0.45]
    simclr = _trials(knn, [1.0, 2.0, 3.0, 4.0]).assign(**{metrics.embedding("rankme"): [4.0, 3.0, 2.0, 1.0]})
    jigsaw = _trials(knn, [4.0, 1.0, 2.0, 3.0], method="jigsaw")  # a pretext task: no embedding
    rows = selection.label_free_rows(pd.concat([simclr, jigsaw], ignore_index=True))
    knn_rows = rows[rows.target == metrics.KNN].set_index(["method", "measure"])
    assert sorted(knn_rows.index) == [("jigsaw", "rankme"), ("simclr", "embedding/rankme"), ("simclr", "rankme")]
    assert knn_rows.loc[("simclr", "embedding/rankme"), "spearman"] == pytest.approx(-1.0)
    assert knn_rows.loc[("simclr", "embedding/rankme"), "regret"] == pytest.approx(0.15)
