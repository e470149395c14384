"""The sslab command: lists the shipped studies, refuses unknown ones clearly."""

import pytest

from sslab.platform.cli import available_studies, main


def test_studies_lists_the_pirl_lambda_ablation(capsys):
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "pirl_lambda" in out and "λ" in out
    assert available_studies()["pirl_lambda"].grid == {"loss_weight": [0.0, 0.25, 0.5, 0.75, 1.0]}


def test_unknown_study_names_the_known_ones():
    with pytest.raises(SystemExit, match="unknown study 'nope'.*pirl_lambda"):
        main(["run", "nope"])


def test_report_without_results_says_how_to_get_them(tmp_path):
    with pytest.raises(SystemExit, match="sslab run pirl_lambda"):
        main(["report", "pirl_lambda", "--results", str(tmp_path)])
