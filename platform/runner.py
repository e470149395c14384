"""Running a study on Ray: start or join Ray, load the data once, evaluate the random-init
baselines, run every trial through Tune (Optuna as the searcher, a grid given to it as the
points to evaluate), write each finished trial to the results store, print a summary.

``run_study`` validates every configuration before any Ray work; re-running the same study
skips the trials already in the store and resumes interrupted ones from their checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from contextlib import nullcontext
from typing import Any, Sequence

import pandas as pd

from sslab import methods
from sslab.methods.base import DataInfo
from sslab.platform import placement
from sslab.platform.other_work import other_work, other_work_note
from sslab.platform.placement import TRIAL_RESOURCE
from sslab.platform.profiles import Profile, get_profile
from sslab.platform.results import ResultsStore, StoreError, StoreWriteError, results_root
from sslab.platform.study import Search, Study, trial_key
from sslab.platform.trial import run_trial, split_trial_config


def main(study: Study, argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Command-line entry point of a study script: flags, then ``run_study``; a bad flag or
    setting is one line (exit 2), not a traceback."""
    parser = build_parser(study)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"epochs": args.epochs, "train_subset": args.subset,
                                   "dataset": args.dataset}.items() if v is not None}
    try:
        if args.method:
            study = study.with_method(args.method)
        return run_study(
            study,
            profile=args.profile,
            seeds=args.seeds,
            root=args.results,
            data_dir=args.data_dir,
            address=args.address,
            profile_overrides=overrides,
            retry_failed=args.retry_failed,
            trials=getattr(args, "trials", None),
            time_budget_s=getattr(args, "time_budget", None),
        )
    except (ValueError, PermissionError, FileNotFoundError, StoreError) as err:  # a bad flag, setting, dataset or store
        parser.exit(2, f"{study.name}: error: {err}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser(study: Study) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=study.name, description=study.description or None)
    parser.add_argument("--profile", default=study.profile, help="local (CPU, minutes) or cifar (GPU, full CIFAR-10)")
    parser.add_argument("--dataset", default=None,
                        help="cifar10, cifar100, imagefolder:<path> or parquet:<path> (default: the profile's)")
    if len(study.method_names) == 1:
        parser.add_argument("--method", default=None, choices=methods.names(),
                            help=f"run this study's knobs on another method (default {study.method_names[0]}); "
                                 "results go to <study>-<method>")
    else:
        parser.add_argument("--method", default=None, choices=study.method_names,
                            help="train only this one of the study's methods (into the study's results; "
                                 "a later run of the whole study finds its trials done)")
    parser.add_argument("--seeds", type=_positive_int, default=None, help=f"seeds per configuration (default {study.seeds})")
    parser.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $SSLAB_DATA or ~/.cache/sslab/data)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--epochs", type=_positive_int, default=None,
                        help="train this many epochs (instead of the profile's epochs or step budget)")
    parser.add_argument("--subset", type=_positive_int, default=None, help="override the profile's training subset size")
    parser.add_argument("--retry-failed", action="store_true", help="run failed trials of an earlier run again")
    if study.search:
        parser.add_argument("--trials", type=_positive_int, default=None,
                            help=f"trial budget of the search (default {study.search.trials}, less on small profiles)")
        parser.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                            help="stop starting trials after this many seconds")
    return parser


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
) -> pd.DataFrame:
    """Run (or resume) a study; returns its trials table."""
    from sslab.platform.progress import Progress  # rich is only needed when a study runs

    profile = profile if isinstance(profile, Profile) else get_profile(profile or study.profile)
    if profile_overrides:
        profile = profile.with_overrides(**profile_overrides)
    seeds = study.seeds if seeds is None else seeds
    if seeds < 1:
        raise ValueError(f"--seeds = {seeds} must be at least 1")
    study.validate(profile)
    _check_profile_fits(profile, address)
    store = ResultsStore(results_root(root), study.name)
    store.check_readable()
    store.check_writable()
    recorded = store.metadata().get("profile") or {}  # the profile of the run before, if any
    _check_same_data(store, recorded, profile)
    search = study.search.for_profile(profile.name, trials=trials, time_budget_s=time_budget_s) if study.search else None
    grid = study.grid_for(profile.name)
    meta = {
        "method": study.method_names[0] if len(study.method_names) == 1 else None,
        "methods": study.methods_for(profile.name),
        "description": study.description,
        "kind": "search" if search else "grid",
        "knobs": study.knobs,
        "grid": grid,
        "search": {name: repr(d) for name, d in search.space.items()} if search else None,
        "defaults": study.paper_defaults(),
        "base": study.base,
        "method_bases": study.methods,
        "seeds": seeds,
        "metric": study.metric,
        "mode": study.mode,
        "findings": [finding.to_dict() for finding in study.findings],
        "total_trials": search.trials if search else len(study.configurations(profile.name)) * seeds,
        "profile": _recorded_profile(recorded, profile),
        "backbone": profile.backbone_name,
    }
    store.write_metadata(meta)
    skip_statuses = ("ok", "stopped") if retry_failed else ("ok", "failed", "stopped")
    done = store.finished_trial_ids(skip_statuses)
    first_points = [{"method": method, **point, "seed": seed}
                    for method, point in study.configurations(profile.name) for seed in range(seeds)]
    pending = [p for p in first_points if trial_key(*split_trial_config(p)) not in done]
    if search:  # the defaults first, then as many proposals as the budget has left
        total = search.trials
        to_run = max(0, total - len(done))
        pending = pending[:to_run]
    else:
        total, to_run = len(first_points), len(pending)
    progress = Progress(study, profile, total=total, already_done=total - to_run, quiet=quiet)
    unrecorded: dict[str, str] = {}

    if to_run or _missing_baseline_seeds(store, profile, seeds):
        if not (address or os.environ.get("RAY_ADDRESS")):  # trials will share this machine's CPUs
            busy = other_work_note(other_work())
            if busy:
                progress.note(busy)
        _init_ray(address)
        shape = placement.cluster_shape()  # refuse what could never run, before any work
        placement.check_shared_storage(store.root, shape)
        placement.augment_remote_args(placement.augment_policy(profile), shape)
        placement.max_concurrent_trials(profile, shape)
        data = _load_data(profile, data_dir, progress)
        profile = _train_budget(profile, data["info"].num_samples, progress)
        store.write_metadata({**meta, "profile": profile.to_dict()})
        _record_baselines(store, profile, data, seeds, progress)
        if to_run:
            unrecorded = _run_trials(study, profile, store, pending, to_run, data, progress, search=search)
    trials = store.read("trials")
    progress.summary(trials, store.read("baselines"))
    if unrecorded:
        first = next(iter(unrecorded.values()))
        raise StoreWriteError(f"{len(unrecorded)} trial(s) finished but are not fully recorded: {first}")
    return trials


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


def _recorded_profile(recorded: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The profile the study's metadata records before any data is loaded: with a step budget,
    the epochs it came to on this data in an earlier run (``recorded``, what ``sslab status``
    counts against), when that run had the same budget; the profile's own epochs otherwise."""
    current = profile.to_dict()
    if profile.steps is not None and {**recorded, "epochs": profile.epochs} == current:
        return recorded
    return current


def _train_budget(profile: Profile, train_images: int, progress) -> Profile:
    """``profile`` with the epochs its step budget comes to on ``train_images`` images, said
    in one line; unchanged without a step budget."""
    note = profile.budget_note(train_images)
    if note:
        progress.note(note)
        progress.profile = profile = profile.for_train_images(train_images)
    return profile


def _check_same_data(store: ResultsStore, recorded_profile: dict[str, Any], profile: Profile) -> None:
    """Refuse to add trials on other data to a study whose store holds trials on one dataset
    (``recorded_profile``: the profile in its metadata)."""
    recorded = recorded_profile.get("dataset")
    if recorded and recorded != profile.dataset and not store.read("trials").empty:
        raise ValueError(
            f"the results at {store.location} were trained on {recorded!r}, not {profile.dataset!r}; "
            "pass --results <another folder> to keep both"
        )


def _init_ray(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    # The results store is the record; Tune's own CSV/JSON/TensorBoard loggers are not needed.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Progress is ours (platform/progress.py): Tune's legacy reporter at verbose=0 prints nothing.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
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


def _load_data(profile: Profile, data_dir, progress) -> dict[str, Any]:
    import ray

    from sslab.platform.data import data_dir as resolve_data_dir
    from sslab.platform.data import evaluation_arrays, load_train_test, to_ray_dataset

    train, test = load_train_test(profile.dataset, image_size=profile.image_size, train_subset=profile.train_subset,
                                  test_subset=profile.test_subset, root=resolve_data_dir(data_dir),
                                  note=progress.note)
    arrays = evaluation_arrays(train, test)  # both splits normalised with the training set's statistics
    info = DataInfo(num_samples=len(train.labels), num_classes=train.num_classes, image_size=profile.image_size)
    return {"arrays": arrays, "eval_ref": ray.put(arrays), "train_ds": to_ray_dataset(train), "info": info}


def _missing_baseline_seeds(store: ResultsStore, profile: Profile, seeds: int) -> list[int]:
    """Seeds whose random-init baseline of this profile's backbone is not in the store yet."""
    existing = store.read("baselines")
    if existing.empty:
        return list(range(seeds))
    done = set(existing.loc[existing["backbone"] == profile.backbone_name, "seed"])
    return [seed for seed in range(seeds) if seed not in done]


def _record_baselines(store: ResultsStore, profile: Profile, data: dict[str, Any], seeds: int, progress) -> None:
    """The same evaluation of the untrained backbone, once per seed (the random-init reference)."""
    import torch

    from sslab.methods.blocks.backbone import Backbone
    from sslab.platform.evaluate import evaluate_for_profile

    name = profile.backbone_name
    for seed in _missing_baseline_seeds(store, profile, seeds):
        start = time.perf_counter()
        torch.manual_seed(seed)
        backbone = Backbone(profile.arch, cifar_stem=profile.cifar_stem, width=profile.width)
        metrics = evaluate_for_profile(backbone, data["arrays"], profile, seed=seed)
        store.record_baseline({"backbone": name, "seed": seed, **metrics, "wall_s": time.perf_counter() - start})
        progress.note(f"random-init baseline (seed {seed}): kNN top-1 {metrics['knn_top1']:.3f}")


def _optuna_storage(store: ResultsStore):
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
        if summary.study_name == store.study:
            stale = optuna.load_study(study_name=store.study, storage=storage)
            for trial in stale.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return storage


def _run_trials(
    study: Study,
    profile: Profile,
    store: ResultsStore,
    pending: list[dict[str, Any]],
    num_trials: int,
    data,
    progress,
    *,
    search: Search | None = None,
) -> dict[str, str]:
    """Run the pending trials through Tune; returns the trials whose results could not be written
    (trial key -> why), which the rerun records from their checkpoints."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sslab.platform.tune_callbacks import StoreCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tune's result files are off (the results store is the record): its ResultGrid need not say so.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    cluster = placement.cluster_shape()
    concurrent = placement.max_concurrent_trials(profile, cluster)
    augment_args = placement.augment_remote_args(placement.augment_policy(profile), cluster)
    trial_resources = _trial_resources(profile, has_trial_resource=bool(ray.cluster_resources().get(TRIAL_RESOURCE)))
    if search:
        space = dict(search.space)
        space["seed"] = optuna.distributions.CategoricalDistribution([0])
        storage = _optuna_storage(store)
    else:
        # every knob of every point, grid and method variants alike; a point whose method lacks a
        # variant's knob carries None for it (split_trial_config drops it again)
        knobs = list(dict.fromkeys(k for p in pending for k in p if k not in ("method", "seed")))
        pending = [{k: p.get(k) for k in ("method", *knobs, "seed")} for p in pending]
        space = {key: optuna.distributions.CategoricalDistribution(list(dict.fromkeys(p[key] for p in pending)))
                 for key in knobs}
        space["seed"] = optuna.distributions.CategoricalDistribution(sorted({p["seed"] for p in pending}))
        storage = None
    space["method"] = optuna.distributions.CategoricalDistribution(study.method_names)
    searcher = OptunaSearch(
        space=space,
        metric=study.metric,
        mode=study.mode,
        points_to_evaluate=pending or None,
        # a resumed search must not replay the proposals of the run before it: seed by trials done
        sampler=optuna.samplers.TPESampler(seed=len(store.finished_trial_ids())),
        study_name=study.name,
        storage=storage,
    )
    scheduler = None
    if search and search.early_stopping and not isinstance(study.metric, list):
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric=study.metric,
            mode=study.mode,
            max_t=profile.epochs,
            grace_period=min(search.grace_epochs, profile.epochs),
            reduction_factor=search.reduction_factor,
        )
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            study=study,
            profile=profile,
            train_ds=data["train_ds"],
            eval_ref=data["eval_ref"],
            data_info=data["info"],
            stats=data["arrays"]["stats"],
            storage=f"{store.ray_storage}/train",
            augment_args=augment_args,
        ),
        trial_resources,
    )
    recorder = StoreCallback(store, study, profile, progress, stops_early=search is not None)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_trials,
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
    # only TorchTrainer runs leave placement groups behind when Tune kills their trial
    with placement.OrphanedWorkerGroupJanitor() if profile.num_workers else nullcontext():
        tuner.fit()
    return recorder.unrecorded


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


