"""Cost before compute (src/sslab/plan/cost.py): the estimate a study states, and the confirmation it asks for."""

import pandas as pd
import pytest

from sslab.plan import cost
from sslab.plan.profiles import Profile, get_profile

PROFILE = Profile(name="p", epochs=4, batch_size=50, train_subset=1000, images_per_device_s=100.0)


def test_the_estimate_uses_the_profiles_rough_rate_until_the_store_has_finished_trials():
    # 4 epochs × 20 steps × 50 images = 4,000 images a trial, at 100 images per device-second
    plan = cost.estimate(3, PROFILE)
    assert plan.device_s == pytest.approx(3 * 4000 / 100) and "rough rate of 100 images" in plan.source
    history = pd.DataFrame({"status": ["ok", "ok", "failed", "ok"], "device_s": [10.0, 20.0, 1.0, 40.0],
                            "images_seen": [4000, 4000, 50, 4000]})
    measured = cost.estimate(3, PROFILE, history)  # the median rate of the finished trials: 200 images/s
    assert measured.device_s == pytest.approx(3 * 4000 / 200) and "this study's finished trials" in measured.source
    # a step budget counts steps, whatever the data; with the data loaded, its whole epochs
    budget = PROFILE.with_overrides(steps=30)
    assert cost.images_per_trial(budget) == 30 * 50
    assert cost.images_per_trial(budget, train_images=1000) == 2 * 20 * 50  # 2 epochs of 20 steps reach 30


def test_a_large_plan_needs_yes_or_max_trials_and_says_both():
    local = get_profile("local")
    plan = cost.estimate(500_000, local)
    with pytest.raises(cost.NeedsConfirmation) as refused:
        cost.check(plan, yes=False, max_trials=None, what="pirl_lambda")
    message = str(refused.value)
    assert "\n" not in message and "500,000 trial(s)" in message and " h of device time" in message
    assert "--yes" in message and "--max-trials N" in message
    cost.check(plan, yes=True, max_trials=None, what="pirl_lambda")
    cost.check(plan, yes=False, max_trials=10, what="pirl_lambda")
    cost.check(cost.estimate(100, local), yes=False, max_trials=None, what="s")  # at the threshold: runs
    long_trials = Profile(name="slow", epochs=1000, train_subset=50_000, batch_size=256, images_per_device_s=100.0)
    with pytest.raises(cost.NeedsConfirmation, match="2 trial"):  # few trials, many device-hours
        cost.check(cost.estimate(2, long_trials), yes=False, max_trials=None, what="s")
