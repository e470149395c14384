"""Per-configuration mean, spread and count over seeds; which gaps exceed the spread; totals."""

import math

import pandas as pd
import pytest

from sslab.plan.profiles import get_profile
from sslab.plan.study import Finding, Study
from sslab.results.summary import CONTRADICTED, NOT_ESTABLISHED, REPRODUCED, by_configuration, describe, judge, totals


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


def _baselines(values):
    return pd.DataFrame([{"backbone": "resnet18-w8-cifar", "seed": s, "knn_top1": v} for s, v in enumerate(values)])


def test_every_configuration_is_measured_against_the_random_init_baseline_with_its_spread():
    # baseline 0.25 ± 0.02: λ=.5 (0.31 ± 0.01) beats it beyond the spread; λ=0 (0.22 ± 0.02) is below;
    # λ=1 (0.29 ± 0.04) is above, but within the spread
    table = by_configuration(_trials(), ["loss_weight"], "knn_top1", baselines=_baselines([0.23, 0.25, 0.27]))
    table = table.set_index("config/loss_weight")
    assert table["vs_baseline"].to_dict() == pytest.approx({0.0: -0.03, 0.5: 0.06, 1.0: 0.04})
    assert table["beats_baseline"].to_dict() == {0.0: False, 0.5: True, 1.0: False}
    lines = describe(table.reset_index(), ["loss_weight"], "knn_top1", _baselines([0.23, 0.25, 0.27]))
    assert lines[2] == ("random init: knn_top1 0.250 ± 0.020 over 3 seed(s); configurations -0.030 to +0.060 "
                        "over it; 1 of 3 beat it beyond the spread")
    one_seed = by_configuration(_trials().query("seed == 0"), ["loss_weight"], "knn_top1", baselines=_baselines([0.4]))
    assert one_seed["beats_baseline"].isna().all()  # one seed: not established either way
    below = describe(one_seed, ["loss_weight"], "knn_top1", _baselines([0.4]))
    assert "whether they beat it is not established" in below[2]
    assert below[3].startswith("no configuration beats the random-init baseline")


def test_a_study_of_one_configuration_over_seeds_is_summarised_against_the_baseline():
    """A study without knobs (one method, seeds only) was summarised as having no finished trial."""
    trials = pd.DataFrame([{"trial_id": f"ce-seed={s}", "status": "ok", "method": "context_encoder", "seed": s,
                            "knn_top1": v} for s, v in enumerate([0.300, 0.290, 0.289])])
    table = by_configuration(trials, [], "knn_top1", baselines=_baselines([0.238, 0.253, 0.265]))
    (row,) = table.to_dict("records")
    assert row["method"] == "context_encoder" and row["n"] == 3 and row["mean"] == pytest.approx(0.293)
    assert row["vs_baseline"] == pytest.approx(0.293 - 0.252) and row["beats_baseline"] is True
    lines = describe(table, [], "knn_top1", _baselines([0.238, 0.253, 0.265]))
    assert lines[0] == "best: context_encoder: knn_top1 0.293 ± 0.006 over 3 seed(s)"
    assert lines[1:] == ["random init: knn_top1 0.252 ± 0.014 over 3 seed(s); +0.041 over it; "
                         "1 of 1 beat it beyond the spread"]


@pytest.mark.parametrize("better, worse, verdict, why", [
    (0.5, 0.0, REPRODUCED, "+0.090 beyond the spread 0.030 (3 and 3 seeds)"),
    (0.0, 0.5, CONTRADICTED, "-0.090: the opposite, beyond the spread 0.030 (3 and 3 seeds)"),
    (0.5, 1.0, NOT_ESTABLISHED, "+0.020 within the spread 0.050 (3 and 3 seeds)"),
    (0.5, 0.25, NOT_ESTABLISHED, "a configuration it compares has no finished trial"),
])
def test_a_finding_is_reproduced_contradicted_or_not_established_by_the_spread(better, worse, verdict, why):
    finding = Finding("claim", {"loss_weight": better}, {"loss_weight": worse}).to_dict()
    judged = judge(finding, _trials(), "knn_top1")
    assert (judged["verdict"], judged["why"]) == (verdict, why)
    assert judge(finding, _trials().query("seed == 0"), "knn_top1")["verdict"] == NOT_ESTABLISHED  # one seed
    flipped = judge(finding, _trials(), "knn_top1", mode="min")["verdict"]
    assert flipped == {REPRODUCED: CONTRADICTED, CONTRADICTED: REPRODUCED}.get(verdict, NOT_ESTABLISHED)


def test_a_layer_finding_compares_two_metrics_of_the_same_configuration():
    trials = _trials().assign(probe_res5_top1=lambda t: t.knn_top1 + 0.1, probe_res4_top1=lambda t: t.knn_top1)
    finding = Finding("res5 beats res4", {"loss_weight": 0.5}, metric="probe_res5_top1",
                      worse_metric="probe_res4_top1").to_dict()
    judged = judge(finding, trials, "knn_top1")
    assert judged["verdict"] == REPRODUCED and judged["difference"] == pytest.approx(0.1)


def test_a_finding_must_name_what_the_study_varies():
    with pytest.raises(ValueError, match="names \\['temperature'\\], which the study does not vary"):
        Study(name="s", method="pirl", grid={"loss_weight": [0.0, 0.5]},
              findings=(Finding("x", {"temperature": 0.1}),)).validate(get_profile("local"))


def test_the_printed_summary_says_each_configuration_against_the_baseline_and_judges_the_findings():
    from rich.console import Console

    from sslab.results.progress import print_summary

    console = Console(record=True, width=200)
    findings = [Finding("λ = .5 beats λ = 0", {"loss_weight": 0.5}, {"loss_weight": 0.0}, source="Fig. 5").to_dict()]
    print_summary(console, {"loss_weight": "λ"}, ["loss_weight"], "knn_top1", "max", _trials(),
                  _baselines([0.23, 0.25, 0.27]), findings=findings)
    text = console.export_text()
    rows = {cells[0]: cells[1:] for line in text.splitlines() if line.startswith("│")
            for cells in [[c.strip() for c in line.split("│")[1:-1]]] if len(cells) == 8}
    # the per-configuration table: λ=.5 is best and beats random init beyond the spread, λ=0 trails it
    assert rows["0.500"] == ["0.310", "0.010", "3", "best", "no", "+0.060", "yes"]
    assert rows["0.000"] == ["0.220", "0.020", "3", "-0.090", "yes", "-0.030", "no"]
    assert rows["1.000"] == ["0.290", "0.040", "3", "-0.020", "no", "+0.040", "no"]  # above it, within the spread
    assert "random init: knn_top1 0.250 ± 0.020 over 3 seed(s); configurations -0.030 to +0.060 over it" in text
    assert "λ = .5 beats λ = 0 (Fig. 5)" in text and "reproduced" in text
    assert "+0.090 beyond the spread 0.030 (3 and 3 seeds)" in text
    assert "compute: 10 trial(s) (9 ok, 1 failed); wall 91 s, device 182 s, 905 images" in text
