"""The method contract (methods/base.py), checked for every registered method with no
per-method code: a new method is covered the moment its registry line exists."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import fields

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn

from method_testing import bitwise_same, step_context, view_batch
from sslab import methods
from sslab.methods.base import DataInfo, Method, StepOutput, state_names
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig
from sslab.methods.blocks.optim import build_optimizer
from sslab.methods.views import View

NAMES = methods.names()
DATA = DataInfo(num_samples=48, num_classes=4, image_size=32)
BATCH = 8


def _build(cls: type[Method], seed: int = 0) -> Method:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. PIRL capping N at the tiny bank's size
        return cls.build(cls.Config(), Backbone("resnet18", width=4), DATA)


def _contract_batch(cls: type[Method], seed: int = 0) -> dict[str, torch.Tensor]:
    return view_batch(cls.views(cls.Config(), DATA.image_size), BATCH, size=DATA.image_size, seed=seed,
                      idx=DATA.num_samples, labels=DATA.num_classes)


def _tensor_attributes(method: Method) -> dict[tuple[str, str], int]:
    """(module name, attribute) → id of every tensor held in a module's ``__dict__`` (directly or in a
    list, tuple or dict there: parameters and buffers included), over all the method's modules."""
    found = {}
    for module_name, module in method.named_modules(remove_duplicate=False):
        for attribute, value in vars(module).items():
            items = value.items() if isinstance(value, dict) else enumerate(value) \
                if isinstance(value, (list, tuple)) else [("", value)]
            for key, item in items:
                if isinstance(item, torch.Tensor):
                    found[(module_name, f"{attribute}[{key}]" if key != "" else attribute)] = id(item)
    return found


def _invalid_values(kind: str, allowed: str) -> list[object]:
    """Values outside a field's declared range ``allowed`` (or of the wrong type for ``kind``)."""
    if kind == "bool":
        return ["yes", 1]
    if allowed.startswith("{"):
        return ["not-a-choice", 3]
    left, low, high, right = re.match(r"^([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])$", allowed).groups()
    out: list[object] = [math.nan, "0.1"]
    if low != "-inf":
        out.append(float(low) if left == "(" else float(low) - 1)
    if high != "inf":
        out.append(float(high) if right == ")" else float(high) + 1)
    if kind == "int":
        out = [int(v) for v in out if isinstance(v, float) and math.isfinite(v)] + [0.5, "1"]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_registry_resolves_to_a_method(name):
    cls = methods.get(name)
    assert issubclass(cls, Method) and cls.name == name
    assert issubclass(cls.Config, MethodConfig)


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_valid_and_every_field_is_declared(name):
    config = methods.get(name).Config()
    config.validate()
    flat = {field: meta for field, _, meta, _ in config.flat_fields()}
    assert set(flat) == set(config.flat())  # every field and optimiser setting is declared
    for f in fields(config):
        if f.name != "optim":
            assert {"symbol", "help", "range"} <= set(f.metadata), f"{name}.{f.name} is not declared with hyperparameter()"
    for field, meta in flat.items():
        assert meta["help"] and meta["symbol"], f"{name}.{field} has no help or symbol"


@pytest.mark.parametrize("name", NAMES)
def test_every_out_of_range_value_is_refused_naming_the_field(name):
    cls = methods.get(name)
    for field, kind, meta, _ in cls.Config.flat_fields():
        for value in _invalid_values(kind, meta["range"]):
            with pytest.raises(ValueError, match=re.escape(field)):
                cls.Config.from_flat({field: value})


@pytest.mark.parametrize("name", NAMES)
def test_views_are_known_from_the_configuration_alone(name, monkeypatch):
    cls = methods.get(name)

    def no_model(*args, **kwargs):
        raise AssertionError("views() must not build the model")

    monkeypatch.setattr(cls, "__init__", no_model)
    for views in (cls.views(cls.Config(), 32), cls.invariance_views(cls.Config(), 32) or []):
        assert all(isinstance(v, View) for v in views)
        keys = [k for v in views for k in v.keys()]
        assert len(keys) == len(set(keys))
    assert cls.views(cls.Config(), 32), f"{name} declares no view"


@pytest.mark.parametrize("name", NAMES)
def test_a_training_step_gives_a_finite_loss_and_a_gradient_on_every_trained_parameter(name):
    cls = methods.get(name)
    method = _build(cls)
    out = method(_contract_batch(cls), step_context())
    assert isinstance(out, StepOutput)
    loss, metrics = out.loss, out.metrics
    assert loss.dim() == 0 and torch.isfinite(loss)
    # metrics stay on the device (read once per epoch): 0-d tensors outside the graph, or floats
    for key, value in metrics.items():
        assert isinstance(value, float) or (torch.is_tensor(value) and value.dim() == 0 and not value.requires_grad), \
            f"{name}: metric {key} = {value!r} must be a detached 0-d tensor (or a float)"
    assert float(metrics["loss"]) == pytest.approx(loss.item())
    # the carry is state for after_step, outside the graph
    assert not [t for t in pytree.tree_leaves(out.carry) if torch.is_tensor(t) and t.requires_grad], \
        f"{name}: the carry holds tensors that require grad"
    loss.backward()
    declared = method.unused_parameters()
    own = {id(p) for p in method.parameters()}
    assert all(isinstance(p, nn.Parameter) and id(p) in own for p in declared), \
        f"{name}: unused_parameters must be parameters of the method"
    unused = set(state_names(method, declared))
    assert unused <= {n for n, _ in method.named_parameters()}
    for pname, p in method.named_parameters():
        if not p.requires_grad:  # frozen state, e.g. a momentum encoder's EMA copy
            assert p.grad is None, f"{name}: {pname} takes no gradient but got one"
        elif pname in unused:
            assert p.grad is None, f"{name}: {pname} is declared unused but got a gradient"
        else:
            assert p.grad is not None, f"{name}: no gradient reached {pname}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient on {pname}"
    grouped = [p for group in method.parameter_groups() for p in group["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == sum(1 for p in method.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", NAMES)
def test_a_state_dict_round_trip_gives_the_same_next_loss(name):
    cls = methods.get(name)
    first = _build(cls, seed=0)
    optimizer = build_optimizer(first.parameter_groups(), first.config.optim, global_batch=BATCH)
    batch = _contract_batch(cls, seed=1)
    out = first(batch, step_context(0))
    optimizer.zero_grad()
    out.loss.backward()
    optimizer.step()
    first.after_step(batch, out, step_context(0))

    second = _build(cls, seed=123)  # other initial weights and state, then the checkpoint
    second.load_state_dict(first.state_dict())
    following = _contract_batch(cls, seed=2)
    torch.manual_seed(7)
    expected = first(following, step_context(1)).loss
    torch.manual_seed(7)
    got = second(following, step_context(1)).loss
    assert got.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_after_step_changes_exactly_the_state_it_declares(name):
    cls = methods.get(name)
    method = _build(cls)
    batch = _contract_batch(cls)
    optimizer = build_optimizer(method.parameter_groups(), method.config.optim, global_batch=BATCH)
    out = method(batch, step_context())
    out.loss.backward()
    optimizer.step()  # as the loop does: an EMA encoder then has online weights to move towards
    before = {k: v.detach().clone() for k, v in method.state_dict().items()}
    method.after_step(batch, out, step_context())
    after = method.state_dict()
    changed = {k for k in before if not bitwise_same(before[k], after[k])}
    declared = {item: set(state_names(method, [item])) for item in method.kept_in_sync()}
    kept = set().union(*declared.values())
    assert changed <= kept, f"{name}: after_step changed {sorted(changed - kept)}, which kept_in_sync does not declare"
    for item, names in declared.items():
        assert names & changed, f"{name}: declared {sorted(names)[:3]} but after_step left it alone"


@pytest.mark.parametrize("name", NAMES)
def test_kept_in_sync_declares_modules_and_buffers_of_the_method(name):
    cls = methods.get(name)
    method = _build(cls)
    modules, buffers = {id(m) for m in method.modules()}, {id(b) for b in method.buffers()}
    for item in method.kept_in_sync():
        if isinstance(item, nn.Module):
            assert id(item) in modules, f"{name}: kept_in_sync names a module that is not the method's"
        else:
            assert isinstance(item, torch.Tensor) and id(item) in buffers, \
                f"{name}: kept_in_sync names a tensor that is not a buffer of the method"


@pytest.mark.parametrize("name", NAMES)
def test_a_training_step_sets_no_tensor_attribute_on_the_method(name):
    """What after_step needs travels in the StepOutput's carry, never on the method: after a step
    every module holds the very tensors it held before (parameters and buffers updated in place)."""
    cls = methods.get(name)
    method = _build(cls)
    before = _tensor_attributes(method)
    method(_contract_batch(cls), step_context()).loss.backward()
    after = _tensor_attributes(method)
    assert after == before, (f"{name}: training_step set {sorted(k for k in after if after[k] != before.get(k))} "
                             "on the method")


@pytest.mark.parametrize("name", NAMES)
def test_a_method_that_reads_no_labels_trains_on_a_batch_without_them(name):
    """Data without labels, and a study that chooses without them, give batches with no ``label``:
    every method that does not declare ``reads_labels`` trains on them; one that does says why not."""
    cls = methods.get(name)
    method = _build(cls)
    batch = _contract_batch(cls)
    batch.pop("label")
    if cls.reads_labels(cls.Config()):
        with pytest.raises(KeyError, match="label"):
            method(batch, step_context())
        return
    out = method(batch, step_context())
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("name", NAMES)
def test_the_embedding_is_the_loss_sides_projection_of_the_representation_or_none(name):
    cls = methods.get(name)
    method = _build(cls).eval()
    representation = torch.randn(BATCH, method.backbone.out_dim)
    with torch.no_grad():
        embedded = method.embedding(representation)
    assert (embedded is None) == (cls.embedding is Method.embedding), \
        f"{name}: embedding returns None exactly when the method does not override it"
    if embedded is not None:
        assert embedded.shape[0] == BATCH and embedded.dim() == 2 and torch.isfinite(embedded).all()
        assert not torch.equal(embedded[0], embedded[1])  # a function of each image's representation
