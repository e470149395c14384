"""What the two-view joint-embedding methods share (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins,
VICReg, UniGrad, SupCon): not a method itself, the base their files derive from.

- views: two independent draws of one augmentation, ``view_0`` and ``view_1`` (``augmentation``;
  BYOL and Barlow Twins, whose two views differ, override ``views`` and ``invariance_views``);
- invariance: the L2-normalised projections of the whole image and of one draw of the training
  augmentation, the pair the loss makes invariant (as PIRL measures f(v_I) against g(v_I^t));
- z = projector(backbone(x)) (``project``);
- an optional momentum encoder ``target`` (``blocks.momentum.MomentumTarget``; None when the method
  has none), moved after every optimiser step and declared in ``kept_in_sync``; without one the
  target branch is the online network under stop-gradient (``target_projection``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslab.methods.base import Batch, Method, State, StepContext, StepOutput
from sslab.methods.blocks.config import MethodConfig
from sslab.methods.blocks.momentum import MomentumTarget
from sslab.methods.views import Augmented, ImageView, View


def moco_v2_augmentation(image_size: int, crop_min_scale: float, blur_prob: float = 0.0, *, name: str = "view",
                         copies: int = 2) -> ImageView:
    """MoCo v2's "aug-plus", which SimSiam, UniGrad and SupCon's TwoCropTransform train with too:
    random resized crop (area ≥ ``crop_min_scale``), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with
    p 0.8, grayscale p 0.2, Gaussian blur with p ``blur_prob`` (ImageNet 0.5; CIFAR none)."""
    return ImageView(name=name, size=image_size, scale=(crop_min_scale, 1.0), jitter=(0.4, 0.4, 0.4, 0.1),
                     jitter_prob=0.8, grayscale=0.2, blur_prob=blur_prob, copies=copies)


class TwoViewMethod(Method):
    """Base of the two-view methods; a subclass builds ``self.projector`` (and ``self.target``)."""

    #: the momentum encoder, None when the method has none (``encoder_momentum`` = 0, or a method
    #: without the option). Set in ``__init__``, not as a class attribute: a class attribute would
    #: hide the submodule nn.Module registers.
    target: MomentumTarget | None

    def __init__(self, config: MethodConfig, backbone) -> None:
        super().__init__(config, backbone)
        self.target = None  # a subclass that has one assigns its MomentumTarget after this

    @classmethod
    def augmentation(cls, config: MethodConfig, image_size: int, name: str = "view", copies: int = 2) -> ImageView:
        """The method's t ~ T; default MoCo v2's (``moco_v2_augmentation``) with the config's
        ``crop_min_scale`` and ``blur_prob``."""
        return moco_v2_augmentation(image_size, config.crop_min_scale, config.blur_prob, name=name, copies=copies)

    @classmethod
    def views(cls, config: MethodConfig, image_size: int) -> list[View]:
        """Two independent draws of ``augmentation``: keys ``view_0`` and ``view_1``."""
        return [cls.augmentation(config, image_size)]

    @classmethod
    def invariance_views(cls, config: MethodConfig, image_size: int) -> list[View]:
        """The whole image (``clean``) and one draw of the training augmentation (``transformed``)."""
        return [ImageView(name="clean", size=image_size),
                Augmented(cls.augmentation(config, image_size, name="transformed", copies=1))]

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """z = g(f(x)) of the online network, B x d (``embedding`` of the backbone's representation)."""
        return self.embedding(self.backbone(images))

    def embedding(self, representation: torch.Tensor) -> torch.Tensor:
        """z = g(h) of the online network from the backbone's pooled features h: the embedding the
        loss compares (a subclass whose loss sees it normalised normalises it here)."""
        return self.projector(representation)

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(z(x), z(t(x))), L2-normalised in float32."""
        return (F.normalize(self.project(batch["clean"]).float(), dim=1),
                F.normalize(self.project(batch["transformed"]).float(), dim=1))

    @torch.no_grad()
    def target_projection(self, images: torch.Tensor) -> torch.Tensor:
        """z of the target branch, without gradient: the momentum encoder's, or without one the
        online network's g(f(x)) under stop-gradient."""
        if self.target is not None:
            return self.target(images)
        return self.projector(self.backbone(images))

    def target_momentum(self, progress: float) -> float:
        """The momentum encoder's EMA coefficient at ``progress`` (0 without one)."""
        return self.target.momentum(progress) if self.target is not None else 0.0

    def after_step(self, batch: Batch, out: StepOutput, ctx: StepContext) -> None:
        """Move the momentum encoder, if any, at the run's progress (its schedule's argument)."""
        if self.target is not None:
            self.target.update(ctx.progress)

    def kept_in_sync(self) -> list[State]:
        """The momentum encoder, if any: its EMA step follows the (synchronised) online weights."""
        return [self.target] if self.target is not None else []
