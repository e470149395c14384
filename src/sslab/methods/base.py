"""The method contract: what every method owns, written down once.

A method is one small file holding a ``Method`` subclass and its ``Config``. It owns

1. its **hyperparameters**, ``Config``: a ``MethodConfig`` dataclass (paper defaults, symbols,
   ranges, and the optimiser the paper trains with);
2. its **views**, ``views(config, image_size)``: what the data pipeline must produce per
   image, known from the configuration alone (no model is built to ask);
3. its **heads and loss**, ``training_step(batch, ctx) -> (loss, metrics)``;
4. its **state update**, ``after_step(batch, ctx)``: EMA encoders, memory banks, queues.
   Such state lives in buffers (so it is checkpointed) and is kept identical on every
   data-parallel worker; ``after_step_updates`` names it.

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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig
from sslab.methods.views import View

Batch = dict[str, torch.Tensor]
#: per-step metrics: detached scalar tensors on the training device, or floats
Metrics = dict[str, "torch.Tensor | float"]


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

    # --- heads and loss -----------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Metrics]:
        """The loss on one batch (keys: ``idx``, the views' keys, ``label`` when the data has one),
        and the per-step metrics to average over the epoch: scalar tensors, detached and left on
        the device (``loss.detach()``, never ``loss.item()``: each ``item`` waits for the GPU to
        finish the step; the loop sums them on the device and reads them once per epoch), or
        plain floats for values the method knows without the GPU."""
        raise NotImplementedError

    def forward(self, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Metrics]:
        """Same as ``training_step``, so the platform can wrap the method in DDP."""
        return self.training_step(batch, ctx)

    # --- state ----------------------------------------------------------------------------
    def before_training(self, images: Iterable[Batch]) -> None:
        """Set up data-dependent state once, before the first step of a new run (never on a resume:
        the state is in the checkpoint). ``images`` yields every training image once, in batches
        {``image``: the evaluation view (resized and normalised, no augmentation), ``idx``}; it is
        produced lazily, so a method that does not read it costs nothing. Default: nothing."""

    def after_step(self, batch: Batch, ctx: StepContext) -> None:
        """Update non-gradient state after the optimiser step (default: none)."""

    def after_step_updates(self) -> tuple[str, ...]:
        """Prefixes of the ``state_dict`` keys that ``after_step`` changes (default: none)."""
        return ()

    # --- training -------------------------------------------------------------------------
    def unused_parameters(self) -> set[str]:
        """Names of parameters that get no gradient under this configuration (DDP must know)."""
        return set()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: all parameters, or (``exclude_norm_and_bias``) weights apart
        from BatchNorm parameters and biases, which get no weight decay and no LARS adaptation."""
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        if not self.config.exclude_norm_and_bias:
            return [{"name": "all", "params": [p for _, p in params]}]
        plain = [p for _, p in params if p.ndim > 1]
        norm_and_bias = [p for _, p in params if p.ndim <= 1]
        return [{"name": "weights", "params": plain},
                {"name": "norm_and_bias", "params": norm_and_bias, "weight_decay": 0.0, "lars_exclude": True}]
