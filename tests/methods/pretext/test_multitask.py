"""Multitask: the Prefixed view, the weighted loss and the trunk's gradient against the tasks
trained separately, delegated state, checkpoints and configuration.

The tasks here are finished methods with state (NPID's memory bank, SimCLR's momentum encoder),
so the composition is tested apart from the pretext methods it usually combines.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from method_testing import bitwise_same, step_context, view_batch
from sslab import methods
from sslab.methods.base import DataInfo, state_names
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.optim import build_optimizer
from sslab.methods.pretext.multitask import Multitask, MultitaskConfig
from sslab.methods.views import CIFAR10, Augmented, ImageView, JigsawView, apply_views
from sslab.methods.views.prefixed import Prefixed

DATA = DataInfo(num_samples=32, num_classes=4, image_size=16)
BATCH = 8
# SimCLR with a momentum encoder and NPID++: both have state that after_step moves
TASKS = {"tasks": ("simclr", "npid"), "task_weights": (0.5, 2.0),
         "task_settings": {"simclr": {"encoder_momentum": 0.9}, "npid": {"embedding_dim": 16}}}


def _backbone() -> Backbone:
    return Backbone("resnet10", cifar_stem=True, width=4)


def _build(cls=Multitask, config=None, seed: int = 0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NPID capping N at the tiny bank's size
        return cls.build(config if config is not None else MultitaskConfig.from_flat(TASKS), _backbone(), DATA)


def _separately(multi: Multitask) -> dict[str, torch.nn.Module]:
    """Each task built on its own backbone from the registry, with the multitask's initial weights."""
    out = {}
    for task, config in multi.config.task_configs().items():
        method = _build(methods.get(task), config, seed=99)
        method.load_state_dict(multi.tasks[task].state_dict())
        out[task] = method
    return out


# --- the Prefixed view -------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_prefixed_view_gives_the_wrapped_views_arrays_under_prefixed_keys(train):
    images = np.random.default_rng(0).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    for view in (ImageView(size=16, copies=2), JigsawView.for_image_size(24), Augmented(ImageView(name="t", size=16))):
        prefixed = Prefixed(view, "task.")
        assert prefixed.name == "task." + view.name
        assert prefixed.keys() == tuple("task." + k for k in view.keys())
        plain = apply_views([view], images, np.random.default_rng(3), train, stats=CIFAR10)
        wrapped = apply_views([prefixed], images, np.random.default_rng(3), train, stats=CIFAR10)
        assert list(wrapped) == ["task." + k for k in plain]
        for key, value in plain.items():
            assert wrapped["task." + key].dtype == value.dtype
            np.testing.assert_array_equal(wrapped["task." + key], value)
        empty = prefixed.empty(0)
        assert {k: (v.dtype, v.shape) for k, v in empty.items()} == {
            "task." + k: (v.dtype, v.shape) for k, v in view.empty(0).items()}


def test_prefixed_view_refuses_a_non_view_and_an_empty_prefix():
    with pytest.raises(ValueError, match="view"):
        Prefixed("image", "task.")
    with pytest.raises(ValueError, match="prefix"):
        Prefixed(ImageView(), "")


def test_two_tasks_with_the_same_keys_do_not_collide():
    config = MultitaskConfig(tasks="simclr,byol")  # both produce view_0 and view_1
    keys = [k for v in Multitask.views(config, 16) for k in v.keys()]
    assert keys == ["simclr.view_0", "simclr.view_1", "byol.view_0", "byol.view_1"]


# --- loss and gradients ------------------------------------------------------------------------
def test_the_loss_is_the_weighted_sum_and_the_trunk_gradient_the_weighted_sum_of_gradients():
    multi = _build()
    alone = _separately(multi)
    batch = view_batch(Multitask.views(multi.config, 16), BATCH, size=16, idx=DATA.num_samples,
                       labels=DATA.num_classes)
    torch.manual_seed(7)  # NPID draws its negatives: same draws in the same task order
    out = multi(batch, step_context())
    loss, metrics = out.loss, out.metrics
    loss.backward()
    torch.manual_seed(7)
    losses = {}
    for task, method in alone.items():
        losses[task] = method.training_step(multi.task_batch(task, batch), step_context()).loss
        losses[task].backward()
    weights = {"simclr": 0.5, "npid": 2.0}
    assert loss.item() == pytest.approx(sum(weights[t] * losses[t].item() for t in alone), rel=1e-6)
    assert metrics["loss"].item() == pytest.approx(loss.item())
    for task in alone:
        assert metrics[f"{task}.loss"].item() == pytest.approx(losses[task].item(), rel=1e-6)
    # the shared trunk: Σ_k w_k ∂L_k/∂θ; each head: w_k ∂L_k/∂θ_head
    for name, p in multi.backbone.named_parameters():
        expected = sum(weights[t] * dict(alone[t].backbone.named_parameters())[name].grad for t in alone)
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-6)
    for task, method in alone.items():
        own = dict(multi.tasks[task].named_parameters())
        for name, p in method.named_parameters():
            if not name.startswith("backbone.") and p.grad is not None:
                torch.testing.assert_close(own[name].grad, weights[task] * p.grad, rtol=1e-4, atol=1e-7)


def test_each_task_gets_its_own_keys_unprefixed_and_the_shared_ones():
    multi = _build()
    batch = view_batch(Multitask.views(multi.config, 16), BATCH, size=16, idx=DATA.num_samples,
                       labels=DATA.num_classes)
    assert sorted(multi.task_batch("simclr", batch)) == ["idx", "label", "view_0", "view_1"]
    assert sorted(multi.task_batch("npid", batch)) == ["idx", "image", "label"]
    assert multi.task_batch("npid", batch)["image"] is batch["npid.image"]


# --- the shared backbone, state and checkpoints ------------------------------------------------
def test_the_backbone_is_one_module_whose_parameters_are_listed_and_saved_once():
    multi = _build()
    assert all(method.backbone is multi.backbone for method in multi.tasks.values())
    names = [n for n, _ in multi.named_parameters()]
    assert len({id(p) for p in multi.parameters()}) == len(names)
    assert not [n for n in names if ".backbone." in n]
    state = multi.state_dict()
    assert not [k for k in state if ".backbone." in k]
    assert set(multi.backbone.state_dict()) == {k[len("backbone."):] for k in state if k.startswith("backbone.")}
    grouped = [p for group in multi.parameter_groups() for p in group["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == sum(p.requires_grad for p in multi.parameters())


def test_after_step_reaches_every_task():
    multi = _build()
    batch = view_batch(Multitask.views(multi.config, 16), BATCH, size=16, idx=DATA.num_samples,
                       labels=DATA.num_classes)
    optimizer = build_optimizer(multi.parameter_groups(), multi.config.optim, global_batch=BATCH)
    out = multi(batch, step_context())
    out.loss.backward()
    optimizer.step()
    bank = multi.tasks["npid"].memory_bank.bank.clone()
    ema = [p.clone() for p in multi.tasks["simclr"].target.ema.parameters()]
    multi.after_step(batch, out, step_context())
    moved = (multi.tasks["npid"].memory_bank.bank != bank).any(dim=1)
    assert moved[batch["idx"]].all() and moved.sum() == BATCH  # the batch's rows, and only those
    assert any(not torch.equal(a, b) for a, b in zip(ema, multi.tasks["simclr"].target.ema.parameters()))
    assert multi.kept_in_sync() == [multi.tasks["simclr"].target, multi.tasks["npid"].memory_bank]


def _train(multi: Multitask, optimizer, seeds) -> list[torch.Tensor]:
    losses = []
    for step, seed in enumerate(seeds):
        batch = view_batch(Multitask.views(multi.config, 16), BATCH, size=16, seed=seed, idx=DATA.num_samples,
                           labels=DATA.num_classes)
        torch.manual_seed(100 + seed)
        out = multi(batch, step_context(step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        multi.after_step(batch, out, step_context(step))
        losses.append(out.loss.detach())
    return losses


def test_a_resumed_run_takes_the_uninterrupted_runs_next_step_bit_for_bit():
    first = _build()
    optimizer = build_optimizer(first.parameter_groups(), first.config.optim, global_batch=BATCH)
    _train(first, optimizer, [1, 2])
    saved = {k: v.clone() for k, v in first.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # not the live momentum buffers

    second = _build(seed=123)  # other initial weights, bank and EMA, then the checkpoint
    second.load_state_dict(saved)  # strict: the backbone's other names are restored from backbone.
    second_optimizer = build_optimizer(second.parameter_groups(), second.config.optim, global_batch=BATCH)
    second_optimizer.load_state_dict(saved_optimizer)

    expected = _train(first, optimizer, [3])
    got = _train(second, second_optimizer, [3])
    assert torch.equal(got[0], expected[0])
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert bitwise_same(a, b), name


def test_a_state_dict_naming_the_backbone_under_every_path_loads_too():
    first, second = _build(), _build(seed=5)
    full = {**first.state_dict(), **{f"tasks.{t}.{k}": v for t, m in first.tasks.items()
                                     for k, v in m.state_dict().items()}}
    second.load_state_dict(full)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert bitwise_same(a, b)


def test_before_training_replays_the_one_image_stream_to_every_task_that_reads_it():
    # PIRL and NPID both fill their bank from the untrained features and fail unless they get every image
    config = MultitaskConfig(tasks=("pirl", "npid"), task_settings=(
        {"pirl": {"bank_init": "features", "embedding_dim": 8}, "npid": {"bank_init": "features"}}))
    multi = _build(config=config)
    alone = _separately(multi)
    g = torch.Generator().manual_seed(0)
    images = [{"image": torch.randn(8, 3, 16, 16, generator=g), "idx": torch.arange(i, i + 8)}
              for i in range(0, DATA.num_samples, 8)]
    multi.before_training(iter(images))  # a one-shot stream, as the platform passes it
    for task, method in alone.items():
        method.before_training(iter(images))
        torch.testing.assert_close(multi.tasks[task].memory_bank.bank, method.memory_bank.bank)


# --- delegated declarations ------------------------------------------------------------------------
def test_unused_parameters_and_parameter_groups_come_from_the_tasks():
    multi = _build(config=MultitaskConfig.from_flat(tasks=("simclr", "npid"), exclude_norm_and_bias=True))
    unused = set(state_names(multi, multi.unused_parameters()))  # NPID's jigsaw heads (λ = 0), not the backbone
    npid = multi.tasks["npid"]
    assert unused == {f"tasks.npid.{n}" for n in state_names(npid, npid.unused_parameters())} and unused
    groups = {g["name"]: g for g in multi.parameter_groups()}
    assert set(groups) == {"simclr.weights", "simclr.norm_and_bias", "npid.weights", "npid.norm_and_bias"}
    assert groups["npid.norm_and_bias"]["weight_decay"] == 0.0 and groups["npid.norm_and_bias"]["lars_exclude"]
    backbone = {id(p) for p in multi.backbone.parameters()}
    assert backbone <= {id(p) for g in ("simclr.weights", "simclr.norm_and_bias") for p in groups[g]["params"]}
    assert not backbone & {id(p) for g in ("npid.weights", "npid.norm_and_bias") for p in groups[g]["params"]}


def test_invariance_is_the_first_task_that_has_a_pair():
    config = MultitaskConfig.from_flat(TASKS)
    views = Multitask.invariance_views(config, DATA.image_size)
    assert [k for v in views for k in v.keys()] == ["simclr.clean", "simclr.transformed"]
    multi = _build()
    multi.eval()
    batch = view_batch(views, BATCH, size=16, train=False)
    alone = _separately(multi)["simclr"].eval()
    expected = alone.invariance_pair({"clean": batch["simclr.clean"], "transformed": batch["simclr.transformed"]})
    for a, b in zip(multi.invariance_pair(batch), expected):
        torch.testing.assert_close(a, b)


# --- configuration ---------------------------------------------------------------------------------
def test_the_default_tasks_are_registered_methods():
    config = MultitaskConfig()
    assert set(config.task_names()) <= set(methods.names()) and config.weights() == [1.0] * len(config.task_names())


def test_an_unknown_task_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'rotaton'.*known methods: .*simclr"):
        MultitaskConfig(tasks="simclr,rotaton")


@pytest.mark.parametrize("settings, match", [
    ({"task_weights": (1, 2, 3)}, r"task_weights \(w\) = \(1.0, 2.0, 3.0\) has 3 weight\(s\) but tasks = "
                                  r"\('simclr', 'npid'\) names 2"),
    ({"task_weights": (1, 0)}, r"every weight must be a finite number > 0"),
    ({"task_weights": "1,x"}, r"task_weights \(w\) = '1,x' must be numbers"),
    ({"task_weights": 2.0}, r"task_weights \(w\) = 2.0 must be numbers \(a list, or a comma-separated string\)"),
    ({"tasks": ()}, r"tasks is empty"),
    ({"tasks": "simclr,simclr"}, r"names a task twice"),
    ({"tasks": "simclr,multitask"}, r"multitask cannot be one of its own tasks"),
    ({"task_settings": "{npid: 1}"}, r"task_settings = .* is not valid JSON"),
    ({"task_settings": {"npid": 1}}, r"task_settings = .* must map each task to its settings"),
    ({"task_settings": {"byol": {}}}, r"task_settings names 'byol', which is not among tasks"),
    ({"task_settings": {"npid": {"tau": 0.1}}}, r"task_settings: npid has no hyperparameter\(s\) \['tau'\]"),
    ({"task_settings": {"npid": {"base_lr": 0.1}}}, r"npid.base_lr is an optimiser setting; .* set base_lr on"),
    ({"task_settings": {"npid": {"temperature": -1}}}, r"task_settings: task 'npid': temperature"),
])
def test_bad_tasks_weights_and_settings_are_refused_naming_the_field(settings, match):
    with pytest.raises(ValueError, match=match):
        MultitaskConfig.from_flat({"tasks": ("simclr", "npid"), **settings})


def test_task_settings_and_task_profile_reach_the_tasks_but_not_the_optimiser():
    config = MultitaskConfig.from_flat(tasks=["simclr", "npid"], task_weights=(1, 3),
                                       task_settings={"npid": {"temperature": 0.2}}, task_profile="local",
                                       base_lr=0.05, exclude_norm_and_bias=True)
    assert (config.tasks, config.task_weights, config.task_settings) == (
        ("simclr", "npid"), (1.0, 3.0), {"npid": {"temperature": 0.2}})
    simclr, npid = config.task_configs().values()
    # npid: its own local profile_defaults, then task_settings; base_lr from multitask, not its profile's 0.2
    assert (npid.loss_form, npid.bank_init, npid.temperature) == ("infonce", "features", 0.2)
    assert simclr.optim == npid.optim == config.optim  # the one optimiser, not SimCLR's LARS nor its local warm-up
    assert config.optim.base_lr == 0.05 and config.optim.exclude_norm_and_bias
    plain = MultitaskConfig(tasks=("simclr", "npid")).task_configs()["npid"]
    assert (plain.loss_form, plain.bank_init) == ("nce", "random")  # task_profile none: the paper's


def test_a_record_holds_strings_and_reads_back_to_the_same_config():
    """A trial's record (``flat``) holds the tasks, weights and settings as strings, the same strings as
    before they were structured (so stored trial ids stay valid), and they read back to the same config."""
    config = MultitaskConfig.from_flat(TASKS)
    flat = config.flat()
    assert (flat["tasks"], flat["task_weights"], flat["task_settings"]) == (
        "simclr,npid", "0.5,2", '{"npid": {"embedding_dim": 16}, "simclr": {"encoder_momentum": 0.9}}')
    assert MultitaskConfig.from_flat(flat) == config
    default = MultitaskConfig().flat()
    assert (default["tasks"], default["task_weights"], default["task_settings"]) == (
        "relative_location,colorization,exemplar", "", "{}")


def test_the_local_profile_applies_each_tasks_own_profile_defaults():
    assert Multitask.profile_defaults["local"]["task_profile"] == "local"
    assert all(set(v) <= MultitaskConfig.field_names() for v in Multitask.profile_defaults.values())
