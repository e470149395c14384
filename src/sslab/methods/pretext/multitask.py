"""Multi-task self-supervision (Doersch & Zisserman, ICCV 2017, arXiv:1708.07860).

One trunk, several pretext tasks: each task keeps its own head and loss on the one shared
backbone, and the losses add up with weights,

    L = Σ_k w_k L_k,   so   ∂L/∂θ_trunk = Σ_k w_k ∂L_k/∂θ_trunk,

the paper's "naïve" shared-trunk network (its fig. 1a). The paper combines relative position,
colourisation, exemplar and motion segmentation on a ResNet-101; sslab has no video, so the
default is the three image tasks. There is no official code (methods.md, "Multi-task
self-supervision": everything beyond the paper's text is UNVERIFIED there).

**Composition is generic.** ``tasks`` names any registered methods; each task is that method,
built from the registry with its own Config on the *same* backbone object and kept in the
``tasks`` ModuleDict (``tasks.<name>.…``), so its heads, loss, views and state are the method's
own and the trunk's parameters are shared (``named_parameters`` yields them once, under
``backbone.``). Per step:

- views: every task's views, each wrapped in ``Prefixed(view, "<task>.")``, so two tasks never
  collide on a key; ``training_step`` hands each task its own keys with the prefix stripped,
  plus the shared keys (``idx``, ``label``), and returns the weighted sum; metrics are the
  tasks' own, prefixed ``<task>.`` (``rotation.loss``), beside the total ``loss``; the carry is
  every task's own ``StepOutput`` (its loss detached), by task, for that task's ``after_step``;
- ``after_step``, ``before_training`` (the one-shot image stream is replayed to each task that
  reads it), ``kept_in_sync`` (the union of the tasks' modules and tensors) and
  ``unused_parameters`` (a shared parameter is unused only if every task that holds it leaves it
  unused) delegate;
- invariance: the first task (in ``tasks`` order) that declares invariance views, with that
  task's representation and transform;
- ``needs``: a ClassVar cannot depend on ``tasks``, so multitask takes every ``DataInfo`` field
  (the platform always has them) and gives each task the ones it ``needs``.

**Settings of a task** (precedence, low to high): its Config defaults (its paper's); its own
``profile_defaults[task_profile]``; ``task_settings[task]``. A method does not know the profile
it runs under, so multitask's ``profile_defaults`` set ``task_profile`` to the profile's name,
and each task then gets the settings its own file chose for that scale. ``task_settings`` is a
dict keyed by task, e.g. ``{"npid": {"num_negatives": 1024}}``; it may name only listed tasks
and their own hyperparameters. (A trial's record writes tasks, weights and settings as strings:
``MultitaskConfig.flat``.)

**The optimiser is multitask's own** (its ``optim``): every task's Config holds that same one,
so no task may set an optimiser setting, and ``parameter_groups`` is the union of the tasks'
groups (a task's special groups, e.g. SimSiam's fixed-lr predictor, survive) with each shared
parameter in the first task's group only. The paper's optimiser is not in the reference; the
default here is SGD with momentum 0.9, lr 0.1 per 256 images and weight decay 5e-4, the recipe
of sslab's ``exemplar`` and ``relative_location`` (``colorization`` alone trains with Adam).

Where sslab departs from the paper:

- one optimiser step per batch on the weighted sum of every task's loss on views of the same
  images (as we read the paper, each task trains on its own workers and their gradients meet
  on the trunk; UNVERIFIED); the weights default to 1 each, i.e. each task's gradient as if it
  were trained alone;
- each task's head sits where that method puts it (mostly on the pooled res5 features; the
  paper attaches every head to block 3, i.e. res4);
- no lasso layer selection (the paper's fig. 1b);
- no input harmonisation: each task keeps its own views (colourisation reads L and predicts ab,
  relative location drops colour, exemplar sees colour), so the trunk sees each kind of input;
  the paper converts inputs so that the tasks agree (e.g. grey inputs to match colourisation's
  L; its exact scheme UNVERIFIED). Harmonising would mean changing the tasks' views, which each
  method owns.
- the checkpoint holds the shared backbone once (``backbone.``): its other names
  (``tasks.<task>.backbone.``) are dropped from ``state_dict`` and restored on loading.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from sslab import methods
from sslab.methods.base import Batch, DataInfo, Method, State, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import (
    OPTIMISER_FIELDS, MethodConfig, Optimiser, hyperparameter, optimiser, validate_fields)
from sslab.methods.views import View
from sslab.methods.views.prefixed import Prefixed

#: the paper's image tasks (motion segmentation needs video)
DEFAULT_TASKS = ("relative_location", "colorization", "exemplar")
#: the fields that hold the tasks; validated as a whole by ``MultitaskConfig.task_configs``
_COMPOSITE = ("tasks", "task_weights", "task_settings")


@dataclass
class MultitaskConfig(MethodConfig):
    """The tasks, their loss weights and settings, and the one optimiser (module docstring).

    ``tasks`` is a tuple of method names, ``task_weights`` a tuple of numbers, ``task_settings``
    a dict task → {hyperparameter: value}. A trial's record holds plain strings (its columns are
    scalars): ``flat`` writes the tasks and weights comma-separated and the settings as sorted
    JSON, and constructing from those strings (a stored record, ``--set tasks=a,b``) reads them
    back, so ``from_flat(config.flat())`` is the same config.
    """

    tasks: tuple[str, ...] = hyperparameter(
        DEFAULT_TASKS, "tasks", "registered method names, each a pretext task on the shared backbone",
        "{registered method names}")
    task_weights: tuple[float, ...] = hyperparameter(
        (), "w", "loss weights w_k > 0, one per task (L = Σ w_k L_k); empty = 1 each",
        "{empty, or one number > 0 per task}")
    task_settings: dict[str, dict[str, Any]] = hyperparameter(
        {}, "task_settings", 'task → {hyperparameter: value} over its defaults, e.g. {"npid": {"num_negatives": '
        '1024}}; not the optimiser\'s settings', "{task → settings}")
    task_profile: str = hyperparameter(
        "none", "task_profile", "the profile whose profile_defaults every task applies under task_settings "
        "(none: the tasks' paper defaults); set by multitask's own profile_defaults", "{none, local, cifar}")
    optim: Optimiser = optimiser(
        base_lr=0.1, weight_decay=5e-4,
        notes={"base_lr": "SGD learning rate per 256 images"})

    def __post_init__(self) -> None:
        self.tasks = _names(self.tasks)
        self.task_weights = _numbers(self.task_weights)
        self.task_settings = _settings(self.task_settings)
        super().__post_init__()

    def flat(self) -> dict[str, Any]:
        """As ``MethodConfig.flat``, with the tasks, weights and settings as the strings a record holds."""
        return {**super().flat(), "tasks": ",".join(self.tasks),
                "task_weights": ",".join(_number_text(w) for w in self.task_weights),
                "task_settings": json.dumps(self.task_settings, sort_keys=True)}

    def validate(self) -> None:
        self.optim.validate()
        validate_fields(self, skip=_COMPOSITE)
        self.task_configs()  # every task's Config, built: a bad task, weight or setting fails here

    def task_names(self) -> list[str]:
        """The tasks, in order."""
        names = list(self.tasks)
        if not names:
            raise ValueError("tasks is empty: name at least one registered method")
        if Multitask.name in names:
            raise ValueError(f"tasks = {self.tasks!r}: {Multitask.name} cannot be one of its own tasks")
        known = [name for name in methods.names() if name != Multitask.name]
        for name in names:
            if name not in known:
                raise ValueError(f"tasks = {self.tasks!r}: unknown task {name!r}; known methods: {', '.join(known)}")
        if len(set(names)) != len(names):
            raise ValueError(f"tasks = {self.tasks!r} names a task twice")
        return names

    def weights(self) -> list[float]:
        """w_k, one per task (1 each when ``task_weights`` is empty)."""
        count = len(self.task_names())
        if not self.task_weights:
            return [1.0] * count
        if len(self.task_weights) != count:
            raise ValueError(f"task_weights (w) = {self.task_weights!r} has {len(self.task_weights)} weight(s) but "
                             f"tasks = {self.tasks!r} names {count} task(s)")
        if not all(math.isfinite(w) and w > 0 for w in self.task_weights):
            raise ValueError(f"task_weights (w) = {self.task_weights!r}: every weight must be a finite number > 0")
        return list(self.task_weights)

    def settings(self) -> dict[str, dict[str, Any]]:
        """``task_settings``, checked: listed tasks, their own hyperparameters, no optimiser setting."""
        names = self.task_names()
        for task, values in self.task_settings.items():
            if task not in names:
                raise ValueError(f"task_settings names {task!r}, which is not among tasks = {self.tasks!r}")
            cls = methods.get(task)
            unknown = sorted(set(values) - cls.Config.field_names())
            if unknown:
                raise ValueError(f"task_settings: {task} has no hyperparameter(s) {unknown}; its own are: "
                                 f"{sorted(cls.Config.field_names() - set(OPTIMISER_FIELDS))}")
            optimiser_named = sorted(set(values) & set(OPTIMISER_FIELDS))
            if optimiser_named:
                raise ValueError(f"task_settings: {task}.{optimiser_named[0]} is an optimiser setting; the optimiser "
                                 f"is multitask's own: set {optimiser_named[0]} on multitask")
        return self.task_settings

    def task_configs(self) -> dict[str, MethodConfig]:
        """Each task's Config: its defaults < its profile_defaults[task_profile] < task_settings[task],
        holding multitask's optimiser."""
        self.weights()
        settings = self.settings()
        configs = {}
        for task in self.task_names():
            cls = methods.get(task)
            profile = {k: v for k, v in cls.profile_defaults.get(self.task_profile, {}).items()
                       if k not in OPTIMISER_FIELDS}
            try:
                configs[task] = cls.Config.from_flat({**profile, **settings.get(task, {})}, optim=self.optim)
            except ValueError as error:
                raise ValueError(f"task_settings: task {task!r}: {error}") from error
        return configs


def _names(value: Any) -> tuple[str, ...]:
    """Tasks as a tuple of names, from a tuple or list, or the comma-separated string a record holds."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"tasks = {value!r} must be method names (a list, or a comma-separated string)")
    return tuple(value)


def _numbers(value: Any) -> tuple[float, ...]:
    """Weights as a tuple of floats, from a tuple or list, or the comma-separated string a record holds."""
    given = value
    if isinstance(value, str):
        value = [w.strip() for w in value.split(",") if w.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"task_weights (w) = {given!r} must be numbers (a list, or a comma-separated string)")
    try:
        return tuple(float(w) for w in value if not isinstance(w, bool))
    except (TypeError, ValueError):
        raise ValueError(f"task_weights (w) = {given!r} must be numbers") from None


def _settings(value: Any) -> dict[str, dict[str, Any]]:
    """Settings as a dict of dicts, from one or from the JSON a record holds."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"task_settings = {value!r} is not valid JSON ({error})") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError(f"task_settings = {value!r} must map each task to its settings, "
                         'e.g. {"npid": {"num_negatives": 1024}}')
    return {str(task): dict(values) for task, values in value.items()}


def _number_text(weight: float) -> str:
    """A weight as a user writes it: 1, 0.5 (not 1.0)."""
    text = repr(weight)
    return text[:-2] if text.endswith(".0") else text


class Multitask(Method):
    """Several registered methods on one backbone, trained on the weighted sum of their losses."""

    name = "multitask"
    Config = MultitaskConfig
    needs = tuple(f.name for f in fields(DataInfo))
    # Each task applies its own profile_defaults for the profile (see the module docstring); one
    # warm-up epoch of the local profile's 16. Colourisation trains here with multitask's SGD, not
    # its own Adam. Measured in docs/local-profile.md#multitask.
    profile_defaults = {"local": {"task_profile": "local", "warmup_epochs": 1}, "cifar": {"task_profile": "cifar"}}

    def __init__(self, config: MultitaskConfig, backbone: Backbone, *, num_samples: int, num_classes: int,
                 image_size: int) -> None:
        super().__init__(config, backbone)
        data = DataInfo(num_samples=num_samples, num_classes=num_classes, image_size=image_size)
        configs = config.task_configs()
        self.loss_weights = dict(zip(configs, config.weights()))
        self.tasks = nn.ModuleDict({task: methods.get(task).build(c, backbone, data) for task, c in configs.items()})
        #: the task whose invariance pair the platform measures (the first that has one)
        self.invariance_task = next((task for task, c in configs.items()
                                     if methods.get(task).invariance_views(c, image_size) is not None), None)
        self.register_state_dict_post_hook(_drop_aliases)
        self.register_load_state_dict_pre_hook(_restore_aliases)

    # --- what the data pipeline must produce ---------------------------------------------
    @classmethod
    def views(cls, config: MultitaskConfig, image_size: int) -> list[View]:
        """Every task's views, keys prefixed ``<task>.``."""
        return [Prefixed(view, f"{task}.") for task, c in config.task_configs().items()
                for view in methods.get(task).views(c, image_size)]

    @classmethod
    def invariance_views(cls, config: MultitaskConfig, image_size: int) -> list[View] | None:
        """The first task's (in ``tasks`` order) that has invariance views, prefixed; None if none has."""
        for task, c in config.task_configs().items():
            views = methods.get(task).invariance_views(c, image_size)
            if views is not None:
                return [Prefixed(view, f"{task}.") for view in views]
        return None

    @classmethod
    def reads_labels(cls, config: MultitaskConfig) -> bool:
        """Whether any task reads them."""
        return any(methods.get(task).reads_labels(c) for task, c in config.task_configs().items())

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """That task's own pair, on its un-prefixed keys."""
        if self.invariance_task is None:
            raise NotImplementedError(f"none of the tasks {list(self.tasks)} declares invariance views")
        return self.tasks[self.invariance_task].invariance_pair(self.task_batch(self.invariance_task, batch))

    def task_batch(self, task: str, batch: Batch) -> Batch:
        """``task``'s keys with their prefix stripped, and the keys no task owns (``idx``, ``label``)."""
        prefix, out = f"{task}.", {}
        for key, value in batch.items():
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
            elif key.split(".", 1)[0] not in self.tasks:
                out[key] = value
        return out

    # --- loss -----------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """L = Σ_k w_k L_k; metrics: ``loss`` (L) and every task's own, prefixed ``<task>.``; carries
        each task's output (its loss detached) to that task's ``after_step``."""
        total, metrics, outputs = 0.0, {}, {}
        for task, method in self.tasks.items():
            out = method.training_step(self.task_batch(task, batch), ctx)
            total = total + self.loss_weights[task] * out.loss
            metrics.update({f"{task}.{key}": value for key, value in out.metrics.items()})
            outputs[task] = replace(out, loss=out.loss.detach())
        return StepOutput(total, {"loss": total.detach(), **metrics}, carry=outputs)

    # --- state ------------------------------------------------------------------------------
    def before_training(self, images: Iterable[Batch]) -> None:
        """Each task's, in turn, on the one stream of images: a task reads the batches an earlier
        task already read from memory (kept only while a later task may still read them)."""
        replay = _Replay(images)
        for position, method in enumerate(self.tasks.values()):
            method.before_training(replay.reader(keep=position < len(self.tasks) - 1))

    def after_step(self, batch: Batch, out: StepOutput, ctx: StepContext) -> None:
        """Each task's, on its own keys and with its own output (``out.carry[task]``)."""
        if not isinstance(out.carry, dict) or set(out.carry) != set(self.tasks):
            raise RuntimeError("after_step needs the task outputs that this method's training_step carries")
        for task, method in self.tasks.items():
            method.after_step(self.task_batch(task, batch), out.carry[task], ctx)

    def kept_in_sync(self) -> list[State]:
        """The union of the tasks' (their modules sit in the ``tasks`` ModuleDict)."""
        return [state for method in self.tasks.values() for state in method.kept_in_sync()]

    # --- training ---------------------------------------------------------------------------
    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters every task that holds them leaves without a gradient."""
        held, used = set(), set()
        for method in self.tasks.values():
            unused = {id(p) for p in method.unused_parameters()}
            for p in method.parameters():
                held.add(id(p))
                if id(p) not in unused:
                    used.add(id(p))
        return [p for p in self.parameters() if id(p) in held - used]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The tasks' groups, named ``<task>.<group>``, each parameter in the first group that has
        it (the shared backbone in the first task's); empty groups dropped."""
        seen: set[int] = set()
        groups = []
        for task, method in self.tasks.items():
            for group in method.parameter_groups():
                params = [p for p in group["params"] if id(p) not in seen]
                seen.update(id(p) for p in params)
                if params:
                    groups.append({**group, "name": f"{task}.{group.get('name', 'all')}", "params": params})
        return groups


def _aliases(module: nn.Module) -> dict[str, str]:
    """Each further name of a parameter or buffer held under several names → its first name
    (``tasks.<task>.backbone.x`` → ``backbone.x``)."""
    first: dict[int, str] = {}
    out = {}
    for name, tensor in itertools.chain(module.named_parameters(remove_duplicate=False),
                                        module.named_buffers(remove_duplicate=False)):
        canonical = first.setdefault(id(tensor), name)
        if canonical != name:
            out[name] = canonical
    return out


def _drop_aliases(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: the shared backbone once, under ``backbone.``."""
    for alias in _aliases(module):
        state_dict.pop(prefix + alias, None)


def _restore_aliases(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: every name of a shared tensor from its first name."""
    for alias, canonical in _aliases(module).items():
        if prefix + canonical in state_dict:
            state_dict.setdefault(prefix + alias, state_dict[prefix + canonical])


class _Replay:
    """One pass over ``source``, read by several readers in turn: each reader first gets what
    earlier readers read (kept in memory only when asked to), then continues the source."""

    def __init__(self, source: Iterable[Batch]) -> None:
        self._source, self._kept = iter(source), []

    def reader(self, *, keep: bool) -> Iterator[Batch]:
        yield from list(self._kept)
        for item in self._source:
            if keep:
                self._kept.append(item)
            yield item
