"""Relative patch location (Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning
by Context Prediction", ICCV 2015).

Given a patch and one of its 8 neighbours (cut with a gap and a random jitter between them, and
colour-dropped against chromatic aberration: ``views.patch_pair.PatchPairView``), predict where
the neighbour lies. Both patches go through the shared backbone f (pooled res5); a classifier h
reads the two features side by side, 8-way cross-entropy:

    ℓ = −log softmax(h([f(centre), f(neighbour)]))_y,   y ∈ {0..7} (1 2 3 / 4 · 5 / 6 7 8, from 0).

Official code (cdoersch/deepcontext ``train.py``): a siamese AlexNet up to fc6 per patch, then
fc7 4096 (BN, ReLU) → fc8 4096 (ReLU) → fc9 8 on the concatenation, softmax loss summed over
pairs, no weight decay. The ResNet port (mmselfsup ``RelativeLoc``, ``RelativeLocNeck``) puts
concat → fc 4096 (2 x 2048) → BN → ReLU → dropout 0.5 → fc 8 on pooled res5, and trains with SGD
lr 0.2 at batch 512, momentum 0.9, weight decay 1e-4 (5e-4 on the head), 5 warm-up epochs, 70
epochs. Defaults here: DC's three layers, the hidden width = the concatenation's (2 D, mmselfsup's
scaling of 4096 to a ResNet: 128 for the local profile's width-8 ResNet-10, 4096 for a ResNet-50),
mmselfsup's optimiser. Choices where sslab departs from either:

- BatchNorm after both hidden layers (the shared ``mlp`` builder; DC has none after fc8); no
  dropout by default (DC has none; mmselfsup 0.5: ``dropout``);
- one weight decay for every parameter (mmselfsup's 5e-4 on the head is not reproduced) and
  sslab's cosine schedule instead of mmselfsup's steps at epochs 30 and 50;
- the loss is the mean over the batch's pairs (DC: the sum, with lr 1e-5);
- **BatchNorm's running statistics** (``bn_statistics``). The backbone sees only patches in
  training, while kNN, the linear probes and invariance read whole images through its running
  estimates. With colour dropping the mismatch is large: conv1 sees one real channel and two flat
  ones in training and three correlated channels at evaluation; deeper maps of an 8-px patch are
  1 x 1, mostly zero padding. PIRL's answer (``blocks.batchnorm.running_stats_frozen``: patches normalise with
  their own batch statistics and leave the running estimates alone) leaves them at their initial
  (0, 1) here, since nothing else passes through the trunk. So by default (``"images"``) the
  whole image goes through the backbone once per step, without gradient and only to update the
  running estimates, and the patches run with the estimates frozen: evaluation normalises images
  with image statistics. The forward costs about one 32-px image per pair, well under SimCLR's
  step. ``"patches"`` is DC's and mmselfsup's behaviour: the running estimates follow the patches.

Invariance (``invariance_pair``): the pooled res5 features, L2-normalised, of the whole image and of
the centre patch of the evaluation layout resampled to the image size (the probes' input size): how
much the representation changes when only a patch of the image is seen. The pretext pair itself
(centre vs neighbour) is no transform of one input, and what the task trains is to tell such
patches apart, not to map them together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.batchnorm import follow_images, running_stats_frozen
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.heads import mlp
from sslab.methods.losses import classification
from sslab.methods.views import ImageView, View
from sslab.methods.views.patch_pair import DC_GAP, DC_JITTER, DC_PATCH, NEIGHBOUR_OFFSETS, PatchPairView

NUM_POSITIONS = len(NEIGHBOUR_OFFSETS)


@dataclass
class RelativeLocationConfig(MethodConfig):
    """Relative patch location's hyperparameters (see the module docstring for the sources)."""

    gap: float = hyperparameter(DC_GAP / DC_PATCH, "gap", "gap between adjacent patches, as a fraction of the "
                                "patch side (DC: 48 / 96 px)", "[0, inf)")
    jitter: float = hyperparameter(DC_JITTER / DC_PATCH, "jitter", "largest shift of each patch per axis, as a "
                                   "fraction of the patch side (DC: 7 / 96 px)", "[0, inf)")
    crop_min_scale: float = hyperparameter(
        0.35, "crop_min_scale", "smallest area fraction of the crop the 3x3 layout spans (DC: 150k-450k px "
        "images under its 398-px layout)", "(0, 1]")
    colour_drop: str = hyperparameter(
        "drop", "colour_drop", "against chromatic aberration: keep one random channel, noise in the others "
        "(DC, per patch), grayscale (mmselfsup, per image), or none", "{drop, grayscale, none}")
    colour_drop_prob: float = hyperparameter(
        1.0, "colour_drop_prob", "probability of the colour drop (DC: 1; mmselfsup's grayscale: 0.66)", "[0, 1]")
    patch_output_size: int = hyperparameter(
        0, "patch_output_size", "side in pixels at which the patches reach the backbone (bilinear); 0 = as cut "
        "(8 px at 32-px images, 1 x 1 at res5)", "[0, inf)")
    hidden_dim: int = hyperparameter(
        0, "hidden_dim", "width of the classifier's hidden layers; 0 = twice the backbone's feature width "
        "(mmselfsup's 4096 on a ResNet-50)", "[0, inf)")
    head_layers: int = hyperparameter(3, "head_layers", "Linear layers of the classifier (DC: fc7, fc8, fc9 = 3; "
                                      "mmselfsup: 2)", "[1, 8]")
    dropout: float = hyperparameter(0.0, "dropout", "dropout after each hidden layer (DC: 0; mmselfsup: 0.5)",
                                    "[0, 1)")
    bn_statistics: str = hyperparameter(
        "images", "bn_statistics", "where the backbone's BatchNorm running estimates come from: a no-grad pass "
        "of the whole image each step (images), or the patches (DC, mmselfsup)", "{images, patches}")
    optim: Optimiser = optimiser(
        base_lr=0.1, warmup_epochs=5,
        notes={"base_lr": "SGD learning rate per 256 images (mmselfsup: 0.2 at 512)",
               "warmup_epochs": "linear warm-up before the cosine decay (mmselfsup)"})


class RelativeLocation(Method):
    """Shared backbone on a centre patch and a neighbour, an MLP on both features, 8-way cross-entropy."""

    name = "relative_location"
    Config = RelativeLocationConfig
    # The local profile (16 epochs, width-8 ResNet-10, 5,000 CIFAR-10 images at 32 px, batch 64): one
    # warm-up epoch (the official 5 are for 70 epochs); patches resampled to 16 px (2 x 2 at res5,
    # not 1 x 1) and base lr 0.2 per 256, as PIRL's and the supervised baseline's local settings. At
    # 32 px the task is barely solved, and it does not learn useful features here, even when made
    # easier: docs/local-profile.md#relative_location.
    profile_defaults = {"local": {"warmup_epochs": 1, "patch_output_size": 16, "base_lr": 0.2}}

    def __init__(self, config: RelativeLocationConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        pair = 2 * backbone.out_dim
        head = mlp(pair, config.hidden_dim or pair, NUM_POSITIONS, config.head_layers)
        if config.dropout > 0:
            head = nn.Sequential(*[m for layer in head for m in (
                (layer, nn.Dropout(config.dropout)) if isinstance(layer, nn.ReLU) else (layer,))])
        self.classifier = head

    # --- what the data pipeline must produce -------------------------------------------
    @classmethod
    def patch_view(cls, config: RelativeLocationConfig, image_size: int, *, output_size: int | None = None,
                   name: str = "patch") -> PatchPairView:
        """The pair of patches, DC's layout scaled to ``image_size`` (``PatchPairView.for_image_size``)."""
        return PatchPairView.for_image_size(
            image_size, gap=config.gap, jitter=config.jitter, name=name, crop_scale=(config.crop_min_scale, 1.0),
            colour_drop=config.colour_drop, colour_drop_prob=config.colour_drop_prob,
            output_size=config.patch_output_size if output_size is None else output_size)

    @classmethod
    def views(cls, config: RelativeLocationConfig, image_size: int) -> list[View]:
        """The patch pair, and the whole image when it sets BatchNorm's running estimates."""
        views: list[View] = [cls.patch_view(config, image_size)]
        if config.bn_statistics == "images":
            views.append(ImageView(name="image", size=image_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False,
                                   jitter=0.0, grayscale=0.0))
        return views

    @classmethod
    def invariance_views(cls, config: RelativeLocationConfig, image_size: int) -> list[View]:
        """The whole image and the evaluation layout's patches resampled to the image size."""
        return [ImageView(name="clean", size=image_size), cls.patch_view(config, image_size, output_size=image_size)]

    # --- heads and loss -----------------------------------------------------------------
    def logits(self, centre: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        """h([f(centre), f(neighbour)]), B x 8; both patches in one backbone batch (as DC)."""
        features = self.backbone(torch.cat([centre, neighbour]))
        return self.classifier(torch.cat(features.chunk(2), dim=1))

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Cross-entropy of the neighbour's position; metrics: the loss and the batch's accuracy."""
        labels = batch["patch_label"].long()
        if self.config.bn_statistics == "images":
            follow_images(self.backbone, batch["image"])
            with running_stats_frozen(self.backbone):
                logits = self.logits(batch["patch_centre"], batch["patch_neighbour"]).float()
        else:
            logits = self.logits(batch["patch_centre"], batch["patch_neighbour"]).float()
        return StepOutput(*classification(logits, labels))

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(centre patch of x at the image size)), pooled res5, L2-normalised."""
        return (self.backbone.unit_features(batch["clean"]),
                self.backbone.unit_features(batch["patch_centre"]))
