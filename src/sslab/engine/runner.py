"""Running a study: check what is known to fail or to cost too much, read the data, resolve
every trial's specification (``spec.py``), lock the store, then start or join Ray, evaluate the
random-init baselines and run the trials through Tune (a grid as ``tune.grid_search`` over trial
ids; a search with Optuna as the searcher), write each finished trial to the results store and
print a summary of this run's setting.

Re-running the same study skips the trials whose exact specification is in the store and resumes
interrupted ones from their checkpoints; a run with other settings trains its own trials beside them.
The command line (flags, one-line errors, Ctrl-C) is the CLI's (``cli.run``); this module takes the
parsed options.

A trial's path, from ``python studies/pirl_lambda.py`` (a grid on the ``local`` profile: each trial
trains in its Tune trial's own process) to its row in the results store: nine hops of sslab's code,
each stretch inside Ray counted as one.

1. studies/pirl_lambda.py:__main__ → src/sslab/cli.py:run (the study's flags, parsed)
2. cli.py:run → engine/runner.py:run_study (the data read; every ``TrialSpec`` built once, in
   ``_plan``, its ``trial_id`` with it)
3. runner.py:run_study → [Ray Tune: ``Tuner.fit`` (the Tuner from ``_tuner``: the pending trials'
   ids as a grid) starts the trial] → engine/trial.py:run_trial (its spec looked up by id:
   ``Specs.of_tune_config``)
4. trial.py:run_trial → engine/train.py:run_loop (in an ``InProcessSession``)
5. train.py:run_loop → engine/sessions.py:InProcessSession.report (each epoch's ``EpochReport``,
   as one flat result, once its ``TrainingState`` is on storage)
6. sessions.py:InProcessSession.report → [Ray Tune: ``tune.report``, the result to the driver] →
   engine/tune_callbacks.py:StoreCallback.on_trial_complete (the spec looked up by id again)
7. tune_callbacks.py:StoreCallback.on_trial_complete → StoreCallback._record (the ``TrialRow``)
8. tune_callbacks.py:StoreCallback._record → StoreCallback._write
9. tune_callbacks.py:StoreCallback._write → results/store.py:ResultsStore.record_trial

A TorchTrainer trial (GPUs, or several workers) goes from run_trial through [Ray Train] to
train.py:train_loop_per_worker, then run_loop and sessions.py:RayTrainSession.report, whose
results reach the callback through [Ray Train and Tune]: ten hops.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sslab.methods.base import DataInfo
from sslab.plan import cost
from sslab.engine import placement
# what the driver evaluates and records itself (by these names: tests wrap them): the random-init
# baselines and the thumbnails before the trials, the labelled check of a label-free pick after them
from sslab.engine.baselines import (check_pick as _check_pick, missing_baseline_seeds as _missing_baseline_seeds,
                                    record_baselines as _record_baselines, record_thumbnails as _record_thumbnails)
from sslab.engine.other_work import other_work, other_work_note
from sslab.engine.placement import TRIAL_RESOURCE
from sslab.plan.profiles import Profile, get_profile
from sslab.results.store import ResultsStore, StoreWriteError, results_flag, results_root
from sslab.plan.spec import Specs, TrialSpec, data_identity
from sslab.results.lock import StoreLock
from sslab.plan.study import Search, Study
from sslab.results import picks
from sslab.results.summary import current_setting
from sslab.engine.trial import run_trial


def run_study(
    study: Study,
    *,
    profile: str | Profile | None = None,
    seeds: int | None = None,
    root: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    address: str | None = None,
    profile_overrides: dict[str, Any] | None = None,
    retry_failed: bool = False,
    quiet: bool = False,
    trials: int | None = None,
    time_budget_s: float | None = None,
    yes: bool = False,
    max_trials: int | None = None,
    command: str | None = None,
) -> pd.DataFrame:
    """Run (or resume) a study; returns its trials table (every setting's: ``current_setting``
    picks this run's).

    In order, each step before anything that costs more: the configuration is validated; the
    planned trials and their device time are stated (and refused above ``cost.CONFIRM_*`` without
    ``yes`` or ``max_trials``); the data is read and checked; every trial's specification is
    resolved (``spec.Specs``), so that only trials whose exact specification is in the store
    count as done; the store is locked for this process (``StoreLock``); then Ray starts.
    """
    from sslab.results.progress import Progress  # rich is only needed when a study runs

    profile = study.sized(profile if isinstance(profile, Profile) else get_profile(profile or study.profile),
                          profile_overrides)
    seeds = study.seeds if seeds is None else seeds
    if seeds < 1:
        raise ValueError(f"--seeds = {seeds} must be at least 1")
    study.validate(profile)
    _check_profile_fits(profile, address)
    search = study.search.for_profile(profile.name, trials=trials, time_budget_s=time_budget_s) if study.search else None
    store = ResultsStore(results_root(root), study.name)
    store.check_readable()
    history = store.read("trials")
    planned = search.trials if search else len(study.configurations(profile.name)) * seeds
    cost.check(cost.estimate(planned, profile, history), yes=yes, max_trials=max_trials, what=study.name)

    progress = Progress(study, profile, quiet=quiet)
    try:
        train, test, evaluation = _read_data(profile, data_dir, progress, study, searching=search is not None)
        progress.profile = profile = _train_budget(profile, len(train), progress)
        identity = data_identity(profile, train.identity(), test.identity(),
                                 evaluation and (evaluation[0].identity(), evaluation[1].identity()))
        plan = _plan(study, profile, search, seeds, store, identity, retry_failed=retry_failed, max_trials=max_trials)
        specs, pending, to_run = plan.specs, plan.pending, plan.to_run
        progress.start(total=plan.total, already_done=plan.already_done, to_run=to_run,
                       estimate=cost.estimate(to_run, profile, history, train_images=len(train)))
        for line in _resume_notes(store, pending):
            progress.note(line)

        store.check_writable()
        with StoreLock(store.fs, store.lock_path, shown=store.location, note=progress.note):
            store.write_metadata(_metadata(store, study, specs, search, seeds, command, train.normalization))
            unrecorded: dict[str, str] = {}
            missing_baselines = _missing_baseline_seeds(store, specs, seeds)
            if to_run or missing_baselines:
                if not (address or os.environ.get("RAY_ADDRESS")):  # trials will share this machine's CPUs
                    busy = other_work_note(other_work())
                    if busy:
                        progress.note(busy)
                _init_ray(address)
                shape = placement.cluster_shape()  # refuse what could never run, before any work
                placement.check_shared_storage(store.root, shape)
                augment_args = placement.augment_remote_args(placement.augment_policy(profile), shape)
                placement.max_concurrent_trials(profile, shape)
                # Ray Data's own tasks (the input's block metadata) and autoscaler requests carry the
                # augmentation label too: unlabelled, they could start any node type, a GPU one included
                with placement.augment_data_context(augment_args):
                    data = _to_ray(train, test, profile, evaluation)
                _record_thumbnails(store, specs, data["arrays"])  # once per dataset (evaluation/pictures.py)
                _record_baselines(store, specs, data, missing_baselines, progress)
                if to_run:
                    tuner, recorder = _tuner(study, specs, store, pending, to_run, data, progress, search=search)
                    # only TorchTrainer runs leave placement groups behind when Tune kills their trial
                    with placement.OrphanedWorkerGroupJanitor() if profile.num_workers else nullcontext():
                        tuner.fit()
                    unrecorded = recorder.unrecorded  # finished, but not fully written: the rerun records them
            trials = store.read("trials")
            shown = current_setting(trials, store.read("baselines"), store.metadata(), flags=results_flag(root))
            progress.summary(shown.trials, shown.baselines, shown.note)
            # chosen without labels: its pick, now evaluated with them (once), and the kNN-chosen study's
            quiet_sizes = _sizes(profile, data_dir, note=lambda line: None)
            _check_pick(store, study, profile, train, test, shown.trials, quiet_sizes, progress)
            for line in picks.stored_lines(store, shown.trials, study.primary_metric):
                progress.note(line)
    finally:  # the live progress bar gives the terminal back, also on Ctrl-C
        progress.close()
    if unrecorded:
        first = next(iter(unrecorded.values()))
        raise StoreWriteError(f"{len(unrecorded)} trial(s) finished but are not fully recorded: {first}")
    return trials


@dataclass(frozen=True)
class _Plan:
    """What a run of a study will do: its specs, the trials still to run (at most ``to_run`` of them
    start now), how many the study has in all and how many of those the store already holds."""

    specs: Specs
    pending: list[TrialSpec]
    total: int
    already_done: int
    to_run: int


def _plan(study: Study, profile: Profile, search: Search | None, seeds: int, store: ResultsStore,
          data: dict[str, Any], *, retry_failed: bool, max_trials: int | None) -> _Plan:
    """Every trial's specification on this data, and which of them the store holds already (the
    same specification, to the last bit; failed ones too unless ``retry_failed``). A search plans
    its first points (the paper's defaults) and counts its budget against this setting's trials."""
    specs = Specs(study, profile, data)
    planned = specs.planned_specs(seeds) if not search else [
        specs.spec(method, point, 0) for method, point in study.configurations(profile.name)]
    specs = specs.with_planned(planned)
    done = store.finished_trial_ids(("ok", "stopped") if retry_failed else ("ok", "failed", "stopped"))
    pending = [s for s in planned if s.trial_id not in done]
    if search:
        total = search.trials
        already_done = min(total, len(done & set(store.trial_ids_of_settings(specs.setting_ids))))
    else:
        total, already_done = len(planned), len(planned) - len(pending)
    to_run = total - already_done if max_trials is None else min(total - already_done, max_trials)
    return _Plan(specs, pending[:to_run], total, already_done, to_run)


def _metadata(store: ResultsStore, study: Study, specs: Specs, search: Search | None, seeds: int,
              command: str | None, stats=None) -> dict[str, Any]:
    """``study.json``: the study's declaration and this run's setting, keeping the record of every
    earlier setting whose trials the store holds (``settings``: setting id -> its profile, data, the
    training split's normalisation ``stats``, which ``sslab export`` reads, and command), so that no
    trial's record is overwritten by a later run's."""
    profile = specs.profile
    earlier = store.metadata().get("settings") or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    current = {"profile": profile.to_dict(), "data": dict(specs.data), "command": command, "first_run": now,
               "normalization": {"mean": list(stats.mean), "std": list(stats.std)} if stats else None}
    settings = {**earlier, **{sid: {**current, "first_run": earlier.get(sid, {}).get("first_run", now)}
                              for sid in specs.setting_ids}}
    return {
        "method": study.method_names[0] if len(study.method_names) == 1 else None,
        "methods": study.methods_for(profile.name),
        "description": study.description,
        "kind": "search" if search else "grid",
        "knobs": study.knobs,
        "grid": study.grid_for(profile.name),
        "search": {name: repr(d) for name, d in search.space.items()} if search else None,
        "optuna_study": _optuna_study_name(study, specs) if search else None,
        "defaults": study.paper_defaults(),
        "base": study.base,
        "overrides": study.overrides,
        "method_bases": study.methods,
        "seeds": seeds,
        "metric": study.metric,
        "mode": study.mode,
        "findings": [finding.to_dict() for finding in study.findings],
        "total_trials": search.trials if search else len(study.configurations(profile.name)) * seeds,
        "profile": profile.to_dict(),
        "backbone": profile.backbone_name,
        "command": command,
        "setting_ids": specs.setting_ids,
        "baseline_setting": specs.baseline(0).setting_id,
        "settings": settings,
    }


def _resume_notes(store: ResultsStore, pending: list[TrialSpec]) -> list[str]:
    """One line per pending trial that an earlier run left part-trained: from which epoch it resumes
    (an in-process trial's newest checkpoint; a TorchTrainer trial's last epoch in the store)."""
    from sslab.checkpoints import EpochCheckpoints

    epochs = store.read("epochs")
    reported = epochs.groupby("trial_id")["epoch"].max() if not epochs.empty else {}
    lines = []
    for spec in pending:
        newest = EpochCheckpoints(f"{store.ray_storage}/train/{spec.trial_id}").newest_epoch()
        if newest is not None:
            lines.append(f"resuming {spec.trial_id} from its checkpoint after epoch {newest + 1}")
        elif spec.trial_id in reported:
            lines.append(f"resuming {spec.trial_id} from its last checkpoint (epoch {int(reported[spec.trial_id]) + 1} "
                         "was the last one recorded)")
    return lines


def _check_profile_fits(profile: Profile, address: str | None) -> None:
    """What is known to fail before any work, refused before Ray starts and before the store is touched."""
    if profile.train_subset is not None and profile.train_subset < profile.global_batch:
        raise ValueError(
            f"--subset {profile.train_subset} is smaller than one training batch of profile {profile.name!r} "
            f"({profile.batch_size} images × {max(1, profile.num_workers)} worker(s)): "
            f"use --subset {profile.global_batch} or more"
        )
    import ray

    joins_a_cluster = bool(address or os.environ.get("RAY_ADDRESS")) or ray.is_initialized()
    if profile.use_gpu and not joins_a_cluster:
        import torch

        if torch.cuda.device_count() == 0:
            raise ValueError(
                f"profile {profile.name!r} trains on GPUs, and this machine has none and no cluster is given: "
                "run it on a cluster (ray up cluster.yaml, then the same command there, or --address), "
                "or use --profile local"
            )


def _train_budget(profile: Profile, train_images: int, progress) -> Profile:
    """``profile`` with the epochs its step budget comes to on ``train_images`` images, said
    in one line; unchanged without a step budget."""
    note = profile.budget_note(train_images)
    if note:
        progress.note(note)
        progress.profile = profile = profile.for_train_images(train_images)
    return profile


def _init_ray(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    # The results store is the record; Tune's own CSV/JSON/TensorBoard loggers are not needed.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Progress is ours (src/sslab/results/progress.py): Tune's legacy reporter at verbose=0 prints nothing.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C ends the study at once with one line of ours (cli.run), not Tune's graceful stop and its
    # hint at Tuner.restore: the same command resumes from the store and the trials' checkpoints
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(
            resources={TRIAL_RESOURCE: 1000},
            # Ray's state API lives in the dashboard: Ray Train needs it to free the placement group
            # of a trial that Tune stopped early (ASHA); it listens on localhost only
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.WARNING,
        )


def _sizes(profile: Profile, data_dir, note) -> dict[str, Any]:
    """How every split of this run is read: the profile's image size and subsets, the data folder."""
    from sslab.data.locations import data_dir as resolve_data_dir

    return dict(image_size=profile.image_size, train_subset=profile.train_subset, test_subset=profile.test_subset,
                root=resolve_data_dir(data_dir), note=note)


def _read_data(profile: Profile, data_dir, progress, study: Study, *, searching: bool = False):
    """The train and test splits (read blind when the study chooses without labels:
    ``Study.reads_labels``) and the labelled evaluation dataset's, or None (``--eval-dataset``), read
    and checked before Ray starts (a missing or unreadable dataset, a wrong layout, one class, or labels
    the study needs and the data lacks are refused here, in one line, with nothing written)."""
    from sslab.data.train_test import load_evaluation, load_train_test

    sizes = _sizes(profile, data_dir, note=progress.note)
    train, test = load_train_test(profile.dataset, labelled=study.reads_labels, **sizes)
    evaluation = load_evaluation(profile.eval_dataset, **sizes) if profile.eval_dataset else None
    note = study.labels_note(profile, train.labelled, searching)
    if note:
        progress.note(note)
    return train, test, evaluation


def _to_ray(train, test, profile: Profile, evaluation=None) -> dict[str, Any]:
    import ray

    from sslab.data.train_test import evaluation_arrays
    from sslab.engine.augment import to_ray_dataset

    arrays = evaluation_arrays(train, test, evaluation)  # every image normalised with the training set's statistics
    info = DataInfo(num_samples=len(train), num_classes=train.num_classes, image_size=profile.image_size)
    return {"arrays": arrays, "eval_ref": ray.put(arrays), "train_ds": to_ray_dataset(train), "info": info}


def _optuna_study_name(study: Study, specs: Specs) -> str:
    """One Optuna study per setting (``<study>-<setting id>``): a search's history under other
    settings proposes nothing here."""
    return f"{study.name}-{'-'.join(specs.setting_ids)}"


def _optuna_storage(store: ResultsStore, study_name: str):
    """The search's Optuna study, persisted beside the results store (a journal file), so an
    interrupted search resumes with its history and ``optuna.load_study`` can inspect it.
    On an object-store root the journal lives on the driver's disk under ~/.cache/sslab/optuna."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in store.location:
        path = os.path.join(os.path.expanduser("~/.cache/sslab/optuna"), f"{store.study}.journal")
        os.makedirs(os.path.dirname(path), exist_ok=True)
    else:
        path = os.path.join(store.location, "optuna.journal")
    storage = optuna.storages.JournalStorage(JournalFileBackend(path))
    # trials left RUNNING by an interrupted driver will never report: mark them failed
    for summary in optuna.get_all_study_summaries(storage):
        if summary.study_name == study_name:
            stale = optuna.load_study(study_name=study_name, storage=storage)
            for trial in stale.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return storage


def _tuner(
    study: Study,
    specs: Specs,
    store: ResultsStore,
    pending: list[TrialSpec],
    num_trials: int,
    data,
    progress,
    *,
    search: Search | None = None,
):
    """The Tuner that runs the pending trials, and its callback that writes them into the store
    (``StoreCallback``; its ``unrecorded``: the trials whose results could not be written).

    A grid's trials are given to Tune by id (``{"trial_id": ...}``, their specs resolved by the
    runner); a search's are Optuna's proposals, the paper's defaults first, resolved by the same
    ``Specs`` in the trial and in the store callback."""
    import optuna
    import ray
    from ray import tune

    from sslab.engine.tune_callbacks import StoreCallback

    profile = specs.profile
    # Tune's result files are off (the results store is the record): its ResultGrid need not say so.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    cluster = placement.cluster_shape()
    concurrent = placement.max_concurrent_trials(profile, cluster)
    augment_args = placement.augment_remote_args(placement.augment_policy(profile), cluster)
    trial_resources = _trial_resources(profile, has_trial_resource=bool(ray.cluster_resources().get(TRIAL_RESOURCE)))
    searcher, scheduler, param_space = None, None, {}
    if search:
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = {**search.space, "seed": optuna.distributions.CategoricalDistribution([0]),
                 "method": optuna.distributions.CategoricalDistribution(study.method_names)}
        name = _optuna_study_name(study, specs)
        done = len(store.finished_trial_ids() & set(store.trial_ids_of_settings(specs.setting_ids)))
        searcher = OptunaSearch(
            space=space,
            metric=study.metric,
            mode=study.mode,
            points_to_evaluate=[{"method": s.method, **s.point, "seed": s.seed} for s in pending] or None,
            # a resumed search must not replay the proposals of the run before it: seed by trials done
            sampler=optuna.samplers.TPESampler(seed=done),
            study_name=name,
            storage=_optuna_storage(store, name),
        )
        if search.early_stopping and not isinstance(study.metric, list):
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                metric=study.metric,
                mode=study.mode,
                max_t=profile.epochs,
                grace_period=min(search.grace_epochs, profile.epochs),
                reduction_factor=search.reduction_factor,
            )
    else:
        param_space = {"trial_id": tune.grid_search([s.trial_id for s in pending])}
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            specs=specs,
            train_ds=data["train_ds"],
            eval_ref=data["eval_ref"],
            data_info=data["info"],
            stats=data["arrays"]["stats"],
            storage=f"{store.ray_storage}/train",
            augment_args=augment_args,
        ),
        trial_resources,
    )
    recorder = StoreCallback(store, specs, progress, stops_early=search is not None)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_trials if search else 1,
            max_concurrent_trials=min(num_trials, concurrent),
            time_budget_s=search.time_budget_s if search else None,
            # an in-process trial's process serves the next trial (no new process, no imports):
            # safe, as a trial keeps no state outside its checkpoints and seeds itself
            reuse_actors=profile.num_workers == 0,
        ),
        run_config=tune.RunConfig(
            name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=store.ray_storage,
            verbose=0,
            # a trial whose process died with its node starts again and resumes from its last
            # epoch checkpoint (a TorchTrainer's lost workers are retried by Ray Train itself)
            failure_config=tune.FailureConfig(max_failures=profile.max_failures, fail_fast=False),
            callbacks=[recorder],
        ),
    )
    return tuner, recorder


def _trial_resources(profile: Profile, *, has_trial_resource: bool):
    """What one Tune trial's process holds.

    A trial that launches a TorchTrainer only drives it: it holds the custom
    ``sslab_trial`` resource (the head node's), never a CPU that the workers or
    augmentation need. A trial that trains in its own process (``num_workers=0``)
    holds one Train worker's resources and, like a Train worker, stays off
    augmentation nodes.
    """
    from ray import tune

    if profile.num_workers == 0:
        bundle = {"CPU": profile.cpus_per_worker, **({"GPU": 1} if profile.use_gpu else {})}
        return tune.PlacementGroupFactory([bundle], bundle_label_selector=[placement.TRAIN_LABEL_SELECTOR])
    return {TRIAL_RESOURCE: 1} if has_trial_resource else {"CPU": 1}


