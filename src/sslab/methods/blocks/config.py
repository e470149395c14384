"""One way to declare a hyperparameter and validate it.

Every method's ``Config`` is a dataclass deriving from ``MethodConfig`` whose fields are
declared with ``hyperparameter(default, symbol, help, range)``: the paper's symbol (or the
field's own name when the paper has none), a one-line help and the allowed range, written
as an interval (``"[0, 1)"``, ``"(0, inf)"``) or a set of values (``"{sgd, lars, adamw}"``).
Building a config validates it; a bad value raises ``ValueError`` naming the field, its
symbol, the value and the range.
"""

from __future__ import annotations

import copy
import functools
import numbers
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

_INTERVAL = re.compile(r"^([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])$")


def hyperparameter(default: Any, symbol: str, help: str, range: str):
    """A config field with its paper symbol, a one-line help and its allowed range."""
    if not (range.startswith("{") and range.endswith("}")) and not _INTERVAL.match(range):
        raise ValueError(f"range {range!r} is neither an interval like '[0, 1)' nor a set like '{{a, b}}'")
    metadata = {"symbol": symbol, "help": help, "range": range}
    if isinstance(default, dict | list | set):  # a mutable default: each config gets its own copy
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_value(name: str, value: Any, meta: dict[str, Any], *, kind: str = "float") -> None:
    """Check ``value`` (of the field type ``kind``: int, float, str or bool) against
    ``meta["range"]``; raise ValueError naming the field otherwise."""
    label = f"{name} ({meta['symbol']})" if meta.get("symbol", name) != name else name
    allowed = meta["range"]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{label} = {value!r} must be true or false")
        return
    if allowed.startswith("{"):
        if not isinstance(value, str) or value not in [v.strip() for v in allowed[1:-1].split(",")]:
            raise ValueError(f"{label} = {value!r} is not one of the allowed values {allowed}")
        return
    integer = kind == "int"
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{label} = {value!r} must be {'an integer' if integer else 'a number'} in {allowed}")
    left, low, high, right = _INTERVAL.match(allowed).groups()
    above = value >= float(low) if left == "[" else value > float(low)
    below = value <= float(high) if right == "]" else value < float(high)
    if not (above and below):  # also catches NaN
        raise ValueError(f"{label} = {value!r} is outside the allowed range {allowed}")


@dataclass
class Optimiser:
    """How a method is optimised: the family, the learning rate and how it scales with the batch,
    weight decay (and which parameters skip it), warm-up. Every method's Config holds one as its
    ``optim`` field, with its paper's values (``optimiser(...)``); validated on construction."""

    optimizer: str = hyperparameter("sgd", "optimizer", "optimizer family", "{sgd, lars, adamw}")
    base_lr: float = hyperparameter(
        0.03, "lr", "learning rate at the reference batch (scaled to the actual batch by lr_scaling)", "(0, inf)")
    lr_scaling: str = hyperparameter(
        "linear", "lr_scaling", "lr = base_lr × (batch / reference_batch) [linear], its square root [sqrt], "
        "or base_lr as is [none]", "{linear, sqrt, none}")
    reference_batch: int = hyperparameter(256, "reference_batch", "global batch at which lr = base_lr", "[1, inf)")
    momentum: float = hyperparameter(0.9, "momentum", "SGD/LARS momentum (AdamW: β₁)", "[0, 1)")
    weight_decay: float = hyperparameter(1e-4, "wd", "weight decay", "[0, inf)")
    exclude_norm_and_bias: bool = hyperparameter(
        False, "exclude_norm_and_bias", "no weight decay (and no LARS adaptation) on BatchNorm and bias parameters",
        "{true, false}")
    warmup_epochs: int = hyperparameter(0, "warmup_epochs", "linear warm-up before the cosine decay", "[0, inf)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        validate_fields(self)

    def learning_rate(self, global_batch: int) -> float:
        """The peak learning rate at ``global_batch`` (e.g. SimCLR: 0.3 × batch / 256)."""
        ratio = global_batch / self.reference_batch
        return self.base_lr * {"linear": ratio, "sqrt": ratio ** 0.5, "none": 1.0}[self.lr_scaling]


#: the optimiser's settings, by the names a study, a trial's record and ``--set`` use
OPTIMISER_FIELDS = tuple(f.name for f in fields(Optimiser))


def optimiser(*, notes: dict[str, str] | None = None, symbols: dict[str, str] | None = None, **values: Any):
    """A Config's ``optim`` field: the paper's optimiser, ``values`` over ``Optimiser``'s defaults;
    ``notes`` replace a setting's help where the method says more (e.g. "official: 1.0 per 256"),
    ``symbols`` its symbol where the paper writes another (Adam's β₁ for ``momentum``)."""
    named = set(values) | set(notes or {}) | set(symbols or {})
    if named - set(OPTIMISER_FIELDS):
        raise ValueError(f"optimiser settings {sorted(named - set(OPTIMISER_FIELDS))} do not exist; "
                         f"they are {list(OPTIMISER_FIELDS)}")
    Optimiser(**values)  # a bad paper value fails where it is declared
    return field(default_factory=functools.partial(Optimiser, **values),
                 metadata={"notes": dict(notes or {}), "symbols": dict(symbols or {})})


def validate_fields(config: Any, skip: tuple[str, ...] = ()) -> None:
    """Check every declared field of ``config`` against its range, but those named in ``skip`` (which
    the config validates as a whole itself)."""
    for f in fields(config):
        if "range" in f.metadata and f.name not in skip:
            check_value(f.name, getattr(config, f.name), f.metadata, kind=getattr(f.type, "__name__", f.type))


@dataclass
class MethodConfig:
    """Base of every method's hyperparameters: validated on construction, self-describing.

    Holds how the method is optimised (``optim``, an ``Optimiser``), since the papers differ
    there as much as in their losses; a method's ``Config`` redeclares ``optim = optimiser(...)``
    with its paper's values.

    Studies, trial records, the command line and Tune see one **flat** namespace: the method's
    own fields and the optimiser's settings by their names (``temperature``, ``base_lr``).
    ``from_flat`` builds a Config from it, ``flat`` gives it back (in field order, the optimiser's
    settings where ``optim`` stands), and ``describe``, ``field_names`` and ``symbols`` list it.
    """

    optim: Optimiser = optimiser()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field, its value and the allowed range, for the first bad field."""
        self.optim.validate()
        validate_fields(self)

    # --- the flat namespace ---------------------------------------------------------------
    @classmethod
    def from_flat(cls, settings: Mapping[str, Any] | None = None, /, **more: Any) -> "MethodConfig":
        """The Config of ``settings``: method fields and optimiser settings by name (an ``optim``
        entry, an Optimiser or a dict of its settings, is taken as the starting optimiser)."""
        values = {**(settings or {}), **more}
        unknown = sorted(set(values) - cls.field_names() - {"optim"})
        if unknown:
            raise ValueError(f"{cls.__name__} has no hyperparameter(s) {unknown}; its hyperparameters are: {sorted(cls.field_names())}")
        optim = values.pop("optim", None)
        if optim is None:
            optim = cls.default_optimiser()
        elif isinstance(optim, Mapping):
            optim = replace(cls.default_optimiser(), **optim)
        settings_of_optim = {name: values.pop(name) for name in OPTIMISER_FIELDS if name in values}
        if settings_of_optim:
            optim = replace(optim, **settings_of_optim)
        return cls(**values, optim=optim)

    def flat(self) -> dict[str, Any]:
        """Every hyperparameter by name, in field order (the optimiser's where ``optim`` stands)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "optim":
                out.update({name: getattr(self.optim, name) for name in OPTIMISER_FIELDS})
            else:
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def default_optimiser(cls) -> Optimiser:
        """The method's own optimiser (its paper's)."""
        return next(f for f in fields(cls) if f.name == "optim").default_factory()

    @classmethod
    def flat_fields(cls) -> list[tuple[str, str, dict[str, Any], Any]]:
        """(name, type name, metadata, default) of every hyperparameter of the flat namespace."""
        out = []
        for f in fields(cls):
            if f.name == "optim":
                default, notes, symbols = f.default_factory(), f.metadata["notes"], f.metadata["symbols"]
                out += [(g.name, _type_name(g), {**g.metadata, "help": notes.get(g.name, g.metadata["help"]),
                                                 "symbol": symbols.get(g.name, g.metadata["symbol"])},
                         getattr(default, g.name)) for g in fields(Optimiser)]
            elif "range" in f.metadata:
                default = f.default if f.default is not MISSING else (
                    f.default_factory() if f.default_factory is not MISSING else None)
                out.append((f.name, _type_name(f), dict(f.metadata), default))
        return out

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every hyperparameter: name, symbol, help, range and default (for help texts and docs)."""
        return [{"name": name, "symbol": meta["symbol"], "help": meta["help"], "range": meta["range"],
                 "default": default} for name, _, meta, default in cls.flat_fields()]

    @classmethod
    def field_names(cls) -> set[str]:
        """The names of the flat namespace: the method's fields and the optimiser's settings."""
        return {f.name for f in fields(cls) if f.name != "optim"} | set(OPTIMISER_FIELDS)

    @classmethod
    def symbols(cls) -> dict[str, str]:
        """Field name → paper symbol (λ, τ, ...)."""
        return {name: meta.get("symbol", name) for name, _, meta, _ in cls.flat_fields()}


def _type_name(f: Any) -> str:
    return getattr(f.type, "__name__", f.type)
