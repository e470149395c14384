"""Hyperparameter declaration and validation (MethodConfig) and the optimisers built from it.

LARS is checked against its update written out by hand (You et al. 2017, as SimCLR's and
BYOL's LARS apply it), the schedule against warm-up + half a cosine, and build_optimizer
against the learning rate each scaling rule gives.
"""

import math
from dataclasses import dataclass

import pytest
import torch

from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.optim import LARS, build_optimizer, build_schedule, warmup_cosine


# No `from __future__ import annotations` here: the field types below are classes, whereas
# config.py's own fields (declared under that import) are strings; both must validate.
@dataclass
class ToyConfig(MethodConfig):
    num_negatives: int = hyperparameter(4096, "N", "negatives per sample", "[1, inf)")
    temperature: float = hyperparameter(0.07, "τ", "softmax temperature", "(0, inf)")
    mix: float = hyperparameter(0.5, "λ", "weight of the second term", "[0, 1]")
    loss: str = hyperparameter("nce", "loss", "which loss", "{nce, infonce}")
    symmetric: bool = hyperparameter(True, "symmetric", "use both directions", "{true, false}")


# --- MethodConfig ----------------------------------------------------------------------------


def test_defaults_and_good_values_are_accepted():
    config = ToyConfig()
    assert (config.num_negatives, config.temperature, config.loss, config.symmetric) == (4096, 0.07, "nce", True)
    ToyConfig(num_negatives=1, temperature=1, mix=0.0, loss="infonce", symmetric=False)  # int for a float: fine
    ToyConfig(mix=1.0)  # closed interval: both ends allowed


@pytest.mark.parametrize("field,value,label", [
    ("num_negatives", 0, "num_negatives (N)"),         # below [1, inf)
    ("num_negatives", 2.5, "num_negatives (N)"),       # not an integer
    ("num_negatives", True, "num_negatives (N)"),      # a bool is not an integer here
    ("num_negatives", "10", "num_negatives (N)"),
    ("temperature", 0.0, "temperature (τ)"),           # open end of (0, inf)
    ("temperature", -1.0, "temperature (τ)"),
    ("temperature", math.inf, "temperature (τ)"),
    ("temperature", math.nan, "temperature (τ)"),
    ("temperature", "0.1", "temperature (τ)"),
    ("mix", 1.0001, "mix (λ)"),
    ("mix", -1e-9, "mix (λ)"),
    ("mix", math.nan, "mix (λ)"),
    ("loss", "mse", "loss"),                           # symbol = name: named once
    ("loss", 1, "loss"),
    ("symmetric", 1, "symmetric"),
    ("symmetric", "true", "symmetric"),
    ("optimizer", "adam", "optimizer"),                # inherited fields, declared as strings
    ("momentum", 1.0, "momentum"),
    ("reference_batch", 2.5, "reference_batch"),
    ("weight_decay", math.nan, "weight_decay (wd)"),
    ("base_lr", 0.0, "base_lr (lr)"),
])
def test_bad_values_are_refused_naming_field_and_symbol(field, value, label):
    with pytest.raises(ValueError) as error:
        ToyConfig.from_flat({field: value})
    message = str(error.value)
    assert message.startswith(f"{label} = {value!r}"), message


def test_messages_state_the_allowed_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ToyConfig(mix=2.0)
    with pytest.raises(ValueError, match=r"\{nce, infonce\}"):
        ToyConfig(loss="mse")
    with pytest.raises(ValueError, match="true or false"):
        ToyConfig(symmetric=0)


def test_validate_catches_a_value_changed_after_construction():
    config = ToyConfig()
    config.temperature = -0.5
    with pytest.raises(ValueError, match="temperature"):
        config.validate()


def test_a_range_that_is_neither_interval_nor_set_is_refused_at_declaration():
    with pytest.raises(ValueError, match="neither an interval"):
        hyperparameter(1.0, "x", "help", "0 to 1")


@dataclass
class LarsToyConfig(ToyConfig):
    optim: Optimiser = optimiser(optimizer="lars", base_lr=0.3, momentum=0.8, notes={"base_lr": "official: 0.3"},
                                 symbols={"momentum": "β₁"})


def test_the_optimiser_is_a_nested_config_read_and_written_by_flat_names():
    config = LarsToyConfig.from_flat({"temperature": 0.2, "weight_decay": 1e-6})
    assert isinstance(config.optim, Optimiser) and config.temperature == 0.2
    assert (config.optim.optimizer, config.optim.base_lr, config.optim.weight_decay) == ("lars", 0.3, 1e-6)
    flat = config.flat()
    assert list(flat)[:8] == ["optimizer", "base_lr", "lr_scaling", "reference_batch", "momentum", "weight_decay",
                              "exclude_norm_and_bias", "warmup_epochs"]  # where `optim` stands: first
    assert flat["momentum"] == 0.8 and flat["temperature"] == 0.2 and "optim" not in flat
    assert LarsToyConfig.from_flat(flat) == config
    assert LarsToyConfig.from_flat(optim={"base_lr": 0.5}).optim == Optimiser(optimizer="lars", base_lr=0.5,
                                                                                momentum=0.8)
    assert ToyConfig().optim == Optimiser()  # a method that declares no optimiser has the default one


def test_a_methods_optimiser_defaults_notes_and_symbols_describe_it():
    rows = {row["name"]: row for row in LarsToyConfig.describe()}
    assert rows["optimizer"]["default"] == "lars" and rows["base_lr"]["help"] == "official: 0.3"
    assert rows["momentum"]["symbol"] == "β₁" and LarsToyConfig.symbols()["momentum"] == "β₁"
    assert rows["weight_decay"]["help"] == ToyConfig.describe()[5]["help"]  # not noted: the shared help


def test_unknown_names_and_bad_paper_values_are_refused():
    with pytest.raises(ValueError, match=r"no hyperparameter\(s\) \['tau'\].*'temperature'"):
        ToyConfig.from_flat(tau=0.1)
    with pytest.raises(ValueError, match=r"optimiser settings \['lr'\] do not exist"):
        optimiser(lr=0.1)
    with pytest.raises(ValueError, match=r"base_lr \(lr\) = -1"):
        optimiser(base_lr=-1)
    config = ToyConfig()
    config.optim.base_lr = 0.0  # changed after construction
    with pytest.raises(ValueError, match=r"base_lr \(lr\) = 0.0"):
        config.validate()


def test_every_methods_config_reads_back_from_its_flat_record():
    from sslab import methods
    for name in methods.names():
        cls = methods.get(name)
        for settings in [{}, *cls.profile_defaults.values()]:
            config = cls.Config.from_flat(settings)
            assert cls.Config.from_flat(config.flat()) == config, (name, settings)
            assert set(config.flat()) == cls.Config.field_names() == {row["name"] for row in cls.Config.describe()}


def test_describe_lists_every_hyperparameter_with_symbol_help_range_default():
    rows = {row["name"]: row for row in ToyConfig.describe()}
    assert set(rows) == {"optimizer", "base_lr", "lr_scaling", "reference_batch", "momentum", "weight_decay",
                         "exclude_norm_and_bias", "warmup_epochs",
                         "num_negatives", "temperature", "mix", "loss", "symmetric"}
    assert rows["temperature"] == {"name": "temperature", "symbol": "τ", "help": "softmax temperature",
                                   "range": "(0, inf)", "default": 0.07}
    assert rows["symmetric"]["default"] is True and rows["loss"]["range"] == "{nce, infonce}"
    assert [row["name"] for row in ToyConfig.describe()][-5:] == ["num_negatives", "temperature", "mix", "loss",
                                                                  "symmetric"]
    assert ToyConfig.symbols()["mix"] == "λ" and "temperature" in ToyConfig.field_names()


@pytest.mark.parametrize("scaling,expected", [("linear", 0.3 * 4), ("sqrt", 0.3 * 2), ("none", 0.3)])
def test_learning_rate_scales_with_the_global_batch(scaling, expected):
    config = Optimiser(base_lr=0.3, reference_batch=256, lr_scaling=scaling)
    assert config.learning_rate(1024) == pytest.approx(expected, rel=1e-12)
    assert config.learning_rate(256) == pytest.approx(0.3, rel=1e-12)


# --- LARS --------------------------------------------------------------------------------------


def lars_reference(w, grads, lr, momentum, weight_decay, eta, adapt=True):
    """You et al. 2017 as SimCLR/BYOL use it, one step per gradient, written out:

        d = g + wd·w;  trust = η‖w‖/‖d‖ (1 when either norm is 0, or when not adapted);
        v = momentum·v + trust·d  (v₀ = trust·d);  w = w − lr·v.
    """
    w, velocity = w.clone(), None
    for g in grads:
        d = g + weight_decay * w
        w_norm, d_norm = w.norm().item(), d.norm().item()
        trust = eta * w_norm / d_norm if adapt and w_norm > 0 and d_norm > 0 else 1.0
        velocity = trust * d if velocity is None else momentum * velocity + trust * d
        w = w - lr * velocity
    return w


def run_lars(w0, grads, **group):
    """LARS over one parameter (its own group with ``group``'s options) for len(grads) steps."""
    p = torch.nn.Parameter(w0.clone())
    lr, momentum, wd, eta = group.pop("lr"), group.pop("momentum"), group.pop("weight_decay"), group.pop("eta")
    optimizer = LARS([{"params": [p], **group}], lr=lr, momentum=momentum, weight_decay=wd, eta=eta)
    for g in grads:
        p.grad = g.clone()
        optimizer.step()
    return p.detach()


def _gradient_steps(shape=(3, 4), steps=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(steps)]


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_lars_matches_the_closed_form_with_trust_ratio_and_momentum(wd):
    w0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = _gradient_steps()
    options = {"lr": 0.5, "momentum": 0.9, "weight_decay": wd, "eta": 0.02}
    got = run_lars(w0, grads, **options)
    torch.testing.assert_close(got, lars_reference(w0, grads, **options))
    # and it differs from plain SGD: the trust ratio matters
    assert not torch.allclose(got, lars_reference(w0, grads, **options, adapt=False))


def test_lars_first_step_by_hand():
    w = torch.tensor([3.0, 4.0], dtype=torch.float64)  # ‖w‖ = 5
    g = torch.tensor([0.0, 1.0], dtype=torch.float64)
    # d = g + 0.1·w = (0.3, 1.4); ‖d‖ = √(0.09 + 1.96); trust = 0.01·5/‖d‖; w − lr·trust·d
    d = torch.tensor([0.3, 1.4], dtype=torch.float64)
    expected = w - 2.0 * (0.01 * 5 / math.sqrt(2.05)) * d
    got = run_lars(w, [g], lr=2.0, momentum=0.9, weight_decay=0.1, eta=0.01)
    torch.testing.assert_close(got, expected)


def test_lars_exclude_group_takes_the_plain_sgd_step():
    w0 = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = _gradient_steps(shape=(5,))
    options = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "eta": 0.001}
    got = run_lars(w0, grads, **options, lars_exclude=True)
    torch.testing.assert_close(got, lars_reference(w0, grads, **options, adapt=False))
    # which is torch's SGD with momentum and weight decay
    p = torch.nn.Parameter(w0.clone())
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-3)
    for g in grads:
        p.grad = g.clone()
        sgd.step()
    torch.testing.assert_close(got, p.detach())


def test_lars_zero_norm_parameter_takes_trust_one():
    w0 = torch.zeros(4, dtype=torch.float64)  # e.g. a bias initialised at 0
    g = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    got = run_lars(w0, [g], lr=0.1, momentum=0.9, weight_decay=0.5, eta=0.001)
    torch.testing.assert_close(got, -0.1 * g)  # trust 1, and wd·w = 0


def test_lars_zero_gradient_leaves_the_parameter_finite_and_unmoved():
    w0 = torch.ones(3, dtype=torch.float64)
    got = run_lars(w0, [torch.zeros(3, dtype=torch.float64)], lr=0.1, momentum=0.9, weight_decay=0.0, eta=0.001)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, w0)


def test_lars_skips_parameters_without_gradient():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = LARS([a, b], lr=0.1)
    a.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(b.detach(), torch.ones(2)) and not torch.equal(a.detach(), torch.ones(2))
    assert b not in optimizer.state


# --- schedule ----------------------------------------------------------------------------------


def warmup_cosine_reference(step, total, warmup):
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_warmup_cosine_values():
    total, warmup = 12, 4
    for step in range(total):
        assert warmup_cosine(step, total, warmup) == pytest.approx(warmup_cosine_reference(step, total, warmup))
    assert warmup_cosine(warmup - 1, total, warmup) == 1.0 and warmup_cosine(warmup, total, warmup) == 1.0
    assert warmup_cosine(total, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(total + 5, total, warmup) == pytest.approx(0.0, abs=1e-12)  # stays at 0
    assert warmup_cosine(0, 10, 0) == 1.0  # no warm-up: the cosine starts at the peak


def test_build_schedule_leaves_fixed_lr_groups_alone():
    followed, fixed = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [followed]}, {"params": [fixed], "fixed_lr": True}], lr=0.4)
    total, warmup = 10, 2
    schedule = build_schedule(optimizer, total, warmup)
    for step in range(total):
        lr_followed, lr_fixed = (group["lr"] for group in optimizer.param_groups)
        assert lr_followed == pytest.approx(0.4 * warmup_cosine_reference(step, total, warmup), rel=1e-12), step
        assert lr_fixed == 0.4
        optimizer.step()
        schedule.step()


# --- build_optimizer -----------------------------------------------------------------------------


def _groups():
    weights, norms = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.ones(4))
    return [{"params": [weights], "name": "weights"},
            {"params": [norms], "weight_decay": 0.0, "lars_exclude": True}]


@pytest.mark.parametrize("name,kind", [("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)])
def test_build_optimizer_at_the_scaled_lr(name, kind):
    config = Optimiser(optimizer=name, base_lr=0.1, reference_batch=256, lr_scaling="linear",
                       momentum=0.8, weight_decay=1e-4)
    optimizer = build_optimizer(_groups(), config, global_batch=1024)
    assert type(optimizer) is kind
    weights, norms = optimizer.param_groups
    assert weights["lr"] == norms["lr"] == pytest.approx(0.4, rel=1e-12)
    assert (weights["name"], norms["name"]) == ("weights", "group1")
    assert weights["weight_decay"] == 1e-4 and norms["weight_decay"] == 0.0  # the group's own value wins
    if name == "adamw":
        assert weights["betas"] == (0.8, 0.999)
    else:
        assert weights["momentum"] == 0.8
    if name == "lars":
        assert norms["lars_exclude"] and not weights["lars_exclude"]
    for group in optimizer.param_groups:  # one step runs for every family
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    optimizer.step()


def test_build_optimizer_lars_honours_lars_exclude():
    config = Optimiser(optimizer="lars", base_lr=0.1, reference_batch=256, momentum=0.9, weight_decay=1e-4)
    groups = _groups()
    norms_before = groups[1]["params"][0].detach().clone()
    optimizer = build_optimizer(groups, config, global_batch=256)
    grad = torch.full((4,), 0.5)
    groups[1]["params"][0].grad = grad.clone()
    optimizer.step()
    torch.testing.assert_close(groups[1]["params"][0].detach(), norms_before - 0.1 * grad)  # plain SGD, wd 0


def test_build_optimizer_refuses_an_unknown_family():
    config = Optimiser()
    config.optimizer = "adam"  # bypassing validation
    with pytest.raises(ValueError, match="adam"):
        build_optimizer(_groups(), config, global_batch=256)
