"""``--set NAME=VALUE`` on a study (``Study.with_settings``): names or paper symbols, layered over
every method's settings and under the grid point, part of each trial's specification."""

from __future__ import annotations

import pytest

from small import SMALL
from sslab.plan.spec import Specs, data_identity
from sslab.plan.study import Study

STUDY = Study(name="lam", method="pirl", grid={"loss_weight": [0.0, 0.5]}, base={"num_negatives": 64})
COMPARE = Study(name="two", methods={"simclr": {"temperature": 0.3}, "byol": {}})
SPLIT = {"num_images": 200, "num_classes": 2, "classes": ["a", "b"], "image_shape": [32, 32],
         "content_sha256": "0123456789abcdef"}


def _specs(study: Study) -> Specs:
    return Specs(study, SMALL, data_identity(SMALL, SPLIT, SPLIT))


def test_a_setting_by_name_or_symbol_reaches_every_trial_and_changes_its_id():
    plain = _specs(STUDY).planned_specs(1)
    by_name = _specs(STUDY.with_settings({"temperature": 0.2})).planned_specs(1)
    by_symbol = _specs(STUDY.with_settings({"τ": 0.2})).planned_specs(1)
    assert [s.config["temperature"] for s in by_name] == [0.2, 0.2]
    assert [s.trial_id for s in by_name] == [s.trial_id for s in by_symbol]  # τ is temperature
    assert not {s.trial_id for s in by_name} & {s.trial_id for s in plain}  # another computation, another id
    assert [s.point for s in by_name] == [s.point for s in plain]  # the study still compares λ only


def test_a_setting_wins_over_the_studys_base_and_a_methods_entry():
    spec = _specs(STUDY.with_settings({"num_negatives": 8})).planned_specs(1)[0]
    assert spec.config["num_negatives"] == 8  # the base said 64
    simclr = next(s for s in _specs(COMPARE.with_settings({"temperature": 0.1})).planned_specs(1) if s.method == "simclr")
    assert simclr.config["temperature"] == 0.1  # simclr's entry said 0.3; byol, which has no τ, trains as before
    optimiser = _specs(STUDY.with_settings({"lr": 0.5})).planned_specs(1)[0]  # the optimiser's settings by symbol too
    assert optimiser.config["base_lr"] == 0.5


def test_a_knob_the_study_varies_is_refused():
    with pytest.raises(ValueError, match=r"varies \['loss_weight'\]: --set fixes what a study does not vary"):
        STUDY.with_settings({"λ": 0.3})


def test_an_unknown_or_ambiguous_name_lists_the_methods_hyperparameters():
    with pytest.raises(ValueError, match=r"no hyperparameter named 'tau'.*pirl: .*temperature \(τ\)"):
        STUDY.with_settings({"tau": 0.2})
    # byol's projection_dim is d, simclr's is d as well: the same field, not ambiguous
    assert COMPARE.field_name("d") == "projection_dim"
    with pytest.raises(ValueError, match=r"'λ' is the symbol of several hyperparameters \[.loss_weight., .off_diagonal_weight.\]"):
        Study(name="x", methods={"barlow_twins": {}, "pirl": {}}).field_name("λ")


def test_a_bad_value_fails_when_the_study_is_validated():
    with pytest.raises(ValueError, match=r"temperature \(τ\) = -1"):
        STUDY.with_settings({"temperature": -1}).validate(SMALL)


def test_a_study_may_resize_a_profile_and_the_command_line_wins():
    study = Study(name="wide", method="simclr", grid={"temperature": [0.1, 0.5]},
                  profile_changes={SMALL.name: {"steps": 40, "train_subset": 100}})
    sized = study.sized(SMALL)
    assert (sized.steps, sized.train_subset, sized.batch_size) == (40, 100, SMALL.batch_size)
    assert study.sized(SMALL, {"epochs": 1}).steps is None  # --epochs replaces the study's step budget
    assert study.sized(SMALL, {"train_subset": 50}).train_subset == 50
    assert Study(name="plain", method="simclr").sized(SMALL) is SMALL


def test_metric_chooses_by_another_metric_with_its_own_mode_into_its_own_store():
    chosen = STUDY.with_metric("uniformity")
    assert (chosen.name, chosen.metric, chosen.mode) == ("lam-uniformity", "uniformity", "min")
    assert STUDY.with_metric("rankme").mode == "max"
    with pytest.raises(ValueError, match=r"--metric 'accuracy': not a metric .* e.g. knn_top1, rankme"):
        STUDY.with_metric("accuracy")
    with pytest.raises(ValueError, match="alpha_req_gap"):  # α-ReQ has no better end
        STUDY.with_metric("alpha_req")
