"""A trial's specification: everything that changes what a trial computes, resolved once.

A stored number is only ever reused, averaged or compared under the exact specification that
produced it. ``TrialSpec`` is that specification: the method and every resolved
hyperparameter (its Config defaults < ``profile_defaults`` < the profile's ``method_defaults``
< the study's base < the method's entry < ``--set`` < the grid point), the profile's training and
evaluation settings, the identity of the data (its name and a fingerprint of the train and
test splits as loaded: counts, classes, shape and a content hash), and the seed.

``Specs`` builds every spec of one run of a study; the runner makes it once, and Tune's
trials and the store callback read their spec from it (``Specs.of_tune_config``). A trial's id
is derived from its spec alone (``TrialSpec.trial_id``: a readable prefix and a hash of the whole
record), so a rerun reuses a stored trial only when nothing that changes its computation
changed, and every field is recorded with the trial's row (``TrialSpec.record``).

Two more hashes group trials for comparison:

- ``setting_id``: the spec without the seed and without the values the study varies (the
  method and the grid point). Trials of one setting differ only in what the study compares,
  so summaries compare within a setting and never across (a smoke test with ``--epochs 1``
  and the real run are two settings of one study).
- ``baseline_setting``: what the random-init baseline of the same backbone depends on (the
  backbone's shape, the image size, the data and the evaluation settings). A trial is compared
  with the baselines of its own baseline setting only.

Floats are keyed exactly (``json`` writes the shortest repr that round-trips), and an integer
given for a float hyperparameter is the same value as that float.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from sslab import methods
from sslab.plan.profiles import Profile

#: profile fields that shape training: a change to any of them changes what a trial computes
TRAINING_FIELDS = (
    "image_size", "arch", "width", "cifar_stem", "epochs", "batch_size", "shuffle_buffer", "workers",
    "use_gpu", "precision", "cudnn_benchmark", "compile", "view_transfer", "channels_last", "torch_threads",
)
#: profile fields of the evaluation of the frozen backbone (and of the per-epoch monitor)
EVALUATION_FIELDS = ("knn_k", "knn_temperature", "monitor_images", "probe_epochs", "invariance_samples",
                     "label_free_images", "lidar_instances", "lidar_views")
#: profile fields that say which data is loaded (the loaded splits' fingerprints say what it was); the
#: labelled evaluation dataset only when one is given (``data_identity``)
DATA_FIELDS = ("dataset", "train_subset", "test_subset", "eval_dataset")
#: profile fields that change where, how fast or how robustly a trial runs, never what it computes:
#: the step budget is resolved into ``epochs``; ``method_defaults`` into the config; the number of
#: Train workers enters as the world size (``workers``: 0 and 1 both train on one worker)
NOT_COMPUTING_FIELDS = (
    "name", "steps", "num_workers", "cpus_per_worker", "worker_placement", "augment_nodes", "prefetch_batches",
    "timing_warmup_steps", "max_failures", "method_defaults", "images_per_device_s",
)
#: the backbone-and-evaluation part of a spec that the random-init baseline shares
_BASELINE_TRAINING = ("image_size", "arch", "width", "cifar_stem")

_HASH_CHARS = 10


def digest(record: Mapping[str, Any], chars: int = _HASH_CHARS) -> str:
    """A stable hash of a JSON-able record: floats by their exact repr, keys sorted."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _canonical(value: Any) -> Any:
    """A value as it is hashed and recorded: tuples as lists, numpy scalars as Python's; NaN as a string
    (JSON has none, and NaN != NaN would make a spec differ from itself)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


def profile_training(profile: Profile) -> dict[str, Any]:
    """The training settings of ``profile`` that a spec records (``TRAINING_FIELDS``)."""
    values = asdict(profile)
    values["workers"] = max(1, profile.num_workers)
    return {name: _canonical(values[name]) for name in TRAINING_FIELDS}


def profile_evaluation(profile: Profile) -> dict[str, Any]:
    return {name: _canonical(getattr(profile, name)) for name in EVALUATION_FIELDS}


def data_identity(profile: Profile, train: Mapping[str, Any], test: Mapping[str, Any],
                  evaluation: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """What was loaded: the profile's dataset name and subsets, and each split's fingerprint (counts,
    classes, shape, content hash: ``data.Split.identity``; of a split read without its labels, its
    pixels alone); with a labelled evaluation dataset (``eval_dataset``), its name and its two
    splits' fingerprints too (``eval_train_*``, ``eval_test_*``), so that a number is tied to the
    exact data it was computed on. Without one no ``eval_*`` field is recorded."""
    out: dict[str, Any] = {name: _canonical(getattr(profile, name)) for name in DATA_FIELDS if name != "eval_dataset"}
    splits = [("train", train), ("test", test)]
    if profile.eval_dataset is not None:
        if evaluation is None:
            raise ValueError(f"eval_dataset {profile.eval_dataset!r}: the identity of its splits is needed")
        out["eval_dataset"] = profile.eval_dataset
        splits += [("eval_train", evaluation[0]), ("eval_test", evaluation[1])]
    for split, identity in splits:
        out.update({f"{split}_{key}": _canonical(value) for key, value in identity.items()})
    return out


def resolved_config(method: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of ``method`` after ``settings`` (validated by its Config), an integer
    given for a float field written as that float."""
    cls = methods.get(method)
    floats = {name for name, kind, _, _ in cls.Config.flat_fields() if kind in ("float", float)}
    return {name: float(value) if name in floats and isinstance(value, int) and not isinstance(value, bool)
            else _canonical(value) for name, value in cls.Config.from_flat(settings).flat().items()}


def name_of(trial_id: str) -> str:
    """The readable part of a trial id (``TrialSpec.name``): the id without its hash."""
    return trial_id.rsplit("-", 1)[0]


def _readable(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9_.,+=-]+", "_", text)


@dataclass(frozen=True)
class TrialSpec:
    """Everything that changes what one trial computes (see the module docstring)."""

    method: str
    #: every hyperparameter of the method, resolved
    config: Mapping[str, Any]
    #: the study's varied values at this trial (a subset of ``config``): names the trial, and is what
    #: its setting leaves out
    point: Mapping[str, Any]
    seed: int
    training: Mapping[str, Any]
    evaluation: Mapping[str, Any]
    data: Mapping[str, Any]

    def record(self) -> dict[str, Any]:
        """The spec as one flat row: ``method``, ``seed``, ``config/<name>``, ``train/<field>``,
        ``eval/<field>``, ``data/<field>`` (what the store records with the trial's results)."""
        return {
            "method": self.method,
            "seed": self.seed,
            **{f"config/{k}": v for k, v in self.config.items()},
            **{f"train/{k}": v for k, v in self.training.items()},
            **{f"eval/{k}": v for k, v in self.evaluation.items()},
            **{f"data/{k}": v for k, v in self.data.items()},
        }

    @property
    def name(self) -> str:
        """The readable part of the trial's id: the method, the point and the seed."""
        return "-".join([self.method, *(f"{k}={_readable(self.point[k])}" for k in sorted(self.point)),
                         f"seed={self.seed}"])

    @functools.cached_property
    def trial_id(self) -> str:
        """The trial's id, computed here and nowhere else, once per spec (the runner's specs travel
        to the trials with it): its ``name`` to read, then a hash of the whole record (the point is
        part of the config)."""
        return f"{self.name}-{digest(self.record())}"

    @functools.cached_property
    def setting_id(self) -> str:
        """The spec without the seed and what the study varies: trials of one setting may be compared."""
        varied = {"method", "seed", *(f"config/{k}" for k in self.point)}
        return digest({k: v for k, v in self.record().items() if k not in varied})

    @functools.cached_property
    def baseline(self) -> "BaselineSpec":
        return BaselineSpec(
            backbone={k: self.training[k] for k in _BASELINE_TRAINING},
            evaluation=dict(self.evaluation),
            data=dict(self.data),
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "config": dict(self.config), "point": dict(self.point), "seed": self.seed,
                "training": dict(self.training), "evaluation": dict(self.evaluation), "data": dict(self.data)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrialSpec":
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class BaselineSpec:
    """What the random-init baseline of one seed depends on: the backbone's shape and image size,
    the evaluation settings and the data."""

    backbone: Mapping[str, Any]
    evaluation: Mapping[str, Any]
    data: Mapping[str, Any]
    seed: int

    def record(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            **{f"train/{k}": v for k, v in self.backbone.items()},
            **{f"eval/{k}": v for k, v in self.evaluation.items()},
            **{f"data/{k}": v for k, v in self.data.items()},
        }

    @functools.cached_property
    def setting_id(self) -> str:
        """The same for every seed of one backbone, data and evaluation."""
        return digest({k: v for k, v in self.record().items() if k != "seed"})


@dataclass(frozen=True)
class Specs:
    """The specifications of one run of a study (its profile with the budget resolved for the
    loaded data, and the data's identity): built once by the runner, read by its trials and by the
    store callback."""

    study: Any  # sslab.plan.study.Study
    profile: Profile
    data: Mapping[str, Any]
    #: the specs the runner planned, by trial id (a grid's trials are given to Tune by id)
    planned: Mapping[str, TrialSpec] = field(default_factory=dict)
    #: a search's proposals resolved so far in this process, by their Tune config (``of_tune_config``)
    proposals: dict[str, TrialSpec] = field(default_factory=dict, compare=False, repr=False)

    def spec(self, method: str, point: Mapping[str, Any], seed: int) -> TrialSpec:
        """The spec of ``method`` at grid point ``point`` with ``seed``."""
        config = resolved_config(method, self.study.method_config(method, dict(point), self.profile))
        return TrialSpec(
            method=method,
            config=config,
            point={k: config[k] for k in point},
            seed=int(seed),
            training=profile_training(self.profile),
            evaluation=profile_evaluation(self.profile),
            data=dict(self.data),
        )

    def planned_specs(self, seeds: int) -> list[TrialSpec]:
        """Every (method, point) the profile trains, seeds inner."""
        return [self.spec(method, point, seed) for method, point in self.study.configurations(self.profile.name)
                for seed in range(seeds)]

    def with_planned(self, specs: list[TrialSpec]) -> "Specs":
        return Specs(self.study, self.profile, self.data, {s.trial_id: s for s in specs})

    def of_tune_config(self, config: Mapping[str, Any]) -> TrialSpec:
        """The spec of a Tune trial, a lookup: a planned one by its id (``{"trial_id": ...}``), or a
        search's proposal ``{method, <knobs>, seed}``, resolved the first time this process sees it
        (a knob set to None is one the method lacks) and looked up after that."""
        if "trial_id" in config:
            return self.planned[config["trial_id"]]
        key = json.dumps(dict(config), sort_keys=True, default=_jsonable)
        if key not in self.proposals:
            point = {k: v for k, v in config.items() if k not in ("method", "seed") and v is not None}
            self.proposals[key] = self.spec(str(config["method"]), point, int(config["seed"]))
        return self.proposals[key]

    def baseline(self, seed: int) -> BaselineSpec:
        return self.spec(self.study.method_names[0], {}, seed).baseline

    @functools.cached_property
    def setting_ids(self) -> list[str]:
        """The settings of this run: one per method of the study (their configs differ) and per
        variant, whichever of them this run trains (``--method`` trains one of a comparison)."""
        every = replace(self.study, only=None, profile_methods={})
        return sorted({self.spec(method, point, 0).setting_id for method, point in every.configurations(self.profile.name)})
