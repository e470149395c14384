"""RotNet: Unsupervised Representation Learning by Predicting Image Rotations (Gidaris et al., ICLR 2018).

Every image is turned by k · 90°, k ∈ {0, 1, 2, 3}, and a 4-way classifier on the backbone's
features predicts k, with the softmax cross-entropy averaged over the rotated copies:

    ℓ = −(1/4N) Σ_i Σ_k log softmax(W f(rot_k(x_i)))_k.

By default all four rotations of each image are in the same batch (the paper, sec. 2.2, and the
official code, gidariss/FeatureLearningRotNet ``dataloader.py``: the 4N copies go through the
network as one batch, so BatchNorm sees all four); ``all_rotations=False`` draws one random
rotation per image instead (VISSL's ``ImgRotatePil``, its RotNet config). The view is
``views.rotation.RotationView``: the official CIFAR augmentation (``RandomCrop(32, padding=4)``,
horizontal flip) before the rotation, the same crop for all four copies.

Defaults follow the official CIFAR-10 setting (``config/CIFAR10_RotNet_NIN4blocks.py``: batch 128
images, SGD lr 0.1, momentum 0.9, weight decay 5e-4, Nesterov, 200 epochs, lr × 0.2 at epochs
60/120/160), the lr scaled linearly to 0.2 per 256 images. Choices where sslab departs from it:

- the classifier is **linear on the pooled res5 features** (VISSL's head, ``mlp [2048, 4]``), not
  the paper's convolutional head on the last block of a Network-in-Network; ``head_hidden_dim`` > 0
  makes it a small MLP (Linear-BN-ReLU-Linear, ``blocks.heads.mlp``), closer to the paper's
  non-linear classifier;
- the schedule is sslab's warm-up + cosine, not the step decay, and the momentum is plain (no
  Nesterov: ``blocks.optim`` has none).

Cost: with all four rotations a step passes 4 × batch images through the backbone, twice as many
as SimCLR's two views (the paper's batch construction; ``all_rotations=False`` passes one).

Invariance (``invariance_pair``): the pooled res5 features of the whole image against those of the
image turned by 90°, 180° or 270° (image i of a batch by 1 + i mod 3 quarter turns), both
L2-normalised: the representation the probes read, which RotNet trains to be *covariant* with
rotation (PIRL's argument), so the distance shows how far from invariant it ends up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.heads import mlp
from sslab.methods.losses import classification
from sslab.methods.views import ImageView, View
from sslab.methods.views.rotation import QUARTER_TURNS, RotationView


@dataclass
class RotationConfig(MethodConfig):
    """RotNet's hyperparameters, official CIFAR-10 defaults (see the module docstring)."""

    all_rotations: bool = hyperparameter(
        True, "all_rotations", "all four rotations of every image in the batch (paper), or one random rotation "
        "per image (VISSL's ImgRotatePil)", "{true, false}")
    crop_padding: int = hyperparameter(
        4, "crop_padding", "zero padding in pixels of the random crop before rotating (official CIFAR: "
        "RandomCrop(32, padding=4)); 0 = no crop", "[0, inf)")
    head_hidden_dim: int = hyperparameter(
        0, "head_hidden_dim", "0: a linear 4-way classifier on pooled res5 (VISSL); > 0: Linear-BN-ReLU-Linear "
        "with this hidden width", "[0, inf)")
    optim: Optimiser = optimiser(
        base_lr=0.2, weight_decay=5e-4,
        notes={"base_lr": "SGD learning rate per 256 images (official: 0.1 at batch 128)",
               "weight_decay": "weight decay (official CIFAR: 5e-4)"})


class Rotation(Method):
    """Backbone f and a 4-way rotation classifier on its pooled res5 features, cross-entropy."""

    name = "rotation"
    Config = RotationConfig
    # The official defaults learn at the local profile (docs/local-profile.md#rotation), so no
    # profile_defaults.

    def __init__(self, config: RotationConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        classes = len(QUARTER_TURNS)
        self.classifier = (nn.Linear(backbone.out_dim, classes) if config.head_hidden_dim == 0
                           else mlp(backbone.out_dim, config.head_hidden_dim, classes))

    @classmethod
    def views(cls, config: RotationConfig, image_size: int) -> list[View]:
        """Key ``rotation`` (N x 4 x 3 x H x W, or N x 3 x H x W with ``all_rotations=False``) and
        ``rotation_label``, the quarter turns of each copy."""
        if config.crop_padding >= image_size:
            raise ValueError(f"crop_padding = {config.crop_padding} must be smaller than the image size {image_size}")
        return [RotationView(size=image_size, all_rotations=config.all_rotations, padding=config.crop_padding)]

    @classmethod
    def invariance_views(cls, config: RotationConfig, image_size: int) -> list[View]:
        """The whole image and the whole image turned by 90°, 180° or 270° (evaluation forms)."""
        return [ImageView(name="image", size=image_size),
                RotationView(name="rotated", size=image_size, all_rotations=False, rotations=(1, 2, 3))]

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Cross-entropy of the rotation classifier over every rotated copy; metrics: the loss and
        the rotation accuracy of the batch."""
        images, labels = batch["rotation"], batch["rotation_label"].long()
        if self.config.all_rotations:  # N x 4 copies -> one batch of 4N, as the official collate
            images, labels = images.flatten(0, 1), labels.flatten()
        logits = self.classifier(self.backbone(images)).float()
        return StepOutput(*classification(logits, labels))

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(rot(x))): pooled res5 features, L2-normalised."""
        return (self.backbone.unit_features(batch["image"]),
                self.backbone.unit_features(batch["rotated"]))

