"""``sslab pretrain METHOD --set NAME=VALUE``: one configuration of one method, trained as a study of
its own, seen by ``sslab status``, ``sslab report``, the dashboard and ``sslab export`` like any
study; and ``--set`` on every study command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslab import cli
from sslab.results.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path) -> Path:
    """An ImageFolder of 24 px RGB images: train/ and test/, one folder per class (stripes, blobs)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    for split, count in (("train", 48), ("test", 16)):
        for label, name in enumerate(("stripes", "blobs")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                if label == 0:
                    grey = ((xx + rng.integers(0, 6)) // 3 % 2) * 200.0
                else:
                    grey = ((yy - rng.uniform(6, 18)) ** 2 + (xx - rng.uniform(6, 18)) ** 2 < 30) * 200.0
                pixels = np.clip(grey[..., None] * rng.uniform(0.5, 1, 3) + rng.normal(0, 12, (24, 24, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def test_parse_settings_reads_literals_booleans_and_strings():
    assert cli.parse_settings(["temperature=0.2", "τ=1e-3", "symmetric=true", "tasks=rotation,jigsaw",
                               "task_weights=[1, 2]", "loss_form=nce"]) == {
        "temperature": 0.2, "τ": 0.001, "symmetric": True, "tasks": "rotation,jigsaw", "task_weights": [1, 2],
        "loss_form": "nce"}
    with pytest.raises(ValueError, match=r"--set takes NAME=VALUE .* got 'temperature'"):
        cli.parse_settings(["temperature"])


def test_a_study_script_refuses_a_bad_setting_in_one_line_naming_the_fields(capsys):
    from sslab.studies.pirl_lambda import STUDY

    with pytest.raises(SystemExit) as done:
        cli.run(STUDY, ["--set", "tau=0.2"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "no hyperparameter named 'tau'" in err and "temperature (τ)" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit):
        cli.run(STUDY, ["--set", "λ=0.3"])
    assert "varies ['loss_weight']" in capsys.readouterr().err


def test_pretrain_without_a_method_lists_the_methods(capsys):
    assert cli.main(["pretrain"]) == 2
    assert "name a method (one of " in capsys.readouterr().err
    assert cli.main(["pretrain", "--help"]) == 0
    assert "simclr" in capsys.readouterr().out


def test_pretrain_trains_one_configuration_seen_by_status_report_dashboard_and_export(tmp_path, capsys):
    folder = _folder(tmp_path / "images")
    root = tmp_path / "results"
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "sslab.cli", "pretrain", "simclr", "--dataset", f"imagefolder:{folder}",
         "--set", "temperature=0.2", "--set", "d=32", "--epochs", "1", "--results", str(root)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:]

    trials = ResultsStore(str(root), "pretrain-simclr").read("trials")
    assert len(trials) == 1 and trials["status"].iloc[0] == "ok"
    assert trials["config/temperature"].iloc[0] == 0.2 and trials["config/projection_dim"].iloc[0] == 32
    trial_id = trials["trial_id"].iloc[0]

    assert cli.main(["status", "--results", str(root)]) == 0
    overview = capsys.readouterr().out
    assert "pretrain-simclr" in overview and "finished" in overview
    assert cli.main(["report", "pretrain-simclr", "--results", str(root), "--format", "csv"]) == 0
    assert trial_id in capsys.readouterr().out

    from sslab.dashboard.store import read_study, scan

    assert "pretrain-simclr" in scan(str(root))
    assert read_study(str(root), "pretrain-simclr").trials["trial_id"].tolist() == [trial_id]

    out = tmp_path / "backbone.pt"
    assert cli.main(["export", "pretrain-simclr", "--results", str(root), "--out", str(out)]) == 0
    import sslab

    model = sslab.load_backbone(out)
    assert model.about["trial_id"] == trial_id and model.about["config"]["temperature"] == 0.2


def test_the_store_of_a_study_chosen_by_another_metric_is_found_by_its_name():
    study = cli._study("pirl_search-rankme")
    assert (study.name, study.metric, study.mode) == ("pirl_search-rankme", "rankme", "max")
    with pytest.raises(SystemExit, match="unknown study"):
        cli._study("pirl_search-accuracy")
