"""Exemplar-CNN: discriminative unsupervised feature learning with exemplar convolutional neural
networks (Dosovitskiy, Springenberg, Riedmiller & Brox, NIPS 2014, arXiv:1406.6909).

Every seed patch x_i (cropped where the image gradient is large) is its own *surrogate class* i;
the network classifies random transformations T x_i of the seeds (translation, scale, rotation,
two contrast changes, a hue shift: ``views.exemplar.ExemplarView``) with the softmax
cross-entropy over the K surrogate classes (paper eq. 1, with T drawn afresh every step):

    ℓ = −log softmax(h(f(T x_i)))_i,   f = backbone (pooled res5), h = classifier head.

No official code exists (``/work/shared/reference/methods.md`` sec. 4); the spec is the paper's.
Choices made here:

- **Surrogate classes and the data**: image ``idx`` gives one seed (the view's highest-gradient
  window) and so one class. The number of classes is bounded by ``num_surrogate_classes`` K (the
  paper calls it N and trains with up to 16,000 seeds, ~100 transformations each: methods.md
  sec. 4, UNVERIFIED against the PDF), since it would otherwise grow with the data. With N ≤ K
  training images every image is a class (class = idx). With N > K, K images chosen by a seeded
  draw (``class_seed``, the same on every worker and every run) are the classes, in ascending
  ``idx`` order; the others still pass through the network (a boolean selection would give
  data-dependent shapes and a host synchronisation) but with zero weight in the loss. The loss
  is Σ_b w_b ℓ_b / (B K / N): the mean over the trained images, up to the batch's chance count
  of them, with a constant normaliser, so that it needs no count from the device and
  data-parallel workers average to the one-worker loss exactly. The cost: at N > K a
  fraction 1 − K/N of each forward is spent on images that only feed BatchNorm's statistics.
- **Samples per class**: the paper trains on a fixed set of ~100 transformations per seed; here
  each epoch draws ``transformations`` M fresh transformations per seed (the platform's views, M
  of them in the same step), so after E epochs a class has seen M E samples, all different. M = 1
  by default; M > 1 costs M times the images per step, and gives a classifier row M gradient
  contributions where it would get one (each row is visited once an epoch).
- **Head**: the paper's networks end in a fully connected layer (128 units for 64c5-64c5-128f,
  512 for 64c5-128c5-256c5-512f) and the softmax layer. Here h = Linear(f, ``head_hidden_dim``)
  → ReLU → Linear(K) on the pooled res5 features (``head_hidden_dim`` 0: one Linear); no dropout
  (the paper uses it on the fully connected layers). Option, not in the paper: ``temperature`` τ > 0
  makes the last layer a cosine classifier, logits = cos(h, w_k) / τ (the normalised softmax of
  parametric instance classification, Cao et al. 2020, arXiv:2006.14618): the logits no longer
  wait for the rows' norms to grow, which is slow when each row sees one sample per epoch.
- **Optimiser**: the paper's Caffe settings are not reproduced; SGD with momentum 0.9, weight
  decay 5e-4 (the usual value of Caffe-era networks, UNVERIFIED for this paper), lr 0.1 per 256
  images and sslab's cosine schedule.

Invariance (``invariance_pair``): the seed patch vs one random transformation of it, the pooled
res5 features the probes read, L2-normalised. Metrics: the loss, and the top-1 accuracy of the
surrogate classification over the batch's trained images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.losses import surrogate_loss
from sslab.methods.views import Augmented, View
from sslab.methods.views.exemplar import ExemplarView


@dataclass
class ExemplarConfig(MethodConfig):
    """Exemplar-CNN's hyperparameters; the transformation ranges are the paper's (sec. 2.1)."""

    num_surrogate_classes: int = hyperparameter(
        16000, "N", "surrogate classes K (the paper's N, up to 16,000); with more training images only K "
        "images drawn by class_seed train", "[2, inf)")
    class_seed: int = hyperparameter(0, "class_seed", "seed of the draw of the K seed images when there are more images",
                                     "[0, inf)")
    head_hidden_dim: int = hyperparameter(
        128, "head_hidden_dim", "width of the fully connected layer before the K-way softmax (paper: 128 or 512); "
        "0 = a linear classifier", "[0, inf)")
    transformations: int = hyperparameter(
        1, "M", "random transformations of each seed in a step (samples of its class per epoch)", "[1, inf)")
    temperature: float = hyperparameter(
        0.0, "τ", "0: the paper's softmax layer (logits W h + b); > 0: cosine classifier, logits cos(h, w_k) / τ",
        "[0, inf)")
    patch_fraction: float = hyperparameter(
        0.75, "patch_fraction", "seed side / image side (24 of 32 px, resampled to the image size; paper: 32 of 96)",
        "(0, 1]")
    translation: float = hyperparameter(0.2, "translation", "largest shift in x and y, fraction of the seed side",
                                        "[0, 1]")
    scale_min: float = hyperparameter(0.7, "scale_min", "smallest scale factor (log-uniform)", "(0, 1]")
    scale_max: float = hyperparameter(1.4, "scale_max", "largest scale factor (log-uniform)", "[1, inf)")
    rotation: float = hyperparameter(20.0, "rotation", "largest rotation, degrees", "[0, 180]")
    pca_contrast: float = hyperparameter(
        2.0, "contrast_1", "c: each principal colour component's projection scaled by a factor in [1/c, c]", "[1, inf)")
    sv_power: float = hyperparameter(4.0, "contrast_2_power", "q: S and V raised to a power in [1/q, q]", "[1, inf)")
    sv_factor_min: float = hyperparameter(0.7, "contrast_2_factor_min", "smallest factor on S and V", "(0, 1]")
    sv_factor_max: float = hyperparameter(1.4, "contrast_2_factor_max", "largest factor on S and V", "[1, inf)")
    sv_shift: float = hyperparameter(0.1, "contrast_2_shift", "S and V shifted by up to ±this", "[0, 1]")
    hue: float = hyperparameter(0.1, "colour", "hue shifted by up to ±this, in turns", "[0, 0.5]")
    optim: Optimiser = optimiser(
        base_lr=0.1, weight_decay=5e-4,
        notes={"base_lr": "SGD learning rate per 256 images"})


class Exemplar(Method):
    """Backbone f and a classifier h over K surrogate classes, one per seed patch."""

    name = "exemplar"
    Config = ExemplarConfig
    needs = ("num_samples",)
    # The local profile (16 epochs of a width-8 ResNet-10 on 5,000 CPU images, batch 64, so K = N =
    # 5,000 classes seen 16 times each): base lr 0.2 per 256 (0.05 at batch 64, supervised's). A
    # parametric classifier whose rows each see one sample per epoch barely leaves ln K here; the
    # cosine classifier (temperature) learns the task but not better features, and more
    # transformations per seed (M) did not help, so M stays 1. In this budget Exemplar-CNN does not
    # learn features a linear probe can use: docs/local-profile.md#exemplar.
    profile_defaults = {"local": {"base_lr": 0.2}}

    def __init__(self, config: ExemplarConfig, backbone: Backbone, *, num_samples: int) -> None:
        super().__init__(config, backbone)
        if num_samples < 2:
            raise ValueError(f"num_samples = {num_samples}: Exemplar-CNN needs at least 2 images (surrogate classes)")
        self.num_samples = num_samples
        self.num_classes = min(config.num_surrogate_classes, num_samples)
        hidden = config.head_hidden_dim
        last = (CosineClassifier(hidden or backbone.out_dim, self.num_classes, config.temperature)
                if config.temperature > 0 else nn.Linear(hidden or backbone.out_dim, self.num_classes))
        hidden_layer = [nn.Linear(backbone.out_dim, hidden), nn.ReLU()] if hidden else []
        self.classifier = nn.Sequential(*hidden_layer, last)
        # class of each training image, -1 for images that are not seeds (persistent: it says what
        # each classifier row means, whatever a later torch's random generator would draw)
        self.register_buffer("surrogate_class", surrogate_classes(num_samples, self.num_classes, config.class_seed))

    # --- what the data pipeline must produce -------------------------------------------
    @classmethod
    def augmentation(cls, config: ExemplarConfig, image_size: int, name: str = "patch") -> ExemplarView:
        """The seed patch under one random transformation of the configured ranges."""
        return ExemplarView(
            name=name, size=image_size, patch_fraction=config.patch_fraction, translation=config.translation,
            scale=(config.scale_min, config.scale_max), rotation=config.rotation,
            pca_contrast=(1 / config.pca_contrast, config.pca_contrast), sv_power=(1 / config.sv_power, config.sv_power),
            sv_factor=(config.sv_factor_min, config.sv_factor_max), sv_shift=config.sv_shift, hue=config.hue)

    @classmethod
    def views(cls, config: ExemplarConfig, image_size: int) -> list[View]:
        """M transformed seed patches per image, keys ``patch``, ``patch_2`` .. ``patch_M``."""
        return [cls.augmentation(config, image_size, _patch_key(m)) for m in range(config.transformations)]

    @classmethod
    def invariance_views(cls, config: ExemplarConfig, image_size: int) -> list[View]:
        """The seed patch (the view's evaluation form) and one random transformation of it."""
        return [cls.augmentation(config, image_size, "seed"), Augmented(cls.augmentation(config, image_size, "transformed"))]

    # --- loss ---------------------------------------------------------------------------
    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Weighted cross-entropy over the surrogate classes of ``idx`` (see the module docstring)."""
        classes = self.surrogate_class[batch["idx"].long()].repeat(self.config.transformations)
        patches = torch.cat([batch[_patch_key(m)] for m in range(self.config.transformations)])
        logits = self.classifier(self.backbone(patches)).float()
        loss, accuracy = surrogate_loss(logits, classes, self.num_classes / self.num_samples)
        return StepOutput(loss, {"loss": loss.detach(), "accuracy": accuracy})

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x_i), f(T x_i)): pooled res5 features of the seed and of a transformation, L2-normalised."""
        return (self.backbone.unit_features(batch["seed"]),
                self.backbone.unit_features(batch["transformed"]))


def _patch_key(m: int) -> str:
    """The batch key of the (m + 1)-th transformation of each seed."""
    return "patch" if m == 0 else f"patch_{m + 1}"


class CosineClassifier(nn.Module):
    """logits_k = cos(x, w_k) / τ: a linear layer on L2-normalised inputs and rows, without bias."""

    def __init__(self, in_dim: int, num_classes: int, temperature: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(in_dim, num_classes, bias=False).weight.detach())
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T / self.temperature


def surrogate_classes(num_samples: int, num_classes: int, seed: int) -> torch.Tensor:
    """The surrogate class of every training image (int64, length ``num_samples``): ``idx`` itself
    when every image is a seed, else classes 0..K-1 for K images drawn with ``seed`` (in ascending
    ``idx`` order) and -1 for the rest."""
    if num_classes >= num_samples:
        return torch.arange(num_samples)
    chosen = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))[:num_classes].sort().values
    classes = torch.full((num_samples,), -1, dtype=torch.int64)
    classes[chosen] = torch.arange(num_classes)
    return classes


