"""The method contract: what every method owns, written down once.

A method is one small file holding a ``Method`` subclass and its ``Config``. It owns

1. its **hyperparameters**, ``Config``: a ``MethodConfig`` dataclass (paper defaults, symbols,
   ranges, and the optimiser the paper trains with);
2. its **views**, ``views(config, image_size)``: what the data pipeline must produce per
   image, known from the configuration alone (no model is built to ask);
3. its **heads and loss**, ``training_step(batch, ctx) -> StepOutput(loss, metrics, carry)``;
   the loss functions themselves are pure functions of tensors in ``methods/losses/``;
4. its **state update**, ``after_step(batch, out, ctx)``, given that step's ``StepOutput``:
   EMA encoders, memory banks, queues. What it needs from the step (PIRL's embeddings, MoCo's
   keys, colourisation's colour mass) travels in ``out.carry``; nothing is stashed on the
   method between the two calls. Such state lives in buffers (so it is checkpointed) and is
   kept identical on every data-parallel worker; ``kept_in_sync`` declares it, as the modules
   and tensors themselves (the platform turns them into names by identity).

Optional parts have defaults here: no invariance pair, no unused parameters, one parameter
group (or two with ``exclude_norm_and_bias``), no data requirement beyond images. The
platform calls only what this class defines; it never probes a method with ``hasattr``.

``ctx`` (``StepContext``) carries the global step, the total number of steps, the epoch and the
world size, so schedules that belong to a method (BYOL's target momentum rising on a cosine,
MoCo's m) live in the method and the training loop stays generic.

What a method needs to be built (the number of training images for a memory bank, the
number of classes for a supervised head, the image size) it names in ``needs``; the platform
passes those fields of ``DataInfo`` by name to its constructor.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.utils._pytree as pytree
from torch import nn

from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig
from sslab.methods.views import View

Batch = dict[str, torch.Tensor]
#: per-step metrics: detached scalar tensors on the training device, or floats
Metrics = dict[str, "torch.Tensor | float"]
#: what ``kept_in_sync`` declares: whole modules (every parameter and buffer of theirs) or single tensors
State = nn.Module | torch.Tensor


@dataclass(frozen=True)
class StepOutput:
    """What ``training_step`` (and ``forward``) returns, and ``after_step`` receives.

    ``loss``: the 0-d loss to back-propagate. ``metrics``: the per-step metrics to average over
    the epoch (detached 0-d device tensors, or floats). ``carry``: whatever this method's
    ``after_step`` needs from the step (detached tensors, or a structure of them; None when it
    needs nothing): PIRL's embeddings for the memory bank, MoCo's keys for the queue.
    """

    loss: torch.Tensor
    metrics: Metrics
    carry: Any = None


# DDP flattens a forward's output with torch's pytree to route its tensors through its autograd
# sink (find_unused_parameters): registered, StepOutput is traversed as a tuple of its fields is.
pytree.register_dataclass(StepOutput, serialized_type_name="sslab.methods.base.StepOutput")


def _declared_ids(declared: Iterable[State]) -> set[int]:
    """The ids of the declared tensors, and of every parameter and buffer of the declared modules."""
    ids = set()
    for item in declared:
        if isinstance(item, nn.Module):
            ids.update(id(t) for t in itertools.chain(item.parameters(), item.buffers()))
        elif isinstance(item, torch.Tensor):
            ids.add(id(item))
        else:
            raise TypeError(f"expected modules or tensors, got {type(item).__name__}")
    return ids


def buffer_names(module: nn.Module, declared: Iterable[State]) -> list[str]:
    """Names (``named_buffers`` order) of ``module``'s buffers that are, or belong to, the ``declared``
    modules and tensors (matched by identity): e.g. ``kept_in_sync()`` as DDP's buffer names."""
    ids = _declared_ids(declared)
    return [name for name, buffer in module.named_buffers() if id(buffer) in ids]


def state_names(module: nn.Module, declared: Iterable[State]) -> list[str]:
    """Names (``state_dict`` order) of ``module``'s parameters and buffers that are, or belong to, the
    ``declared`` modules and tensors (matched by identity)."""
    ids = _declared_ids(declared)
    return [name for name, tensor in module.state_dict(keep_vars=True).items() if id(tensor) in ids]


@dataclass(frozen=True)
class StepContext:
    """Where training stands, passed to every ``training_step`` and ``after_step``."""

    #: optimiser steps taken before this one (0-based, global over epochs)
    step: int
    total_steps: int
    epoch: int
    world_size: int = 1
    rank: int = 0

    @property
    def progress(self) -> float:
        """step / total_steps, in [0, 1]: the argument of cosine schedules."""
        return min(1.0, self.step / max(1, self.total_steps))


@dataclass(frozen=True)
class DataInfo:
    """What the platform knows about the training data; a method takes the fields it ``needs``."""

    num_samples: int
    num_classes: int
    image_size: int


class Method(nn.Module):
    """Base class of every method. Subclasses set ``name`` and ``Config`` and implement
    ``views`` and ``training_step``; everything else has a default."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    #: fields of ``DataInfo`` the constructor takes as keyword arguments
    needs: ClassVar[tuple[str, ...]] = ()
    #: settings this method uses at a profile's scale, over its paper defaults (precedence:
    #: Config defaults < profile_defaults[profile] < study base < grid point). Paper values are
    #: tuned for hundreds of epochs; a 5-epoch CPU run may need another loss form or LR.
    profile_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: MethodConfig, backbone: Backbone) -> None:
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        config.validate()
        self.config, self.backbone = config, backbone

    @classmethod
    def build(cls, config: MethodConfig, backbone: Backbone, data: DataInfo) -> "Method":
        """The method on ``backbone``, given the ``DataInfo`` fields it ``needs``."""
        return cls(config, backbone, **{name: getattr(data, name) for name in cls.needs})

    # --- what the data pipeline must produce --------------------------------------------
    @classmethod
    def views(cls, config: MethodConfig, image_size: int) -> list[View]:
        """The views of one training image (keys of the batch ``training_step`` reads)."""
        raise NotImplementedError(f"{cls.__name__} must declare its views")

    @classmethod
    def invariance_views(cls, config: MethodConfig, image_size: int) -> list[View] | None:
        """Views for ``invariance_pair`` (None: the method has no invariance measurement)."""
        return None

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Two L2-normalised representations whose distance measures invariance (PIRL sec. 5.2)."""
        raise NotImplementedError(f"{type(self).__name__} declares no invariance views")

    @classmethod
    def reads_labels(cls, config: MethodConfig) -> bool:
        """Whether training reads the batch's ``label`` (a supervised loss): such a method cannot
        train on data without labels, nor in a study that chooses without them. Default: no (a
        self-supervised loss never reads a label, and its batches may have none)."""
        return False

    def embedding(self, representation: torch.Tensor) -> torch.Tensor | None:
        """The embedding this method's loss is computed on, from the backbone's representation
        (``representation``: pooled res5 features, B x ``backbone.out_dim``, what ``Backbone.forward``
        gives): a joint-embedding method's projection z = g(f(x)), PIRL's f(v_I). The label-free
        measures read it beside the representation's (``embedding/<measure>``); the caller chooses
        eval mode and ``no_grad``. Default None: the loss sees no embedding of the whole image (a
        pretext task's head, a classifier)."""
        return None

    # --- heads and loss -----------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """The loss on one batch (keys: ``idx``, the views' keys, ``label`` when the data has one),
        the per-step metrics to average over the epoch: scalar tensors, detached and left on the
        device (``loss.detach()``, never ``loss.item()``: each ``item`` waits for the GPU to finish
        the step; the loop sums them on the device and reads them once per epoch), or plain floats
        for values the method knows without the GPU; and the carry ``after_step`` needs. It sets
        no tensor attribute on the method (what ``after_step`` needs goes in ``carry``)."""
        raise NotImplementedError

    def forward(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Same as ``training_step``, so the platform can wrap the method in DDP."""
        return self.training_step(batch, ctx)

    # --- state ----------------------------------------------------------------------------
    def before_training(self, images: Iterable[Batch]) -> None:
        """Set up data-dependent state once, before the first step of a new run (never on a resume:
        the state is in the checkpoint). ``images`` yields every training image once, in batches
        {``image``: the evaluation view (resized and normalised, no augmentation), ``idx``}; it is
        produced lazily, so a method that does not read it costs nothing. Default: nothing."""

    def after_step(self, batch: Batch, out: StepOutput, ctx: StepContext) -> None:
        """Update non-gradient state after the optimiser step, from ``out``, what ``training_step``
        returned for ``batch`` (default: none)."""

    def kept_in_sync(self) -> list[State]:
        """The state ``after_step`` changes and keeps equal on every data-parallel worker (or that is
        irrelevant across workers): submodules of the method (all their parameters and buffers) or
        single buffers, e.g. ``[self.queue, self.target]``. DDP does not re-broadcast these buffers
        (``buffer_names``). Default: none."""
        return []

    # --- training -------------------------------------------------------------------------
    def unused_parameters(self) -> list[nn.Parameter]:
        """The parameters that get no gradient under this configuration (DDP must know)."""
        return []

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: all parameters, or (``exclude_norm_and_bias``) weights apart
        from BatchNorm parameters and biases, which get no weight decay and no LARS adaptation."""
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not self.config.optim.exclude_norm_and_bias:
            return [{"name": "all", "params": [p for _, p in params]}]
        plain = [p for _, p in params if p.ndim > 1]
        norm_and_bias = [p for _, p in params if p.ndim <= 1]
        return [{"name": "weights", "params": plain},
                {"name": "norm_and_bias", "params": norm_and_bias, "weight_decay": 0.0, "lars_exclude": True}]
