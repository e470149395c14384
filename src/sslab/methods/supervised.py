"""Supervised: the cross-entropy baseline of SupContrast (Khosla et al. 2020, ``main_ce.py``).

The backbone f and a linear classifier W on its pooled features, trained with the softmax
cross-entropy on the labels, ℓ = −log softmax(W f(x̃))_y, averaged over the batch. This is the
**supervised upper reference** for the self-supervised methods of a study: the same backbone,
the same evaluation (kNN, linear probes), and labels at training time, which no
self-supervised method sees. SupCon (``supcon.py``) is its contrastive counterpart.

Defaults follow the official code and its README's CIFAR command (``main_ce.py --batch_size
1024 --learning_rate 0.8 --cosine``; README: 95.0% on CIFAR-10 with a ResNet-50): one augmented
view per image (a RandomResizedCrop of scale 0.2-1 and a flip), SGD with momentum 0.9 and weight
decay 1e-4 on every parameter, lr 0.8 at batch 1024, i.e. 0.2 per 256 scaled linearly (also
``main_ce.py``'s default at its default batch 256), no label smoothing. Choices where sslab
departs from the official code:

- the view adds SupCon's colour distortion (ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8,
  grayscale p 0.2) by default, so the reference sees SupCon's and the self-supervised
  methods' augmentation; ``color_augmentation=False`` is ``main_ce.py``'s crop and flip;
- the schedule: as in ``supcon.py``, a fixed 10 warm-up epochs (official: only when the batch
  exceeds 256, from lr 0.01) and a per-step cosine to 0 (official: per epoch, to lr/1000);
- BatchNorm statistics are per data-parallel worker (the official code's ``--syncBN`` has no
  effect under its ``DataParallel``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.losses import classification
from sslab.methods.contrastive.supcon import supcon_augmentation
from sslab.methods.views import Augmented, ImageView, View


@dataclass
class SupervisedConfig(MethodConfig):
    """The cross-entropy baseline's hyperparameters, official CIFAR defaults (see the module docstring)."""

    crop_min_scale: float = hyperparameter(0.2, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    color_augmentation: bool = hyperparameter(
        True, "color_augmentation", "SupCon's colour jitter (p 0.8) and grayscale (p 0.2) on top of crop and flip "
        "(main_ce.py: false)", "{true, false}")
    optim: Optimiser = optimiser(
        base_lr=0.2, warmup_epochs=10,
        notes={"base_lr": "SGD learning rate per 256 images (README: 0.8 at 1024)",
               "warmup_epochs": "linear warm-up before the cosine decay (official: 10 when the batch > 256)"})


class Supervised(Method):
    """Backbone f and a linear classifier on its pooled features, trained with cross-entropy."""

    name = "supervised"
    Config = SupervisedConfig
    needs = ("num_classes",)
    # 16 epochs on 5,000 CPU images at batch 64: one warm-up epoch instead of the official 10
    # (for batch 1024); lr 0.2 per 256 gives 0.05 at batch 64. Measured in
    # docs/local-profile.md#supervised.
    profile_defaults = {"local": {"warmup_epochs": 1}}

    def __init__(self, config: SupervisedConfig, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__(config, backbone)
        if num_classes < 2:
            raise ValueError(f"num_classes = {num_classes}: a classifier needs at least 2 classes")
        self.classifier = nn.Linear(backbone.out_dim, num_classes)

    @classmethod
    def augmentation(cls, config: SupervisedConfig, image_size: int, name: str) -> ImageView:
        """One draw of crop, flip and (``color_augmentation``) SupCon's colour distortion."""
        return supcon_augmentation(image_size, config.crop_min_scale, color=config.color_augmentation,
                                     name=name, copies=1)

    @classmethod
    def views(cls, config: SupervisedConfig, image_size: int) -> list[View]:
        """One augmented view per image (``main_ce.py``), key ``image``."""
        return [cls.augmentation(config, image_size, "image")]

    @classmethod
    def invariance_views(cls, config: SupervisedConfig, image_size: int) -> list[View]:
        """The whole image and one draw of the training augmentation t(x)."""
        return [ImageView(name="clean", size=image_size), Augmented(cls.augmentation(config, image_size, "transformed"))]

    @classmethod
    def reads_labels(cls, config: SupervisedConfig) -> bool:
        """Cross-entropy on the labels."""
        return True

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Cross-entropy on ``label``; metrics: the loss and the batch's top-1 training accuracy."""
        if "label" not in batch:
            raise KeyError("supervised trains on labels: the batch has no 'label' (use a labelled dataset)")
        labels = batch["label"].long()
        logits = self.classifier(self.backbone(batch["image"])).float()
        return StepOutput(*classification(logits, labels))

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(t(x))), the pooled backbone features the classifier reads, L2-normalised."""
        return (self.backbone.unit_features(batch["clean"]),
                self.backbone.unit_features(batch["transformed"]))
