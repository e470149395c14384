"""Every loss function of ``sslab.methods.losses`` passes ``torch.autograd.gradcheck`` (float64,
small shapes).

The functions are found by listing the public functions of the package's modules, so a new loss
is checked as soon as it exists: its case here fails until ``EXAMPLES`` gives it inputs. An
example builds every argument and names the tensor arguments the loss is differentiable in
(``differentiable``); the others are constants of the check (labels, weights, stop-gradient
targets). A loss differentiable in none of its arguments declares ``differentiable=()``, and is
checked to return a tensor outside the graph. A loss that returns ``(loss, extras)`` is checked
on the loss.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import sslab.methods.losses as losses_package


def _public_functions() -> dict[str, Callable]:
    """Every public function defined in a module of the losses package, by name."""
    found = {}
    for info in pkgutil.iter_modules(losses_package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{losses_package.__name__}.{info.name}")
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ == module.__name__ and not name.startswith("_"):
                found[name] = function
    return found


LOSSES = _public_functions()


@dataclass(frozen=True)
class Example:
    """The arguments of one call (``make(generator)`` → keyword arguments) and the names of the
    tensor arguments the loss is differentiable in."""

    make: Callable[[torch.Generator], dict[str, Any]]
    differentiable: tuple[str, ...]


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _unit(g: torch.Generator, *shape: int) -> torch.Tensor:
    return F.normalize(_randn(g, *shape), dim=-1)


def _sims(g: torch.Generator, batch: int = 3, negatives: int = 4) -> dict[str, torch.Tensor]:
    """Cosine similarities: pos (B,), neg (B, N) in [-1, 1]."""
    return {"pos_sim": torch.rand(batch, generator=g, dtype=torch.float64) * 2 - 1,
            "neg_sim": torch.rand(batch, negatives, generator=g, dtype=torch.float64) * 2 - 1}


def _symmetric_correlation(g: torch.Generator, d: int) -> torch.Tensor:
    """A symmetric D x D matrix, as UniGrad's F (the loss's value has the surrogate's gradient only then)."""
    z = _unit(g, 6, d)
    return z.T @ z / 6


def _soft_targets(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.softmax(_randn(g, *shape), dim=1)


#: the inputs of every loss of the package (a list: several calls of one loss, e.g. both forms)
EXAMPLES: dict[str, list[Example]] = {
    # --- contrastive
    "estimate_log_z": [Example(lambda g: {**_sims(g), "temperature": 0.2, "data_size": 100}, differentiable=())],
    "nce_loss": [Example(lambda g: {**_sims(g), "temperature": 0.2, "data_size": 100,
                                    "log_z": torch.tensor(1.5, dtype=torch.float64)},
                         differentiable=("pos_sim", "neg_sim", "log_z"))],
    "info_nce_loss": [Example(lambda g: {**_sims(g), "temperature": 0.2}, differentiable=("pos_sim", "neg_sim"))],
    "nt_xent_loss": [Example(lambda g: {"z1": _randn(g, 4, 3), "z2": _randn(g, 4, 3), "temperature": 0.3},
                             differentiable=("z1", "z2"))],
    # the momentum branch's embeddings are gathered without gradient
    "momentum_nt_xent_loss": [Example(lambda g: {"z1": _randn(g, 4, 3), "z2": _randn(g, 4, 3), "z1m": _randn(g, 4, 3),
                                                 "z2m": _randn(g, 4, 3), "temperature": 0.3},
                                      differentiable=("z1", "z2"))],
    "supcon_loss": [Example(lambda g, form=form: {"features": _unit(g, 4, 2, 3),
                                                  "labels": torch.tensor([0, 1, 0, 2]), "temperature": 0.5,
                                                  "base_temperature": 0.07, "form": form},
                            differentiable=("features",)) for form in ("out", "in")],
    # every hinge active (M far above the squared distances), so the loss is smooth at the inputs
    "counting_loss": [Example(lambda g: {"down_counts": _randn(g, 3, 5, scale=0.3),
                                         "tile_counts": _randn(g, 3, 4, 5, scale=0.3), "margin": 10.0},
                              differentiable=("down_counts", "tile_counts"))],
    # --- siamese (the targets take a stop-gradient)
    "byol_loss": [Example(lambda g: {"p": _randn(g, 5, 3), "z": _randn(g, 5, 3)}, differentiable=("p",))],
    "simsiam_loss": [Example(lambda g: {"p1": _randn(g, 5, 3), "p2": _randn(g, 5, 3), "z1": _randn(g, 5, 3),
                                        "z2": _randn(g, 5, 3)}, differentiable=("p1", "p2"))],
    "unigrad_loss": [Example(lambda g: {"z1": _unit(g, 4, 3), "z2": _unit(g, 4, 3), "z1m": _unit(g, 4, 3),
                                        "z2m": _unit(g, 4, 3), "correlation": _symmetric_correlation(g, 3),
                                        "lambd": 10.0},
                             differentiable=("z1", "z2"))],
    "off_diagonal": [Example(lambda g: {"m": _randn(g, 4, 4)}, differentiable=("m",))],
    "cross_correlation": [Example(lambda g: {"z1": _randn(g, 6, 3), "z2": _randn(g, 6, 3)},
                                  differentiable=("z1", "z2"))],
    "barlow_twins_loss": [Example(lambda g: {"z1": _randn(g, 6, 3), "z2": _randn(g, 6, 3), "lambd": 0.1},
                                  differentiable=("z1", "z2"))],
    # standard deviations around 0.3: every variance hinge active
    "variance_term": [Example(lambda g: {"z": _randn(g, 6, 3, scale=0.3)}, differentiable=("z",))],
    "covariance_term": [Example(lambda g: {"z": _randn(g, 6, 3)}, differentiable=("z",))],
    "vicreg_loss": [Example(lambda g: {"z1": _randn(g, 6, 3, scale=0.3), "z2": _randn(g, 6, 3, scale=0.3),
                                       "invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 1.0},
                            differentiable=("z1", "z2"))],
    # --- classification
    "classification": [Example(lambda g: {"logits": _randn(g, 5, 3), "labels": torch.tensor([0, 2, 1, 1, 0])},
                               differentiable=("logits",))],
    "surrogate_loss": [Example(lambda g: {"logits": _randn(g, 5, 4), "classes": torch.tensor([0, -1, 3, 2, -1]),
                                          "seed_fraction": 0.6}, differentiable=("logits",))],
    "soft_cross_entropy": [Example(lambda g: {"logits": _randn(g, 2, 4, 2, 2), "target": _soft_targets(g, 2, 4, 2, 2),
                                              "weights": torch.rand(2, 2, 2, generator=g, dtype=torch.float64)},
                                   differentiable=("logits", "target", "weights"))],
    # --- reconstruction
    "reconstruction_loss": [
        Example(lambda g: {"prediction": _randn(g, 2, 3, 4, 4), "target": _randn(g, 2, 3, 4, 4)},
                differentiable=("prediction", "target")),
        Example(lambda g: {"prediction": _randn(g, 2, 3, 4, 4), "target": _randn(g, 2, 3, 4, 4),
                           "mask": (torch.rand(2, 1, 4, 4, generator=g) > 0.5).to(torch.float64)},
                differentiable=("prediction", "target")),
    ],
    "weighted_mse": [Example(lambda g: {"prediction": _randn(g, 2, 3, 4, 4), "target": _randn(g, 2, 3, 4, 4),
                                        "weights": torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64) + 1},
                             differentiable=("prediction", "target", "weights"))],
    "generator_adversarial_loss": [Example(lambda g: {"logits_fake": _randn(g, 4, 1)}, differentiable=("logits_fake",))],
    "discriminator_loss": [Example(lambda g: {"logits_real": _randn(g, 4, 1), "logits_fake": _randn(g, 4, 1)},
                                   differentiable=("logits_real", "logits_fake"))],
}


def _loss_of(output: Any) -> torch.Tensor:
    """The loss itself, from a loss or a (loss, extras) tuple."""
    return output[0] if isinstance(output, tuple) else output


def test_the_package_exports_every_loss_it_defines():
    assert set(LOSSES) == set(losses_package.__all__), "losses/__init__.py must export every loss function"
    assert all(getattr(losses_package, name) is function for name, function in LOSSES.items())


def test_every_example_names_a_loss_of_the_package():
    assert set(EXAMPLES) <= set(LOSSES), f"examples of no loss: {sorted(set(EXAMPLES) - set(LOSSES))}"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_loss_passes_gradcheck_in_every_argument_it_is_differentiable_in(name):
    assert name in EXAMPLES, (f"{name} has no gradcheck example: add its float64 inputs to EXAMPLES in "
                              f"{__file__} (differentiable=() if it is differentiable in none)")
    function = LOSSES[name]
    parameters = inspect.signature(function).parameters
    for index, example in enumerate(EXAMPLES[name]):
        kwargs = example.make(torch.Generator().manual_seed(index))
        assert set(kwargs) <= set(parameters) and set(example.differentiable) <= set(kwargs), name
        inputs = tuple(kwargs[k].detach().clone().requires_grad_(True) for k in example.differentiable)
        assert all(t.dtype == torch.float64 for t in inputs), f"{name}: gradcheck needs float64 inputs"

        def call(*differentiable: torch.Tensor) -> torch.Tensor:
            return _loss_of(function(**{**kwargs, **dict(zip(example.differentiable, differentiable))}))

        if not inputs:  # declared differentiable in nothing: nothing of the graph may come out
            probes = {k: v.detach().clone().requires_grad_(True) for k, v in kwargs.items()
                      if torch.is_tensor(v) and v.is_floating_point()}
            assert not _loss_of(function(**{**kwargs, **probes})).requires_grad, name
            continue
        assert torch.autograd.gradcheck(call, inputs), f"{name}, example {index}"
