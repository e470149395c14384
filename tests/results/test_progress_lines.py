"""The line a study prints as each trial ends: what it chooses by, and no kNN where it reads no label."""

import math

import pytest

from sslab.plan.profiles import get_profile
from sslab.plan.study import Study
from sslab.results.progress import Progress


def _line(study: Study, row: dict, capsys) -> str:
    progress = Progress(study, get_profile("local"))
    progress._bar, progress._task = type("Bar", (), {"advance": lambda self, task: None})(), 0
    progress.trial_finished("t", {"error": "", "wall_s": 12.0, **row})
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("metric, ok, stopped", [
    ("knn_top1", "✓ t kNN 0.400 invariance 0.800 12s", "– t stopped early (per-epoch kNN 0.300)"),
    ("rankme", "✓ t rankme 34.200 invariance 0.800 12s", "– t stopped early"),
])
def test_a_trials_line_names_what_the_study_chooses_by(metric, ok, stopped, capsys):
    study = Study(name="s", method="pirl", metric=metric, grid={"loss_weight": [0.0]})
    finished = {"status": "ok", "knn_top1": 0.4, "rankme": 34.2, "invariance_l2_mean": 0.8}
    if metric == "rankme":
        del finished["knn_top1"]  # chosen without labels: no kNN was computed
    assert _line(study, finished, capsys) == ok
    ended = {"status": "stopped", "error": "stopped early", "monitor_knn_top1": 0.3 if metric == "knn_top1" else None,
             "rankme": math.nan}
    assert _line(study, ended, capsys) == stopped
    if metric == "rankme":  # its last value of the measure, where the row has it
        assert _line(study, {**ended, "rankme": 30.5}, capsys) == "– t stopped early (per-epoch rankme 30.500)"
