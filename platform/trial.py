"""One Tune trial: one (method, configuration, seed), trained in the trial's own process
(``num_workers=0``) or by one TorchTrainer."""

from __future__ import annotations

from typing import Any

from sslab import methods
from sslab.methods.base import DataInfo
from sslab.methods.views import Normalization
from sslab.platform.profiles import Profile
from sslab.platform.study import Study, trial_key


def split_trial_config(config: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
    """A Tune trial's config ``{method, <knobs>, seed}`` as (method, point, seed); a knob set to None
    is one this trial's method does not have (another method's variant knob), and is left out."""
    point = {k: v for k, v in config.items() if k not in ("method", "seed") and v is not None}
    return str(config["method"]), point, int(config["seed"])


def run_trial(
    config: dict[str, Any],
    *,
    study: Study,
    profile: Profile,
    train_ds,
    eval_ref,
    data_info: DataInfo,
    stats: Normalization,
    storage: str,
    augment_args: dict[str, Any] | None = None,
) -> None:
    """Train one trial: the views come from the method's configuration alone (no model is
    built to ask), then the generic loop runs in this process or on a TorchTrainer."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from sslab.platform.augment import EpochViews
    from sslab.platform.train import TrialSpec, make_trainer, root_cause, train_in_process

    method, point, seed = split_trial_config(config)
    spec = TrialSpec(
        method=method,
        method_config=study.method_config(method, point, profile),
        profile=profile,
        seed=seed,
        data=data_info,
        eval_data=eval_ref,
    )
    views = methods.get(method).views(spec.config(), profile.image_size)
    name = trial_key(method, point, seed)
    # seeded by (seed, epoch) on either path: the same trial, or its retry, sees the same views
    epoch_views = EpochViews(train_ds, views, stats, seed, augment_args, transfer=profile.view_transfer)
    if profile.num_workers == 0:
        train_in_process(spec, epoch_views, f"{storage}/{name}")
        return
    trainer = make_trainer(spec, epoch_views, name=name, storage_path=storage, callbacks=[TuneReportCallback()])
    try:
        trainer.fit()
    except Exception as err:  # Ray wraps worker errors in pages of traceback: keep the cause
        raise RuntimeError(root_cause(err)) from None
