"""Studies: a base configuration, a search space and seeds, run through Ray Tune.

A study script is declarative::

    STUDY = Study(name="pirl_lambda", method="pirl", grid={"loss_weight": [0, .25, .5, .75, 1]})
    if __name__ == "__main__":
        STUDY.main()

``run_study`` does the plumbing: it validates every configuration before any
Ray work, evaluates the random-init baseline once per seed, runs one Tune trial
per (configuration, seed) (each trial launches one TorchTrainer; Optuna is the
searcher, a grid is given to it as the points to evaluate), writes every
finished trial to the results store the moment it finishes, and prints a
summary. Re-running the same study skips the trials already in the store.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import pandas as pd

from sslab import methods
from sslab.platform import placement
from sslab.platform.placement import TRIAL_RESOURCE
from sslab.platform.profiles import Profile, get_profile
from sslab.platform.results import ResultsStore, results_root


@dataclass
class Study:
    """What a study compares; nothing about how Ray runs it."""

    name: str
    method: str
    grid: dict[str, list[Any]]
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    seeds: int = 1
    metric: str = "knn_top1"
    mode: str = "max"
    profile: str = "local"

    def configurations(self) -> list[dict[str, Any]]:
        """Every point of the grid, as method-config overrides (in grid order)."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def method_config(self, point: dict[str, Any], profile: Profile) -> dict[str, Any]:
        """The method's hyperparameters for one grid point: profile defaults < study base < point."""
        known = {f.name for f in fields(methods.get(self.method).Config)}
        profile_defaults = {k: v for k, v in profile.method_defaults.items() if k in known}
        return {**profile_defaults, **self.base, **point}

    def validate(self, profile: Profile) -> None:
        """Build every configuration's method Config: a bad value fails here, before Ray starts."""
        cls = methods.get(self.method)
        known = {f.name for f in fields(cls.Config)}
        unknown = sorted((set(self.grid) | set(self.base)) - known)
        if unknown:
            raise ValueError(f"study {self.name!r}: {self.method} has no hyperparameter(s) {unknown}; known: {sorted(known)}")
        for point in self.configurations():
            cls.Config(**self.method_config(point, profile))
        if self.seeds < 1:
            raise ValueError(f"study {self.name!r}: seeds = {self.seeds} must be at least 1")

    def main(self, argv: Sequence[str] | None = None) -> pd.DataFrame:
        """Command-line entry point of a study script."""
        args = build_parser(self).parse_args(argv)
        overrides = {k: v for k, v in {"epochs": args.epochs, "train_subset": args.subset}.items() if v is not None}
        return run_study(
            self,
            profile=args.profile,
            seeds=args.seeds,
            root=args.results,
            data_dir=args.data_dir,
            address=args.address,
            profile_overrides=overrides,
            retry_failed=args.retry_failed,
        )


def build_parser(study: Study) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=study.name, description=study.description or None)
    parser.add_argument("--profile", default=study.profile, help="local (CPU, minutes) or cifar (GPU, full CIFAR-10)")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per configuration (default {study.seeds})")
    parser.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $SSLAB_DATA or ~/.cache/sslab/data)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--subset", type=int, default=None, help="override the profile's training subset size")
    parser.add_argument("--retry-failed", action="store_true", help="run failed trials of an earlier run again")
    return parser


def trial_key(method: str, point: dict[str, Any], seed: int) -> str:
    """A trial's stable id: the same configuration and seed always map to the same id."""
    parts = [method] + [f"{k}={point[k]:g}" if isinstance(point[k], float) else f"{k}={point[k]}" for k in sorted(point)]
    return "-".join(parts + [f"seed={seed}"])


def backbone_name(profile: Profile) -> str:
    return f"{profile.arch}-w{profile.width}{'-cifar' if profile.cifar_stem else ''}"


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
    store = ResultsStore(results_root(root), study.name)
    store.check_writable()
    store.write_metadata(
        {
            "method": study.method,
            "description": study.description,
            "grid": study.grid,
            "base": study.base,
            "seeds": seeds,
            "metric": study.metric,
            "mode": study.mode,
            "profile": profile.to_dict(),
            "backbone": backbone_name(profile),
        }
    )
    skip_statuses = ("ok", "stopped") if retry_failed else ("ok", "failed", "stopped")
    done = store.finished_trial_ids(skip_statuses)
    all_points = [{**point, "seed": seed} for point in study.configurations() for seed in range(seeds)]
    pending = [p for p in all_points if trial_key(study.method, _without_seed(p), p["seed"]) not in done]
    progress = Progress(study, profile, total=len(all_points), already_done=len(all_points) - len(pending), quiet=quiet)

    if pending or _missing_baseline_seeds(store, profile, seeds):
        _init_ray(address)
        placement.check_shared_storage(store.root, placement.cluster_shape())
        placement.augment_policy(profile)
        data = _load_data(profile, data_dir, progress)
        _record_baselines(store, profile, data, seeds, progress)
        if pending:
            _run_trials(study, profile, store, pending, data, progress)
    trials = store.read("trials")
    progress.summary(trials, store.read("baselines"))
    return trials


def _without_seed(point: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k != "seed"}


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
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )


def _load_data(profile: Profile, data_dir, progress) -> dict[str, Any]:
    import ray

    from sslab.platform.data import data_dir as resolve_data_dir
    from sslab.platform.data import load_split, to_ray_dataset

    root = resolve_data_dir(data_dir)
    train = load_split(profile.dataset, "train", root=root, subset=profile.train_subset, seed=0)
    test = load_split(profile.dataset, "test", root=root, subset=profile.test_subset, seed=0)
    for name, split in (("train", train), ("test", test)):
        if split.skipped:
            progress.note(f"{split.skipped} unreadable image(s) skipped in the {name} split")
        if len(split.labels) == 0:
            raise ValueError(f"the {name} split of {profile.dataset!r} is empty; check the dataset at {root}")
    arrays = {
        "train_images": train.images,
        "train_labels": train.labels,
        "test_images": test.images,
        "test_labels": test.labels,
    }
    return {"arrays": arrays, "eval_ref": ray.put(arrays), "train_ds": to_ray_dataset(train), "num_samples": len(train.labels)}


def _missing_baseline_seeds(store: ResultsStore, profile: Profile, seeds: int) -> list[int]:
    """Seeds whose random-init baseline of this profile's backbone is not in the store yet."""
    existing = store.read("baselines")
    if existing.empty:
        return list(range(seeds))
    done = set(existing.loc[existing["backbone"] == backbone_name(profile), "seed"])
    return [seed for seed in range(seeds) if seed not in done]


def _record_baselines(store: ResultsStore, profile: Profile, data: dict[str, Any], seeds: int, progress) -> None:
    """The same evaluation of the untrained backbone, once per seed (the random-init reference)."""
    import torch

    from sslab.methods.backbone import Backbone
    from sslab.platform.train import evaluate_for_profile

    name = backbone_name(profile)
    for seed in _missing_baseline_seeds(store, profile, seeds):
        start = time.perf_counter()
        torch.manual_seed(seed)
        backbone = Backbone(profile.arch, cifar_stem=profile.cifar_stem, width=profile.width)
        metrics = evaluate_for_profile(backbone, data["arrays"], profile, seed=seed)
        store.record_baseline({"backbone": name, "seed": seed, **metrics, "wall_s": time.perf_counter() - start})
        progress.note(f"random-init baseline (seed {seed}): kNN top-1 {metrics['knn_top1']:.3f}")


def _run_trials(study: Study, profile: Profile, store: ResultsStore, pending, data, progress) -> None:
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
    trial_resources = {TRIAL_RESOURCE: 1} if ray.cluster_resources().get(TRIAL_RESOURCE) else {"CPU": 1}
    space = {key: optuna.distributions.CategoricalDistribution(values) for key, values in study.grid.items()}
    space["seed"] = optuna.distributions.CategoricalDistribution(sorted({p["seed"] for p in pending}))
    searcher = OptunaSearch(
        space=space,
        metric=study.metric,
        mode=study.mode,
        points_to_evaluate=pending,
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            study=study,
            profile=profile,
            train_ds=data["train_ds"],
            eval_ref=data["eval_ref"],
            num_samples=data["num_samples"],
            storage=f"{store.ray_storage}/train",
            augment_args=augment_args,
        ),
        trial_resources,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=len(pending),
            max_concurrent_trials=min(len(pending), concurrent),
        ),
        run_config=tune.RunConfig(
            name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=store.ray_storage,
            verbose=0,
            # a trial whose driver died with its node starts again; its TorchTrainer resumes
            # from the last epoch checkpoint (lost workers are retried by Ray Train itself)
            failure_config=tune.FailureConfig(max_failures=profile.max_failures, fail_fast=False),
            callbacks=[StoreCallback(store, study, profile, progress)],
        ),
    )
    tuner.fit()


def run_trial(
    config: dict[str, Any],
    *,
    study: Study,
    profile: Profile,
    train_ds,
    eval_ref,
    num_samples: int,
    storage: str,
    augment_args: dict[str, Any] | None = None,
) -> None:
    """One Tune trial: launch one TorchTrainer for one (configuration, seed)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from sslab.platform.augment import with_views
    from sslab.platform.train import TrialSpec, make_trainer, root_cause

    point = _without_seed(config)
    seed = int(config["seed"])
    spec = TrialSpec(
        method=study.method,
        method_config=study.method_config(point, profile),
        profile=profile,
        seed=seed,
        num_samples=num_samples,
        eval_data=eval_ref,
    )
    _, method = spec.build()
    trainer = make_trainer(
        spec,
        with_views(train_ds, method.views(), remote_args=augment_args),
        name=trial_key(study.method, point, seed),
        storage_path=storage,
        callbacks=[TuneReportCallback()],
    )
    try:
        trainer.fit()
    except Exception as err:  # Ray wraps worker errors in pages of traceback: keep the cause
        raise RuntimeError(root_cause(err)) from None
