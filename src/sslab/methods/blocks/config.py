"""One way to declare a hyperparameter and validate it.

Every method's ``Config`` is a dataclass deriving from ``MethodConfig`` whose fields are
declared with ``hyperparameter(default, symbol, help, range)``: the paper's symbol (or the
field's own name when the paper has none), a one-line help and the allowed range, written
as an interval (``"[0, 1)"``, ``"(0, inf)"``) or a set of values (``"{sgd, lars, adamw}"``).
Building a config validates it; a bad value raises ``ValueError`` naming the field, its
symbol, the value and the range.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

_INTERVAL = re.compile(r"^([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])$")


def hyperparameter(default: Any, symbol: str, help: str, range: str):
    """A config field with its paper symbol, a one-line help and its allowed range."""
    if not (range.startswith("{") and range.endswith("}")) and not _INTERVAL.match(range):
        raise ValueError(f"range {range!r} is neither an interval like '[0, 1)' nor a set like '{{a, b}}'")
    return field(default=default, metadata={"symbol": symbol, "help": help, "range": range})


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
class MethodConfig:
    """Base of every method's hyperparameters: validated on construction, self-describing.

    Also holds how the method is optimised, since the papers differ there as much as in
    their losses (SGD, LARS or AdamW; how the learning rate scales with the batch; which
    parameters skip weight decay). A method's ``Config`` redeclares the fields whose paper
    values differ.
    """

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
        """Raise ValueError naming the field, its value and the allowed range, for the first bad field."""
        for f in fields(self):
            if "range" in f.metadata:
                check_value(f.name, getattr(self, f.name), f.metadata, kind=getattr(f.type, "__name__", f.type))

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every hyperparameter: name, symbol, help, range and default (for help texts and docs)."""
        return [
            {"name": f.name, "symbol": f.metadata["symbol"], "help": f.metadata["help"],
             "range": f.metadata["range"], "default": f.default if f.default is not MISSING else None}
            for f in fields(cls) if "range" in f.metadata
        ]

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def symbols(cls) -> dict[str, str]:
        """Field name → paper symbol (λ, τ, ...)."""
        return {f.name: f.metadata.get("symbol", f.name) for f in fields(cls)}

    def learning_rate(self, global_batch: int) -> float:
        """The peak learning rate at ``global_batch`` (e.g. SimCLR: 0.3 × batch / 256)."""
        ratio = global_batch / self.reference_batch
        return self.base_lr * {"linear": ratio, "sqrt": ratio ** 0.5, "none": 1.0}[self.lr_scaling]
