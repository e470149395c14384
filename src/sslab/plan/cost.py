"""Cost before compute: how many trials a study will run and about how much device time they
take, said before any work, and a confirmation asked for above a threshold.

The estimate is the images a trial trains on (the profile's step budget or epochs) divided by
a rate: the store's own, measured by its finished trials (device seconds per image seen),
or, before any trial has finished, the profile's rough ``images_per_device_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sslab.plan.profiles import Profile

#: above either, a study runs only with ``--yes`` (or ``--max-trials N``)
CONFIRM_TRIALS = 100
CONFIRM_DEVICE_HOURS = 10.0


class NeedsConfirmation(ValueError):
    """A study larger than the thresholds, started without ``--yes`` or ``--max-trials``."""


@dataclass(frozen=True)
class Estimate:
    trials: int
    device_s: float
    #: where the rate came from, said with the estimate
    source: str

    def __str__(self) -> str:
        return f"{self.trials:,} trial(s), about {duration(self.device_s)} of device time ({self.source})"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h"


def images_per_trial(profile: Profile, train_images: int | None = None) -> int:
    """Images one trial trains on: its step budget's, or its epochs of ``train_images`` (the profile's
    subset when the data is not loaded yet; CIFAR's 50,000 without one)."""
    if profile.steps is not None and train_images is None:
        return profile.steps * profile.global_batch
    images = train_images or profile.train_subset or 50_000
    return profile.epochs_for(images) * profile.steps_per_epoch(images) * profile.global_batch


def estimate(trials: int, profile: Profile, history: pd.DataFrame | None = None,
             train_images: int | None = None) -> Estimate:
    """The device time of ``trials`` trials of ``profile``, at the rate of ``history``'s finished
    trials (a store's trials table) when it has any, else at the profile's rough rate."""
    per_trial = images_per_trial(profile, train_images)
    measured = _measured_rate(history)
    if measured is not None:
        rate, source = measured, "at the rate this study's finished trials ran"
    else:
        rate = profile.images_per_device_s
        source = f"profile {profile.name}'s rough rate of {rate:,.0f} images per device-second"
    return Estimate(trials, trials * per_trial / rate, source)


def _measured_rate(history: pd.DataFrame | None) -> float | None:
    if history is None or history.empty or not {"device_s", "images_seen", "status"} <= set(history):
        return None
    ok = history[(history["status"] == "ok") & (history["device_s"] > 0) & (history["images_seen"] > 0)]
    if ok.empty:
        return None
    return float((ok["images_seen"] / ok["device_s"]).median())


def check(plan: Estimate, *, yes: bool, max_trials: int | None, what: str) -> None:
    """Refuse a plan above ``CONFIRM_TRIALS`` trials or ``CONFIRM_DEVICE_HOURS`` device-hours unless
    ``yes`` or ``max_trials`` says the user means it: one line with the count, the estimate and both ways."""
    if yes or max_trials is not None:
        return
    if plan.trials > CONFIRM_TRIALS or plan.device_s > CONFIRM_DEVICE_HOURS * 3600:
        raise NeedsConfirmation(
            f"{what} would run {plan}, above the {CONFIRM_TRIALS} trials or {CONFIRM_DEVICE_HOURS:g} device-hours "
            "that run without asking: pass --yes to run them all, or --max-trials N to run N of them now "
            "(the same command with a larger N, or --yes, continues)"
        )
