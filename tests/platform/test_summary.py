"""Per-configuration mean, spread and count over seeds; which gaps exceed the spread; totals."""

import math

import pandas as pd
import pytest

from sslab.platform.summary import by_configuration, describe, totals


def _trials():
    rows = []
    for weight, values in {0.0: [0.20, 0.22, 0.24], 0.5: [0.30, 0.31, 0.32], 1.0: [0.29, 0.25, 0.33]}.items():
        for seed, value in enumerate(values):
            rows.append({"trial_id": f"{weight}-{seed}", "status": "ok", "seed": seed, "config/loss_weight": weight,
                         "knn_top1": value, "wall_s": 10.0, "device_s": 20.0, "images_seen": 100})
    rows.append({"trial_id": "nan", "status": "failed", "seed": 0, "config/loss_weight": 0.75, "knn_top1": math.nan,
                 "wall_s": 1.0, "device_s": 2.0, "images_seen": 5})
    return pd.DataFrame(rows)


def test_mean_std_count_and_gap_to_the_best():
    table = by_configuration(_trials(), ["loss_weight"], "knn_top1").set_index("config/loss_weight")
    assert list(table.index) == [0.0, 0.5, 1.0]  # the failed configuration has no ok trial
    assert table.loc[0.5, "mean"] == pytest.approx(0.31) and table.loc[0.5, "std"] == pytest.approx(0.01)
    assert table.loc[0.0, "n"] == 3 and bool(table.loc[0.5, "best"])
    assert table.loc[0.0, "gap_to_best"] == pytest.approx(0.22 - 0.31)
    # |0.22 - 0.31| = 0.09 > 0.02 + 0.01: beyond the spread; |0.29 - 0.31| = 0.02 < 0.04 + 0.01: within it
    assert table.loc[0.0, "beyond_spread"] and not table.loc[1.0, "beyond_spread"]
    assert table["beyond_spread"].notna().all()
    lines = describe(table.reset_index(), ["loss_weight"], "knn_top1")
    assert lines[0].startswith("best: loss_weight=0.5: knn_top1 0.310 ± 0.010 over 3 seed(s)")
    assert lines[1] == "1 of 2 other configuration(s) trail the best by more than their spread"


def test_one_seed_says_the_spread_is_unknown_and_min_mode_picks_the_lowest():
    one_seed = _trials().query("seed == 0")
    table = by_configuration(one_seed, ["loss_weight"], "knn_top1", mode="min")
    assert table.loc[table["best"], "config/loss_weight"].item() == 0.0
    assert table["beyond_spread"].isna().all()
    assert "not testable with one seed" in describe(table, ["loss_weight"], "knn_top1")[1]


def test_totals_count_statuses_and_sum_cost():
    spent = totals(_trials())
    assert (spent["trials"], spent["ok"], spent["failed"]) == (10, 9, 1)
    assert (spent["wall_s"], spent["device_s"], spent["images_seen"]) == (91.0, 182.0, 905.0)
