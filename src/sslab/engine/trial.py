"""One Tune trial: one specification (``spec.TrialSpec``), trained in the trial's own process
(``num_workers=0``) or by one TorchTrainer."""

from __future__ import annotations

from typing import Any

from sslab import methods
from sslab.methods.base import DataInfo
from sslab.methods.views import Normalization
from sslab.plan.spec import Specs


def run_trial(
    config: dict[str, Any],
    *,
    specs: Specs,
    train_ds,
    eval_ref,
    data_info: DataInfo,
    stats: Normalization,
    storage: str,
    augment_args: dict[str, Any] | None = None,
) -> None:
    """Train the trial ``config`` names (its spec resolved by ``specs``): the views come from the
    method's configuration alone (no model is built to ask), then the generic loop runs in this
    process or on a TorchTrainer, with exactly the configuration the spec records."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from sslab.engine.augment import EpochViews
    from sslab.checkpoints import EpochCheckpoints
    from sslab.engine.errors import root_cause
    from sslab.engine.sessions import InProcessSession
    from sslab.engine.train import TrialRun, make_trainer, run_loop

    spec = specs.of_tune_config(config)  # the runner's spec (a grid's by its id), not computed again
    profile = specs.profile
    run = TrialRun(
        method=spec.method,
        method_config=dict(spec.config),
        profile=profile,
        seed=spec.seed,
        data=data_info,
        eval_data=eval_ref,
    )
    views = methods.get(spec.method).views(run.config(), profile.image_size)
    name = spec.trial_id
    # seeded by (seed, epoch) on either path: the same trial, or its retry, sees the same views
    epoch_views = EpochViews(train_ds, views, stats, spec.seed, augment_args, transfer=profile.view_transfer)
    if profile.num_workers == 0:  # the loop in this process, its epoch checkpoints under the trial's id
        run_loop(run, InProcessSession(profile, epoch_views, EpochCheckpoints(f"{storage}/{name}")))
        return
    trainer = make_trainer(run, epoch_views, name=name, storage_path=storage, callbacks=[TuneReportCallback()])
    try:
        trainer.fit()
    except Exception as err:  # Ray wraps worker errors in pages of traceback: keep the cause
        raise RuntimeError(root_cause(err)) from None
