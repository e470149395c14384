"""A trial's specification (src/sslab/plan/spec.py): its id changes with every recorded field, floats are
keyed exactly, and the settings group trials that may be compared."""

from __future__ import annotations

import copy
import math
from dataclasses import fields

from small import SMALL
from sslab.plan.profiles import Profile
from sslab.plan.spec import (DATA_FIELDS, EVALUATION_FIELDS, NOT_COMPUTING_FIELDS, TRAINING_FIELDS, Specs,
                                 TrialSpec, data_identity, name_of)
from sslab.plan.study import Search, Study

STUDY = Study(name="lam", method="pirl", grid={"loss_weight": [0.0, 0.5]}, base={"num_negatives": 64})
#: the loaded splits' identities (``data.Split.identity``), made up
TRAIN = {"num_images": 200, "num_classes": 2, "classes": ["a", "b"], "image_shape": [32, 32],
         "content_sha256": "0123456789abcdef"}
TEST = {**TRAIN, "num_images": 100, "content_sha256": "fedcba9876543210"}


def _specs(study: Study = STUDY, profile: Profile = SMALL, train: dict = TRAIN) -> Specs:
    return Specs(study, profile, data_identity(profile, train, TEST))


def _changed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return math.nextafter(value, math.inf)  # the smallest change a float can make
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    if value is None:
        return 0
    raise AssertionError(f"no change for {value!r}")


def test_every_recorded_field_changes_the_trial_id():
    """Change any one field of a spec by the least it can change: the id is a different one."""
    spec = _specs().spec("pirl", {"loss_weight": 0.5}, seed=0)
    base = spec.to_dict()
    ids = {spec.trial_id}
    changes = 0
    for part in ("config", "training", "evaluation", "data"):
        for key, value in base[part].items():
            other = copy.deepcopy(base)
            other[part][key] = _changed(value)
            changed = TrialSpec.from_dict(other)
            assert changed.record() != spec.record()
            assert changed.trial_id != spec.trial_id, f"{part}/{key} is recorded but not in the id"
            ids.add(changed.trial_id)
            changes += 1
    for key in ("method", "seed"):
        other = copy.deepcopy(base)
        other[key] = _changed(base[key])
        ids.add(TrialSpec.from_dict(other).trial_id)
        changes += 1
    assert len(ids) == changes + 1  # every change its own id
    assert changes > 40  # the whole config of PIRL, the profile's settings and the data's identity


def test_floats_are_keyed_exactly_and_an_integer_for_a_float_is_that_float():
    specs = _specs()
    assert specs.spec("pirl", {"loss_weight": 0.1 + 0.2}, 0).trial_id != specs.spec("pirl", {"loss_weight": 0.3}, 0).trial_id
    assert specs.spec("pirl", {"loss_weight": 1}, 0) == specs.spec("pirl", {"loss_weight": 1.0}, 0)
    # the name stays readable, with the value written exactly
    assert name_of(specs.spec("pirl", {"loss_weight": 0.1 + 0.2}, 0).trial_id) == "pirl-loss_weight=0.30000000000000004-seed=0"
    assert name_of(specs.spec("pirl", {"loss_weight": 0.25}, 3).trial_id) == "pirl-loss_weight=0.25-seed=3"


def test_the_same_specification_always_has_the_same_id():
    first = _specs().spec("pirl", {"loss_weight": 0.5}, 1)
    again = _specs(Study(name="other_name", method="pirl", grid={"loss_weight": [0.5]}, base={"num_negatives": 64}),
                   train=dict(TRAIN)).spec("pirl", {"loss_weight": 0.5}, 1)
    assert first.trial_id == again.trial_id
    assert TrialSpec.from_dict(first.to_dict()).trial_id == first.trial_id


def test_every_profile_field_is_either_part_of_a_spec_or_declared_not_to_change_what_a_trial_computes():
    """A new Profile field must be classified: otherwise it would change results without changing ids."""
    classified = set(TRAINING_FIELDS) | set(EVALUATION_FIELDS) | set(DATA_FIELDS) | set(NOT_COMPUTING_FIELDS)
    classified = classified - {"workers"} | {"num_workers"}
    assert {f.name for f in fields(Profile)} == classified


def test_what_changes_a_trial_changes_its_id_and_what_does_not_leaves_it():
    spec = _specs().spec("pirl", {"loss_weight": 0.5}, 0)
    # the smoke test's settings, another base value, other data: other trials
    assert _specs(profile=SMALL.with_overrides(epochs=1)).spec("pirl", {"loss_weight": 0.5}, 0).trial_id != spec.trial_id
    assert _specs(profile=SMALL.with_overrides(train_subset=100)).spec("pirl", {"loss_weight": 0.5}, 0).trial_id != spec.trial_id
    other_base = Study(name="lam", method="pirl", grid={"loss_weight": [0.5]}, base={"num_negatives": 32})
    assert _specs(other_base).spec("pirl", {"loss_weight": 0.5}, 0).trial_id != spec.trial_id
    changed_pixels = {**TRAIN, "content_sha256": "0123456789abcdee"}  # a changed folder, as many images
    assert _specs(train=changed_pixels).spec("pirl", {"loss_weight": 0.5}, 0).trial_id != spec.trial_id
    # where and how robustly it runs is not what it computes
    robust = SMALL.with_overrides(max_failures=5, cpus_per_worker=2.0, prefetch_batches=4, name="elsewhere")
    assert _specs(profile=robust).spec("pirl", {"loss_weight": 0.5}, 0).trial_id == spec.trial_id


def test_trials_of_one_setting_differ_only_in_what_the_study_varies():
    specs = _specs()
    a, b, c = (specs.spec("pirl", {"loss_weight": w}, s) for w, s in ((0.0, 0), (0.5, 0), (0.5, 1)))
    assert a.setting_id == b.setting_id == c.setting_id
    assert specs.setting_ids == [a.setting_id]
    assert _specs(profile=SMALL.with_overrides(epochs=1)).setting_ids != specs.setting_ids
    other_base = Study(name="lam", method="pirl", grid={"loss_weight": [0.5]}, base={"num_negatives": 32})
    assert _specs(other_base).setting_ids != specs.setting_ids
    # the baseline depends on the backbone, the data and the evaluation, not on training
    assert a.baseline.setting_id == _specs(profile=SMALL.with_overrides(epochs=1)).spec("pirl", {}, 0).baseline.setting_id
    assert a.baseline.setting_id != _specs(profile=SMALL.with_overrides(width=16)).spec("pirl", {}, 0).baseline.setting_id
    assert a.baseline.setting_id != _specs(profile=SMALL.with_overrides(knn_k=5)).spec("pirl", {}, 0).baseline.setting_id


def test_a_study_comparing_methods_has_one_setting_per_method_and_variant_whatever_it_trains():
    study = Study(name="cmp", methods={"pirl": [{"transform": "jigsaw"}, {"transform": "rotation"}], "simclr": {}})
    specs = _specs(study)
    trained = {specs.spec(m, p, 0).setting_id for m, p in study.configurations(SMALL.name)}
    assert set(specs.setting_ids) == trained and len(trained) == 2  # the variants share pirl's setting
    # --method simclr trains simclr alone, into the same settings
    assert _specs(study.with_method("simclr")).setting_ids == specs.setting_ids


def test_a_search_proposal_resolves_to_the_same_spec_as_the_grid_point():
    study = Study(name="s", method="pirl", search=Search(space={}), base={"num_negatives": 64})
    specs = _specs(study)
    proposal = {"method": "pirl", "loss_weight": 0.25, "temperature": None, "seed": 2}
    assert specs.of_tune_config(proposal) == specs.spec("pirl", {"loss_weight": 0.25}, 2)
    planned = _specs().with_planned([_specs().spec("pirl", {"loss_weight": 0.5}, 0)])
    (trial_id,) = planned.planned
    assert planned.of_tune_config({"trial_id": trial_id}).trial_id == trial_id


def test_the_record_holds_every_resolved_hyperparameter_and_setting():
    spec = _specs().spec("pirl", {"loss_weight": 0.5}, 0)
    record = spec.record()
    assert record["config/num_negatives"] == 64 and record["config/loss_weight"] == 0.5
    assert record["config/temperature"] == 0.07  # the method's default, resolved
    assert record["train/epochs"] == SMALL.epochs and record["train/workers"] == 1
    assert record["eval/knn_k"] == SMALL.knn_k and record["data/train_content_sha256"] == "0123456789abcdef"
    assert record["data/train_subset"] == SMALL.train_subset and record["data/test_num_images"] == 100
    assert record["method"] == "pirl" and record["seed"] == 0
