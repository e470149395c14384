"""Colorful Image Colorization (Zhang, Isola & Efros, ECCV 2016, arXiv:1603.08511), as a pretext task.

The network sees the lightness L of an image and predicts, per pixel, a distribution Ẑ over the
Q quantised ab colours (sec. 2.1); the loss is the multinomial cross-entropy against the soft
encoding Z of the true colour, each pixel weighted by the rarity of its colour (eq. 2-4):

    L_cl(Ẑ, Z) = − Σ_{h,w} v(Z_{h,w}) Σ_q Z_{h,w,q} log Ẑ_{h,w,q},
    v(Z_{h,w}) = w_{q*},  q* = argmax_q Z_{h,w,q},  w ∝ ((1 − γ) p̃ + γ/Q)^(−α),  E_p̃[w] = 1,

with γ = 1/2, α = 1, and v = 0 on every pixel of a grey image (no |a| or |b| above 5 anywhere).
Quantisation, soft encoding, the mask and the weights are ``blocks.colour_bins`` (bins of grid
10 inside the sRGB gamut: Q = 261 here, see there why not Zhang's 313).

Following the official code (richzhang/colorization ``resources/caffe_traininglayers.py``,
``models/colorization_train_val_v2.prototxt``, ``train/solver.prototxt``): the soft encoding
spreads each colour over its **10** nearest bins (the paper's text says 5) with a Gaussian of
σ = 5; Ẑ is predicted at 1/4 of the input's side and the target ab is sub-sampled to it (every
4th pixel, the prototxt's stride-4 1x1 convolution ``data_ab_ss``); the grey mask and the
weights are computed on that sub-sampled target; Adam with lr 3e-5, β = (0.9, 0.99) and weight
decay 1e-3, batch 40. Where sslab departs:

- **Backbone and head.** The trunk is sslab's ResNet (the probes read its taps), not Zhang's
  VGG-style net; its ``res5`` map (1/8 of the side with the CIFAR stem) is resized bilinearly to
  the target grid and a small head, 3x3 conv-BN-ReLU then a 1x1 conv to Q logits, plays the part
  of Zhang's conv8 (a deconvolution from 1/8 to 1/4 and a 1x1 conv to 313).
- **Input.** A grey RGB image (Lab (L, 0, 0) rendered to sRGB, normalised with the dataset's
  statistics: ``views.lab.LabView``), not the L channel centred at 50, so that the frozen backbone
  the platform evaluates on colour RGB images sees the same pixel space (the colour it was never
  shown is the remaining shift; the invariance pair measures it).
- **Prior.** p̃ is gathered from the training targets as training goes (``ColourPrior``: summed
  soft encodings of non-grey pixels, averaged over workers, checkpointed), not ImageNet's fixed
  ``prior_probs.npy``; uniform (all weights 1) before the first step.
- **Loss scale.** The weighted cross-entropy is averaged over the target pixels of the batch
  (grey images' pixels count, with weight 0); caffe's loss sums over pixels and divides by the
  batch, which only rescales the gradient (Adam is indifferent).
- AdamW's decoupled weight decay (sslab's Adam) for caffe's L2 weight decay.

Invariance pair: the pooled ``res5`` features (L2-normalised) of an image and of its grey version,
the transformation the method is built around.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslab.methods.base import Batch, Method, State, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.colour_bins import (GRID, ColourPrior, bin_mass, colourful, gamut_bins,
                                              rebalancing_weights, soft_encode)
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.losses import soft_cross_entropy
from sslab.methods.views import ImageView, View
from sslab.methods.views.lab import LabView


@dataclass
class ColorizationConfig(MethodConfig):
    """Colourisation's hyperparameters, the official code's defaults (see the module docstring)."""

    neighbours: int = hyperparameter(
        10, "k", "nearest ab bins of a colour's soft encoding (official code: 10; paper text: 5)", "[1, 64]")
    sigma: float = hyperparameter(5.0, "σ", "Gaussian width of the soft encoding, in ab units", "(0, inf)")
    gamma: float = hyperparameter(
        0.5, "λ", "weight of the uniform distribution in the rebalancing mixture (official: gamma)", "[0, 1]")
    alpha: float = hyperparameter(1.0, "α", "exponent of the rebalancing weights; 0 = no rebalancing", "[0, inf)")
    grey_threshold: float = hyperparameter(
        5.0, "grey_threshold", "an image with no |a|, |b| above this trains nothing (grey)", "[0, inf)")
    target_stride: int = hyperparameter(
        4, "target_stride", "the colour distribution is predicted at 1/stride of the input's side", "[1, 64]")
    head_width: int = hyperparameter(
        0, "head_width", "channels of the head's 3x3 conv; 0 = the backbone's res5 width", "[0, inf)")
    crop_min_scale: float = hyperparameter(
        0.5, "crop_min_scale", "smallest area fraction of the square random crop (Zhang: 176² of 256²)", "(0, 1]")
    optim: Optimiser = optimiser(
        optimizer="adamw", base_lr=3e-5, lr_scaling="none", reference_batch=40, weight_decay=1e-3,
        notes={"optimizer": "optimizer family (official: Adam)",
               "base_lr": "learning rate (official solver: 3e-5 at batch 40)",
               "lr_scaling": "lr = base_lr at any batch [none], or scaled from reference_batch",
               "reference_batch": "the official batch", "weight_decay": "weight decay (official solver: 1e-3)"})


class PixelClassifier(nn.Module):
    """The prediction head on a feature map: resized bilinearly to the target grid, a 3x3 conv-BN-ReLU,
    then 1x1 conv logits (``classes`` per pixel)."""

    def __init__(self, in_channels: int, width: int, classes: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU(inplace=True))
        self.logits = nn.Conv2d(width, classes, 1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if features.shape[-2:] != size:
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
        return self.logits(self.hidden(features))


def subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Every ``stride``-th pixel from the top-left one (Zhang's ``data_ab_ss``)."""
    return x[..., ::stride, ::stride]


def grey_invariance_views(image_size: int) -> list[View]:
    """An image and its grey version, both whole (evaluation form), for ``grey_invariance_pair``."""
    return [ImageView(name="clean", size=image_size), LabView(name="grey", size=image_size)]


@torch.no_grad()
def grey_invariance_pair(backbone: Backbone, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(x), f(grey x)): pooled res5 features, L2-normalised."""
    return (backbone.unit_features(batch["clean"]),
            backbone.unit_features(batch["grey"]))


class Colorization(Method):
    """Grey image → per-pixel distribution over the in-gamut ab bins, rebalanced cross-entropy."""

    name = "colorization"
    Config = ColorizationConfig
    # 16 epochs of the local profile (~1,250 steps at batch 64) are far too few for the official
    # Adam lr of 3e-5 (tuned for 450k steps): lr 1e-3 with one warm-up epoch. Measured in
    # docs/local-profile.md#colorization.
    profile_defaults = {"local": {"base_lr": 1e-3, "warmup_epochs": 1}}

    def __init__(self, config: ColorizationConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        self.register_buffer("bins", gamut_bins(GRID), persistent=False)
        self.head = PixelClassifier(backbone.out_dim, config.head_width or backbone.out_dim, len(self.bins))
        self.prior = ColourPrior(len(self.bins))

    @classmethod
    def views(cls, config: ColorizationConfig, image_size: int) -> list[View]:
        """The grey crop (key ``lab``) and its ab target (``lab_ab``)."""
        return [LabView(size=image_size, scale=(config.crop_min_scale, 1.0))]

    @classmethod
    def invariance_views(cls, config: ColorizationConfig, image_size: int) -> list[View]:
        return grey_invariance_views(image_size)

    def targets(self, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Z (N x Q x h x w, the soft encoding of the sub-sampled ab), the per-pixel weights v
        (N x h x w: the rebalancing weight of the nearest bin, 0 on grey images) and the non-grey
        mask (N)."""
        ab = subsample(ab.float(), self.config.target_stride)
        z = soft_encode(ab, self.bins, self.config.neighbours, self.config.sigma)
        w = rebalancing_weights(self.prior.distribution(), self.config.gamma, self.config.alpha)
        mask = colourful(ab, self.config.grey_threshold)
        return z, w[z.argmax(dim=1)] * mask.reshape(-1, 1, 1), mask

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """L_cl (eq. 2) on the grey crops ``lab`` against their colours ``lab_ab``; carries the
        target colours' mass per bin (non-grey pixels) for the prior."""
        grey, ab = batch["lab"], batch["lab_ab"]
        with torch.autocast(ab.device.type, enabled=False):
            z, v, mask = self.targets(ab)
        logits = self.head(self.backbone.features(grey, ("res5",))["res5"], tuple(z.shape[-2:]))
        loss = soft_cross_entropy(logits, z, v)
        return StepOutput(loss, {"loss": loss.detach()}, carry=bin_mass(z, mask))

    def after_step(self, batch: Batch, out: StepOutput, ctx: StepContext) -> None:
        """Add the step's target colours (``out.carry``: non-grey pixels, all workers) to the prior p̃."""
        if not isinstance(out.carry, torch.Tensor):
            raise RuntimeError("after_step needs the colour mass that this method's training_step carries")
        self.prior.accumulate(out.carry)

    def kept_in_sync(self) -> list[State]:
        """The colour prior (each step's mass averaged over the workers)."""
        return [self.prior]

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(grey x)), the pooled res5 features the probes read, L2-normalised."""
        return grey_invariance_pair(self.backbone, batch)
