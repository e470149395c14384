"""Declaring a study: which methods, their base configuration, a grid or a search, seeds.

A study script is declarative::

    STUDY = Study(name="<method>_<knob>", method="<method>", grid={"<knob>": [0.0, 0.5, 1.0]})
    if __name__ == "__main__":
        run(STUDY)  # from sslab.cli import run: declaring a study never imports its runner

A study may compare methods as well as one method's knobs: ``methods`` maps each method
to its own base configuration, and the method becomes a dimension of the grid::

    Study(name="<a>_vs_<b>", methods={"<method a>": {}, "<method b>": {"<knob>": 0.5}}, seeds=3)

A method may also appear as several variants, a list of configurations, each one trained (and
the keys they set become knobs of the study, columns of its tables)::

    Study(name="<a>_variants", methods={"<method a>": [{"<knob>": "<x>"}, {"<knob>": "<y>"}],
                                        "<method b>": {}})

This module says *what* a study compares and validates it (it never imports the runner: the CLI's
``run`` is a script's entry point); ``runner.py`` runs it on Ray
and ``trial.py`` is one trial. A method's settings are layered, later wins: its Config
defaults (the paper's) < its ``profile_defaults`` for the profile < the profile's
``method_defaults`` < the study's ``base`` < the method's entry in ``methods`` < the command line's
``--set`` (``overrides``) < the grid point.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from sslab import methods
from sslab.results import metrics
from sslab.plan.profiles import Profile


@dataclass
class Search:
    """A searched space instead of a grid: Optuna's TPE proposes, ASHA stops weak trials early.

    ``space`` maps hyperparameters to Optuna distributions. The method's defaults
    (the paper's) are evaluated first. The search ends after ``trials`` trials or
    ``time_budget_s`` seconds, whichever comes first; ``budgets`` shrinks both per profile.
    """

    space: dict[str, Any]
    trials: int = 32
    time_budget_s: float | None = None
    #: ASHA on the per-epoch metric (single-objective studies only)
    early_stopping: bool = True
    grace_epochs: int = 1
    reduction_factor: int = 2
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_profile(self, profile: str, **overrides: Any) -> "Search":
        settings = {**self.budgets.get(profile, {}), **{k: v for k, v in overrides.items() if v is not None}}
        return replace(self, **settings)


@dataclass(frozen=True)
class Finding:
    """A claim of the paper that a study tests, as data: configuration ``better`` scores higher
    (lower, for a ``min`` study) than ``worse`` on ``metric``.

    A configuration is a dict of knob values (and ``method`` when the study compares methods);
    the trials that match it are pooled over seeds. ``worse`` defaults to ``better`` with
    ``worse_metric`` for claims about layers: ``Finding("res5 beats res4", {"<knob>": <value>},
    metric="probe_res5_top1", worse_metric="probe_res4_top1")``. ``summary.judge`` says whether
    a study's trials reproduce it.
    """

    claim: str
    better: dict[str, Any]
    worse: dict[str, Any] | None = None
    #: the study's primary metric when None
    metric: str | None = None
    #: the metric of ``worse``, when it differs (a layer against another)
    worse_metric: str | None = None
    #: where the paper says it, e.g. "Table 5"
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "better": dict(self.better), "worse": dict(self.worse or self.better),
                "metric": self.metric, "worse_metric": self.worse_metric, "source": self.source}


@dataclass(frozen=True)
class Picks:
    """A claim about choosing without labels: the configuration of ``method`` that ``measure``
    picks (its best by ``mode``) scores within ``within`` of the best configuration on ``target``.
    E.g. ``Picks("RankMe picks <method>'s configuration within 0.01 kNN of the best", "rankme",
    "max", method="<method>")``; ``summary.judge`` gives the verdict."""

    claim: str
    measure: str
    mode: str
    method: str | None = None
    within: float = 0.01
    target: str = metrics.KNN
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "picks", "claim": self.claim, "measure": self.measure, "mode": self.mode,
                "method": self.method, "within": self.within, "target": self.target, "source": self.source}


@dataclass(frozen=True)
class RanksBetter:
    """A claim that measure ``better`` ranks ``method``'s configurations more like ``target`` does
    than measure ``worse`` (Spearman's ρ of each, signed by its mode; ``summary.judge``)."""

    claim: str
    better: str
    better_mode: str
    worse: str
    worse_mode: str
    method: str | None = None
    target: str = metrics.KNN
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ranks_better", "claim": self.claim, "better": self.better, "better_mode": self.better_mode,
                "worse": self.worse, "worse_mode": self.worse_mode, "method": self.method, "target": self.target,
                "source": self.source}


@dataclass
class Study:
    """What a study compares; nothing about how Ray runs it."""

    name: str
    #: the method, for a study of one method's knobs (or use ``methods``)
    method: str | None = None
    #: the grid, at full size (the ``cifar`` profile and larger)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    description: str = ""
    #: settings shared by every method of the study
    base: dict[str, Any] = field(default_factory=dict)
    #: several methods compared, each with its own base configuration, or a list of variants (the
    #: method is a grid dimension)
    methods: dict[str, dict[str, Any] | list[dict[str, Any]]] = field(default_factory=dict)
    seeds: int = 1
    #: one metric, or several (multi-objective search, e.g. ["knn_top1", "device_s"]); a label-free
    #: measure (``rankme``, ``embedding/lidar``, ...: ``metrics.LABEL_FREE``) chooses without labels
    metric: str | list[str] = metrics.KNN
    #: "max" or "min" per metric; None: each metric's own (``metrics.mode_of``; "max" where it has
    #: none). A mode against a metric's own is refused.
    mode: str | list[str] | None = None
    profile: str = "local"
    #: smaller grids for some profiles, e.g. {"local": {...}}
    grids: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    #: fewer of ``methods`` for some profiles, e.g. {"local": ("<method a>",)}, when the whole
    #: comparison would not fit the profile's time budget
    profile_methods: dict[str, tuple[str, ...]] = field(default_factory=dict)
    search: Search | None = None
    #: of a study comparing methods, the one method this run trains (``--method``); its trials go
    #: to the study's own store, where a run of the whole study later finds them done
    only: str | None = None
    #: the paper's claims this study tests (marked reproduced, contradicted or not established)
    findings: tuple[Finding | Picks | RanksBetter, ...] = ()
    #: the study's own changes to a profile's trial size, e.g. {"local": {"steps": 624}}: a wide
    #: study of shorter trials (the command line's ``--epochs`` and ``--subset`` win)
    profile_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: fixed settings from the command line (``--set NAME=VALUE``), over the settings of every method
    #: that has them
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.method is None) == (not self.methods):
            raise ValueError(f"study {self.name!r}: give either method='...' or methods={{...}}, not both or neither")
        for method, variants in self.methods.items():
            if isinstance(variants, list) and (not variants or not all(isinstance(v, dict) for v in variants)):
                raise ValueError(f"study {self.name!r}: methods[{method!r}] must be a dict of settings or a non-empty "
                                 f"list of them (variants), got {variants!r}")
        for profile, subset in self.profile_methods.items():
            if not subset or set(subset) - set(self.method_names):
                raise ValueError(f"study {self.name!r}: profile_methods[{profile!r}] = {list(subset)} must be a "
                                 f"non-empty subset of its methods {self.method_names}")
        if self.only is not None and self.only not in self.method_names:
            raise ValueError(f"study {self.name!r} compares methods {self.method_names}; --method picks one of "
                             f"them, not {self.only!r}")
        self._resolve_modes()

    def _resolve_modes(self) -> None:
        """Each metric's mode: the one given, or the metric's own (``metrics.mode_of``; "max" for a
        metric without one, as before modes were known). A mode that contradicts a metric's own, and
        α-ReQ (no end of it is better), are refused here, where the study is declared."""
        chosen = self.metric if isinstance(self.metric, list) else [self.metric]
        for metric in chosen:
            if metrics.is_label_free(metric) and metrics.mode_of(metric) is None:
                raise ValueError(f"study {self.name!r}: {metric} has no better end (good read-out lies in a band "
                                 f"of α around 1, not at either end): choose by "
                                 f"{metric.replace('alpha_req', 'alpha_req_gap')} (|α - 1|, mode 'min') instead")
        if self.mode is None:
            own = [metrics.mode_of(metric) or "max" for metric in chosen]
            self.mode = own if isinstance(self.metric, list) else own[0]
        given = self.mode if isinstance(self.mode, list) else [self.mode]
        if isinstance(self.metric, list) != isinstance(self.mode, list) or len(given) != len(chosen):
            return  # validate() says that they must pair up
        for metric, mode in zip(chosen, given):
            own = metrics.mode_of(metric)
            if mode not in ("max", "min"):
                raise ValueError(f"study {self.name!r}: the mode of {metric} is 'max' or 'min', not {mode!r}")
            if own is not None and mode != own:
                raise ValueError(f"study {self.name!r}: {metric} is better {'higher' if own == 'max' else 'lower'}: "
                                 f"its mode is {own!r}, not {mode!r} (leave mode out and each metric's own is used)")

    def labels_note(self, profile: Profile, labelled: bool, searching: bool) -> str | None:
        """What a run says once, after reading its data, about the labels it reads (None: the usual
        case, a labelled metric on labelled data); ``labelled``: whether the training data has labels.
        Refused here, with the fix: a method that trains on labels, or a search on a labelled metric,
        on data without labels (and no ``eval_dataset`` for the metric)."""
        data, evaluation = profile.dataset, profile.eval_dataset
        if not labelled and self.reads_labels:
            for method, point in self.configurations(profile.name):
                cls = methods.get(method)
                if cls.reads_labels(cls.Config.from_flat(self.method_config(method, point, profile))):
                    raise ValueError(f"{data} has no labels, and {method} trains on labels: give it a labelled "
                                     "dataset (one sub-folder per class, or a 'label' column)")
        skipped = "kNN and the linear probes are skipped (--eval-dataset NAME runs them on a labelled dataset)"
        their = f"kNN and the linear probes read {evaluation}'s labels" if evaluation else skipped
        if not self.reads_labels:
            after = ("" if evaluation else
                     "; once it has chosen, its pick alone is evaluated with labels, where the data has them")
            return (f"study {self.name!r} chooses by {self.primary_metric} without labels: no label of {data} is "
                    f"read; {their}{after}")
        if labelled:
            return f"{their}; the label-free measures read {data}'s test images" if evaluation else None
        if evaluation:
            return f"{data} has no labels: {their}; the label-free measures read {data}'s test images"
        if searching:
            raise ValueError(f"{data} has no labels, and study {self.name!r} searches on {self.primary_metric}, which "
                             "reads them: give --eval-dataset NAME (a labelled dataset for kNN and the probes), or "
                             "choose by a label-free measure (Study(metric='rankme'), docs/label-free.md)")
        return (f"{data} has no labels: {skipped}; the trials record the label-free measures (RankMe, α-ReQ, LiDAR, "
                "alignment, uniformity), and the summary ranks by rankme")

    @property
    def reads_labels(self) -> bool:
        """Whether choosing between this study's trials reads labels: a metric of the labelled
        evaluation (kNN, a probe). A study none of whose metrics does (a label-free measure, the loss,
        the cost) reads no label of its training data at all: the runner loads the data without its
        labels, and kNN and the probes run only on a labelled ``--eval-dataset``."""
        chosen = self.metric if isinstance(self.metric, list) else [self.metric]
        return any(metrics.needs_labels(metric) for metric in chosen)

    # --- what is compared -------------------------------------------------------------------
    @property
    def method_names(self) -> list[str]:
        """The methods this study trains, in declaration order."""
        return list(self.methods) if self.methods else [self.method]

    @property
    def knobs(self) -> list[str]:
        """The hyperparameters this study varies: the grid's (or the search space's) and those its
        method variants set."""
        if self.search:
            return list(self.search.space)
        return list(self.grid) + [k for k in self._variant_keys() if k not in self.grid]

    def _variant_keys(self) -> list[str]:
        """Every key a method's variant list sets, in first-seen order."""
        keys: dict[str, None] = {}
        for variants in self.methods.values():
            if isinstance(variants, list):
                keys.update(dict.fromkeys(k for v in variants for k in v))
        return list(keys)

    def _variants(self, method: str) -> list[dict[str, Any]]:
        """A method's configurations before the grid: its variants, or one (empty: its base is
        applied by ``method_config``)."""
        entry = self.methods.get(method, {})
        return [dict(v) for v in entry] if isinstance(entry, list) else [{}]

    def _base(self, method: str) -> dict[str, Any]:
        entry = self.methods.get(method, {})
        return {} if isinstance(entry, list) else entry

    @property
    def primary_metric(self) -> str:
        return self.metric[0] if isinstance(self.metric, list) else self.metric

    @property
    def primary_mode(self) -> str:
        return self.mode[0] if isinstance(self.mode, list) else self.mode

    def grid_for(self, profile: str) -> dict[str, list[Any]]:
        return self.grids.get(profile, self.grid)

    def methods_for(self, profile: str | None) -> list[str]:
        """The methods a profile trains: ``profile_methods[profile]`` or all of them, in declaration order."""
        subset = self.profile_methods.get(profile, ()) if profile else ()
        return [m for m in self.method_names if m in subset] if subset else self.method_names

    def methods_to_train(self, profile: str | None) -> list[str]:
        """The methods this run trains: ``only``, or every method the profile trains."""
        return [self.only] if self.only else self.methods_for(profile)

    def with_method(self, method: str) -> "Study":
        """``--method``: a study of one method's knobs moved to another method (its results go to
        ``<name>-<method>`` unless it is the study's own method); of a study comparing methods,
        that one of them alone (``only``), into the study's own store."""
        methods.get(method)  # an unknown name fails here, listing the known ones
        if self.method_names == [method]:
            return self
        if len(self.method_names) > 1:
            return replace(self, only=method)
        return replace(self, name=f"{self.name}-{method}", method=method, methods={})

    def with_metric(self, metric: str) -> "Study":
        """``--metric NAME``: the study chosen by another metric (a label-free one, say), with that
        metric's own mode, into its own store ``<study>-<metric>``, beside the study's."""
        if not (metrics.is_label_free(metric) or metrics.mode_of(metric)):
            raise ValueError(f"--metric {metric!r}: not a metric sslab records with a better end; e.g. "
                             f"{metrics.KNN}, {', '.join(m for m, f in metrics.LABEL_FREE.items() if f.mode)}")
        return replace(self, name=metrics.chosen_by(self.name, metric), metric=metric, mode=None)

    def with_settings(self, settings: dict[str, Any]) -> "Study":
        """``--set NAME=VALUE``: fixed hyperparameters over every method's settings. A name is a
        field's (``temperature``) or its paper symbol (``τ``); a knob the study varies is refused
        (it is what the study compares)."""
        resolved = {self.field_name(key): value for key, value in settings.items()}
        varied = sorted(set(resolved) & set(self.knobs))
        if varied:
            raise ValueError(f"study {self.name!r} varies {varied}: --set fixes what a study does not vary; "
                             f"run `sslab pretrain {self.method_names[0]} --set ...` for one configuration")
        return replace(self, overrides={**self.overrides, **resolved})

    def field_name(self, key: str) -> str:
        """The hyperparameter ``key`` names, by its field name or its paper symbol, over the study's
        methods; a ValueError listing their hyperparameters if none (or several) has it."""
        configs = [methods.get(m).Config for m in self.method_names]
        if any(key in config.field_names() for config in configs):
            return key
        named = sorted({name for config in configs for name, symbol in config.symbols().items() if symbol == key})
        if len(named) == 1:
            return named[0]
        listing = "; ".join(f"{m}: " + ", ".join(name if symbol == name else f"{name} ({symbol})"
                                                 for name, symbol in methods.get(m).Config.symbols().items())
                            for m in self.method_names)
        if named:
            raise ValueError(f"{key!r} is the symbol of several hyperparameters {named}; name one ({listing})")
        raise ValueError(f"no hyperparameter named {key!r}; the hyperparameters are {listing}")

    def sized(self, profile: Profile, overrides: dict[str, Any] | None = None) -> Profile:
        """``profile`` with the study's ``profile_changes`` for it, then ``overrides`` (the command
        line's): ``--epochs`` also drops a step budget the study set."""
        changes = dict(self.profile_changes.get(profile.name, {}))
        if overrides and "epochs" in overrides:
            changes.pop("steps", None)
        merged = {**changes, **(overrides or {})}
        return profile.with_overrides(**merged) if merged else profile

    def _check_selection_claim(self, claim: "Picks | RanksBetter") -> None:
        modes = [claim.mode] if isinstance(claim, Picks) else [claim.better_mode, claim.worse_mode]
        if set(modes) - {"max", "min"}:
            raise ValueError(f"study {self.name!r}: finding {claim.claim!r}: a mode is 'max' or 'min', got {modes}")
        if claim.method is not None and claim.method not in self.method_names:
            raise ValueError(f"study {self.name!r}: finding {claim.claim!r} names method {claim.method!r}, which "
                             f"the study does not train (it trains {self.method_names})")

    def configurations(self, profile: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every (method, point) of the (profile's) grid, methods outer, grid order inner; for a
        search, the one point evaluated first: the method's defaults."""
        if self.search:
            return [(m, self.paper_defaults(m)) for m in self.method_names]
        grid = self.grid_for(profile) if profile else self.grid
        keys = list(grid)
        points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
        return [(m, {**variant, **point}) for m in self.methods_to_train(profile) for variant in self._variants(m)
                for point in points]

    def paper_defaults(self, method: str | None = None) -> dict[str, Any]:
        """A method's own default (the paper's value) of every knob the study varies."""
        defaults = methods.get(method or self.method_names[0]).Config().flat()
        return {k: defaults[k] for k in self.knobs if k in defaults}

    def symbols(self) -> dict[str, str]:
        """Hyperparameter name → paper symbol (λ, τ, ...), over the study's methods."""
        out: dict[str, str] = {}
        for name in reversed(self.method_names):
            out.update(methods.get(name).Config.symbols())
        return out

    def method_config(self, method: str, point: dict[str, Any], profile: Profile) -> dict[str, Any]:
        """The settings of ``method`` at one grid point, layered as the module docstring says."""
        cls = methods.get(method)
        known = cls.Config.field_names()
        return {
            **cls.profile_defaults.get(profile.name, {}),
            **{k: v for k, v in profile.method_defaults.items() if k in known},
            **self.base,
            **self._base(method),
            **{k: v for k, v in self.overrides.items() if k in known},  # to the methods that have it
            **point,
        }

    # --- validation -----------------------------------------------------------------------
    def validate(self, profile: Profile) -> None:
        """Build every configuration's method Config (for a search: the ends of every range):
        a bad value or a knob a method lacks fails here, before Ray starts."""
        if self.search and len(self.method_names) > 1:
            raise ValueError(f"study {self.name!r}: a search covers one method; compare methods with a grid")
        varied = set(self.search.space) if self.search else set(self.grid) | set(self.grid_for(profile.name))
        for method in self.method_names:
            cls = methods.get(method)
            known = cls.Config.field_names()
            own = set(self._base(method)).union(*self._variants(method))
            unknown = sorted((varied | set(self.base) | own) - known)
            if unknown:
                having = [m for m in methods.names() if set(unknown) <= methods.get(m).Config.field_names()]
                raise ValueError(
                    f"study {self.name!r}: {method} has no hyperparameter(s) {unknown}"
                    + (f" (methods that have them: {', '.join(having)})" if having else "")
                    + f"; {method}'s are: {sorted(known)}"
                )
        if isinstance(self.metric, list) != isinstance(self.mode, list) or (
            isinstance(self.metric, list) and len(self.metric) != len(self.mode)
        ):
            raise ValueError(f"study {self.name!r}: metric {self.metric!r} and mode {self.mode!r} must pair up")
        from sslab.methods.base import Method  # here: declaring a study imports no torch

        chosen = self.metric if isinstance(self.metric, list) else [self.metric]
        for metric in filter(metrics.embedding_measure, chosen):
            lacking = [m for m in self.method_names if methods.get(m).embedding is Method.embedding]
            if lacking:
                raise ValueError(f"study {self.name!r} chooses by {metric}, but {', '.join(lacking)} has no embedding "
                                 f"(Method.embedding): choose by {metrics.embedding_measure(metric)}, the same "
                                 "measure of the backbone's representation")
        for method, point in self.configurations(profile.name):
            cls = methods.get(method)
            config = cls.Config.from_flat(self.method_config(method, point, profile))
            if not self.reads_labels and cls.reads_labels(config):
                raise ValueError(f"study {self.name!r} chooses by {', '.join(chosen)} without reading a label, but "
                                 f"{method} trains on labels: choose by a labelled metric (knn_top1) to train it")
            cls.views(config, profile.image_size)  # a view that cannot cut this image size says so here
            cls.invariance_views(config, profile.image_size)
            if self.search:
                for name, distribution in self.search.space.items():
                    for value in _extremes(distribution):
                        cls.Config.from_flat(self.method_config(method, {**point, name: value}, profile))
        for finding in self.findings:
            if not isinstance(finding, Finding):  # a claim about choosing without labels
                self._check_selection_claim(finding)
                continue
            varied = set(self.knobs) | ({"method"} if len(self.method_names) > 1 else set())
            for side in (finding.better, finding.worse or finding.better):
                unknown = sorted(set(side) - varied)
                if unknown:
                    raise ValueError(f"study {self.name!r}: finding {finding.claim!r} names {unknown}, which the "
                                     f"study does not vary (it varies {sorted(varied)})")
        if self.search and self.search.trials < 1:
            raise ValueError(f"study {self.name!r}: a search needs at least 1 trial, got {self.search.trials}")
        if self.seeds < 1:
            raise ValueError(f"study {self.name!r}: seeds = {self.seeds} must be at least 1")

def _extremes(distribution: Any) -> list[Any]:
    """The values at the ends of an Optuna distribution (every choice of a categorical one)."""
    choices = getattr(distribution, "choices", None)
    return list(choices) if choices is not None else [distribution.low, distribution.high]
