"""Profiles: a step budget becomes whole epochs of the data a run actually has."""

import math

import pytest

from sslab.plan.profiles import Profile, get_profile


def test_a_step_budget_gives_the_fewest_whole_epochs_that_reach_it():
    local = get_profile("local")
    assert local.steps == 1248
    # CIFAR's 5,000-image subset: 78 steps of 64 an epoch, so the 16 epochs the profile also names
    assert local.epochs_for(5000) == local.epochs == 16
    # scikit-learn's digits (1,437 train images): 22 steps an epoch; 56 epochs would be 1,232 steps
    assert local.epochs_for(1437) == 57 and 56 * 22 < 1248 <= 57 * 22
    # a large split: the same steps in fewer epochs, never fewer than one
    assert local.epochs_for(50_000) == math.ceil(1248 / 781) == 2
    assert local.epochs_for(10 ** 9) == 1


def test_the_step_budget_counts_the_global_batch_of_every_worker():
    one = Profile(name="p", steps=100, batch_size=10, num_workers=1)
    four = one.with_overrides(num_workers=4)
    assert four.global_batch == 40 and one.global_batch == one.with_overrides(num_workers=0).global_batch == 10
    assert one.epochs_for(1000) == 1 and four.epochs_for(1000) == 4  # 100 and 25 steps an epoch


def test_without_a_step_budget_epochs_are_the_profiles_own():
    cifar = get_profile("cifar")
    assert cifar.steps is None
    assert cifar.epochs_for(10) == cifar.epochs_for(50_000) == cifar.epochs
    assert cifar.budget_note(50_000) is None and cifar.for_train_images(10) == cifar


def test_epochs_given_alone_replace_the_step_budget():
    local = get_profile("local")
    three = local.with_overrides(epochs=3)
    assert three.steps is None and three.epochs_for(1437) == 3  # --epochs 3 is three epochs on any data
    both = local.with_overrides(epochs=3, steps=44)
    assert both.epochs_for(1437) == 2  # 22 steps an epoch
    assert local.with_overrides(train_subset=100).steps == 1248  # other fields keep it


def test_the_budget_note_says_how_the_steps_became_epochs():
    local = get_profile("local")
    note = local.budget_note(1437)
    assert note is not None
    for part in ("1,248 optimiser steps", "57 epoch(s)", "1,437 images", "22 steps of 64", "1,254 in all", "--epochs"):
        assert part in note, (part, note)
    resolved = local.for_train_images(1437)
    assert resolved.epochs == 57 and resolved == local.with_overrides(epochs=57, steps=1248)  # nothing else moved


@pytest.mark.parametrize("steps", [0, -5, 2.5])
def test_a_step_budget_that_is_not_a_positive_whole_number_is_refused(steps):
    with pytest.raises(ValueError, match=rf"profile 'p': steps = {steps!r} is not allowed"):
        Profile(name="p", steps=steps)
