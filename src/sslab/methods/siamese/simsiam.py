"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He 2021, arXiv:2011.10566).

One network f (backbone + projection MLP) encodes two views of an image; a prediction MLP h
maps one view's projection onto the other's, which is held constant (stop-gradient). Neither
negatives nor a momentum encoder: the stop-gradient alone prevents collapse (sec. 4.1). With
p = h(z), z = f(x) (eq. 1-4, Algorithm 1):

    L = −½·cos(p₁, sg(z₂)) − ½·cos(p₂, sg(z₁)),   averaged over the batch (``simsiam_loss``).

Defaults follow the official code (facebookresearch/simsiam ``builder.py``, ``main_simsiam.py``;
methods.md 3.4): projector Linear-BN-ReLU ×2 then Linear-BN(affine=False), 2048 wide; predictor
bottleneck Linear(512)-BN-ReLU-Linear(2048) (``blocks.heads.mlp``); SGD, momentum 0.9, lr 0.05
per 256 images, weight decay 1e-4 on every parameter, cosine decay without warm-up, and
``--fix-pred-lr``: the predictor keeps the initial learning rate (a ``fixed_lr`` parameter group);
views: the MoCo v2 recipe (crop 0.2–1, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2).
Choices where the official code, the paper's CIFAR variant and the ports differ:

- **Projector depth.** 3 layers (the official code; solo-learn uses it on CIFAR, 90.51% linear
  with a ResNet-18, methods.md 5.1). The paper's CIFAR appendix uses 2 layers
  (``projection_layers=2``; lightly's CIFAR head too; UNVERIFIED against the paper here).
- **Head width.** 2048 / 2048 / predictor 512, the official sizes, which solo-learn keeps on a
  ResNet-18 on CIFAR (512 features).
- **Blur.** Off by default (``blur_prob=0``), as SimCLR's CIFAR setting here (ImageNet: 0.5).
- **Optimiser at CIFAR scale.** The official lr 0.05 / wd 1e-4 (ImageNet, batch 512); solo-learn's
  CIFAR config uses lr 0.5 per 256 and wd 1e-5, the paper's CIFAR appendix lr 0.03 and wd 5e-4
  (UNVERIFIED here), lightly 0.06 unscaled.
- BatchNorm statistics are per worker (the official code converts to SyncBatchNorm).
- The official projector's last Linear keeps a frozen bias before its affine-free BN, which
  cancels it; here that Linear has no bias (the same function).

``encoder_momentum`` > 0 takes z from a momentum encoder (``MomentumTarget`` over the backbone and
projector): UniGrad's "SimSiam w/ momentum encoder" (methods.md 1.6: 70.2 against 67.9). The
default 0 is SimSiam as published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F

from sslab.methods.base import Batch, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.heads import mlp
from sslab.methods.blocks.momentum import MomentumTarget, encoder_momentum, encoder_momentum_schedule
from sslab.methods.losses import simsiam_loss
from sslab.methods.siamese.two_view import TwoViewMethod


@dataclass
class SimSiamConfig(MethodConfig):
    """SimSiam's hyperparameters, official defaults (see the module docstring)."""

    projection_dim: int = hyperparameter(2048, "d", "output dimension of the projector and predictor", "[1, inf)")
    projection_hidden_dim: int = hyperparameter(2048, "projection_hidden_dim", "hidden width of the projector",
                                                "[1, inf)")
    projection_layers: int = hyperparameter(
        3, "projection_layers", "Linear layers in the projector (official: 3; paper's CIFAR variant: 2)", "[1, 8]")
    prediction_hidden_dim: int = hyperparameter(512, "prediction_hidden_dim",
                                                "bottleneck width of the predictor h", "[1, inf)")
    fix_predictor_lr: bool = hyperparameter(
        True, "fix_predictor_lr", "the predictor keeps the initial learning rate (official --fix-pred-lr)",
        "{true, false}")
    encoder_momentum: float = encoder_momentum(0.0)
    encoder_momentum_schedule: str = encoder_momentum_schedule("cosine")
    crop_min_scale: float = hyperparameter(0.2, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    blur_prob: float = hyperparameter(0.0, "blur_prob", "Gaussian blur probability (CIFAR: 0; ImageNet: 0.5)",
                                      "[0, 1]")
    optim: Optimiser = optimiser(
        optimizer="sgd", base_lr=0.05, weight_decay=1e-4,
        notes={"base_lr": "SGD learning rate per 256 images (official)"})


class SimSiam(TwoViewMethod):
    """Backbone + projector f, predictor h, stop-gradient; optionally a momentum encoder for z."""

    name = "simsiam"
    Config = SimSiamConfig
    # The local profile (16 epochs of a width-8 ResNet-10 on 5,000 CPU images, batch 64): base lr 0.2
    # per 256 (0.05 at batch 64, near lightly's CIFAR 0.06; solo-learn's CIFAR config uses 0.5 per
    # 256) instead of the official 0.05, which learned less in 16 epochs: docs/local-profile.md#simsiam.
    profile_defaults = {"local": {"base_lr": 0.2}}

    def __init__(self, config: SimSiamConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        d = config.projection_dim
        self.projector = mlp(backbone.out_dim, config.projection_hidden_dim, d, config.projection_layers,
                             last_bn=True, last_bn_affine=False)
        self.predictor = mlp(d, config.prediction_hidden_dim, d)  # h: bottleneck, output with bias
        self.target = MomentumTarget.from_config(config, self.backbone, self.projector)

    # --- what the data pipeline must produce --------------------------------------------
    # --- heads and loss -----------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        v1, v2 = batch["view_0"], batch["view_1"]
        z1, z2 = self.project(v1), self.project(v2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        if self.target is not None:  # UniGrad's "w/ momentum encoder": z from the EMA copy
            z1, z2 = self.target(v1), self.target(v2)
        loss = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float())
        # the spread of the normalised z per dimension: 1/√d when healthy, 0 when collapsed (sec. 4.1)
        z_std = F.normalize(z1.detach().float(), dim=1).std(dim=0).mean()
        return StepOutput(loss, {"loss": loss.detach(), "z_std": z_std})

    # --- training -------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """The base groups, each split in two when ``fix_predictor_lr``: the predictor's parameters
        in a ``fixed_lr`` group (the schedule leaves its learning rate at the initial one)."""
        groups = super().parameter_groups()
        if not self.config.fix_predictor_lr:
            return groups
        predictor = {id(p) for p in self.predictor.parameters()}
        split = []
        for group in groups:
            split.append(group | {"params": [p for p in group["params"] if id(p) not in predictor]})
            split.append(group | {"name": f"predictor_{group['name']}", "fixed_lr": True,
                                  "params": [p for p in group["params"] if id(p) in predictor]})
        return [g for g in split if g["params"]]

    # --- state --------------------------------------------------------------------------