"""Context encoder: feature learning by inpainting (Pathak, Krähenbühl, Donahue, Darrell & Efros, CVPR 2016).

The central square of every image (half its side) is removed from the input and the network
predicts it from the surrounding context. Following the official ``train.lua``
(pathak22/context-encoder, methods.md section 4):

- the input hole is the central square minus an ``overlapPred``-pixel border that the input keeps,
  filled with the dataset's mean pixel (0 after normalisation); the network predicts the **whole**
  central square, border included (``views.corrupted.CorruptedView(corruption="centre")``);
- the reconstruction loss is the mean squared error over the central square with the border
  pixels weighted ``overlapL2Weight`` = 10 times the interior (official ``wtl2Matrix``: the MSE's
  gradient multiplied element-wise by 10·wtl2 on the border and wtl2 inside, i.e. the loss
  L2 = mean_{n,c,i,j} W_ij (ŷ − x)², the mean over all N·3·h·w elements as ``nn.MSECriterion``);
- the joint loss is (1 − λ)·L2 + λ·L_adv with λ = 1 − wtl2 (the README's command: wtl2 = 0.999,
  λ = 0.001), L_adv the generator's non-saturating GAN loss −log D(ŷ) against a DCGAN
  discriminator D on the central square, itself trained on real centres against the detached
  predictions (−log D(x) − log(1 − D(ŷ)), the sum of both means as the official errD).

sslab's encoder is the backbone up to ``tap`` (official: a 5-layer AlexNet-like encoder with a 4000-d
bottleneck), its decoder the shared ``blocks.decoder.ConvDecoder`` upsampling the tap's map to the
central square (one stage fewer than to the whole image: the official generator also outputs the
64 x 64 centre of a 128 x 128 input directly). Choices where sslab departs from the official code:

- **no adversarial term by default** (λ = 0): the paper's feature-learning experiments (sec. 5.2)
  train the encoder with the reconstruction loss alone (the adversarial loss did not converge
  with AlexNet there); λ > 0 turns it on, with the discriminator built only then;
- the discriminator and the generator are trained in the same step with one backward: D's loss on
  the detached prediction, the generator's adversarial loss through ``torch.func.functional_call``
  on D's detached parameters (and a copy of its BatchNorm buffers), so each part gets only its own
  gradient. The official code alternates two Adam steps (D first) and gives the generator a
  10x larger learning rate when 0 < λ < 1; here one optimiser trains both at the same rate;
- the overlap is a fraction of the image side, ``overlap`` = 4/128 (official 4 px at 128 px), so
  ``round(overlap · side)`` px: 1 px at 32 px, 2 px at 64 px, 4 px at 128 px;
- the official code's central mask only (its random-block and random-region masks, which the paper
  prefers for features, are not implemented); random resized crops (area 0.2-1) and flips instead
  of the official random 128-px crops of a 350-px image.

Optimiser as official: Adam, lr 2e-4 at the official batch 64 (scaled linearly), β₁ = 0.5, no
weight decay.

Invariance: the pooled res5 features (what the probes read) of the whole image and of its masked
version, L2-normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.decoder import ConvDecoder, tap_stride
from sslab.methods.losses import discriminator_loss, generator_adversarial_loss, weighted_mse
from sslab.methods.views.base import View
from sslab.methods.views.corrupted import CorruptedView, centre_square


@dataclass
class ContextEncoderConfig(MethodConfig):
    """The context encoder's hyperparameters, official defaults (see the module docstring)."""

    overlap: float = hyperparameter(
        4 / 128, "overlapPred", "border of the central square kept in the input, as a fraction of the image side "
        "(official 4 px at 128 px; round(overlap · side) px)", "[0, 0.25)")
    overlap_weight: float = hyperparameter(
        10.0, "overlapL2Weight", "weight of the overlap border's squared error relative to the hole's", "(0, inf)")
    adversarial_weight: float = hyperparameter(
        0.0, "λ = 1 − wtl2", "weight of the adversarial loss (official README 0.001; 0: reconstruction only, "
        "as the paper's feature learning)", "[0, 1)")
    discriminator_width: int = hyperparameter(
        0, "ndf", "channels of the discriminator's first layer; 0 = the backbone's width", "[0, inf)")
    tap: str = hyperparameter("res5", "tap", "backbone feature map the decoder reads", "{conv1, res2, res3, res4, res5}")
    decoder_width: int = hyperparameter(
        0, "ngf", "channels of the decoder's first stage (halved per stage); 0 = half the tap's channels", "[0, inf)")
    crop_min_scale: float = hyperparameter(0.2, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    optim: Optimiser = optimiser(
        optimizer="adamw", base_lr=2e-4, reference_batch=64, momentum=0.5, weight_decay=0.0,
        notes={"optimizer": "optimizer family (official: Adam)",
               "base_lr": "Adam learning rate at the reference batch (official)",
               "reference_batch": "global batch at which lr = base_lr (official 64)",
               "momentum": "Adam β₁ (official beta1)"},
        symbols={"momentum": "β₁"})


class ContextEncoder(Method):
    """Backbone (to ``tap``) and a decoder inpainting the central square; optionally a discriminator."""

    name = "context_encoder"
    Config = ContextEncoderConfig
    # The local profile: the official settings, but Adam's lr 1e-3 instead of 2e-4 (as colourisation
    # and split-brain at local): 2e-4 is for the official 100s of epochs, not 16. Measured over 3
    # seeds in docs/local-profile.md#context_encoder.
    profile_defaults = {"local": {"base_lr": 1e-3}}
    needs = ("image_size",)

    def __init__(self, config: ContextEncoderConfig, backbone: Backbone, *, image_size: int) -> None:
        super().__init__(config, backbone)
        square = centre_square(image_size)
        side = square.stop - square.start
        upsamplings = max(0, int(math.log2(tap_stride(backbone, config.tap))) - 1)  # to half the image side
        self.decoder = ConvDecoder(backbone.tap_channels[config.tap], 3, upsamplings,
                                   config.decoder_width or max(1, backbone.tap_channels[config.tap] // 2))
        self.discriminator = (dcgan_discriminator(side, config.discriminator_width or backbone.width)
                              if config.adversarial_weight > 0 else None)
        weights = overlap_weights(side, overlap_pixels(config.overlap, image_size), config.overlap_weight)
        self.register_buffer("loss_weights", weights, persistent=False)  # fixed by the configuration

    @classmethod
    def masked_view(cls, config: ContextEncoderConfig, image_size: int, name: str) -> CorruptedView:
        return CorruptedView(name=name, size=image_size, scale=(config.crop_min_scale, 1.0), corruption="centre",
                             overlap=overlap_pixels(config.overlap, image_size), mask=False)

    @classmethod
    def views(cls, config: ContextEncoderConfig, image_size: int) -> list[View]:
        """Keys ``masked`` (the context) and ``masked_target`` (the clean crop; the loss reads its centre)."""
        return [cls.masked_view(config, image_size, "masked")]

    @classmethod
    def invariance_views(cls, config: ContextEncoderConfig, image_size: int) -> list[View]:
        """The whole image (``inv_target``) and its masked version (``inv``)."""
        return [cls.masked_view(config, image_size, "inv")]

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        context, image = batch["masked"], batch["masked_target"]
        square = centre_square(image.shape[-1])
        real = image[..., square, square].float()
        features = self.backbone.features(context, (self.config.tap,))[self.config.tap]
        fake = self.decoder(features, size=tuple(real.shape[-2:])).float()
        l2 = weighted_mse(fake, real, self.loss_weights)
        if self.discriminator is None:
            return StepOutput(l2, {"loss": l2.detach(), "l2": l2.detach()})
        lam = self.config.adversarial_weight
        frozen = {n: p.detach() for n, p in self.discriminator.named_parameters()}
        frozen |= {n: b.clone() for n, b in self.discriminator.named_buffers()}  # D's running stats move once
        # −log D(ŷ): gradient to the generator only
        adv_g = generator_adversarial_loss(torch.func.functional_call(self.discriminator, frozen, (fake,)))
        loss_d = discriminator_loss(self.discriminator(real), self.discriminator(fake.detach()))
        loss_g = (1 - lam) * l2 + lam * adv_g
        loss = loss_g + loss_d
        return StepOutput(loss, {"loss": loss.detach(), "l2": l2.detach(), "adversarial_g": adv_g.detach(),
                                 "discriminator": loss_d.detach()})

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(masked x)): pooled res5 features of the whole and the masked image, L2-normalised."""
        return (self.backbone.unit_features(batch["inv_target"]),
                self.backbone.unit_features(batch["inv"]))


def overlap_pixels(overlap: float, image_size: int) -> int:
    """The overlap border in pixels: ``round(overlap · image_size)`` (4/128 → 1 px at 32 px)."""
    return int(round(overlap * image_size))


def overlap_weights(size: int, overlap: int, weight: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """1 x 1 x size x size loss weights over the central square: ``weight`` on its ``overlap``-px border,
    1 inside (official ``wtl2Matrix`` divided by wtl2)."""
    weights = torch.full((1, 1, size, size), float(weight), device=device)
    weights[..., overlap:size - overlap, overlap:size - overlap] = 1.0
    return weights


def dcgan_discriminator(size: int, width: int) -> nn.Sequential:
    """The official DCGAN discriminator for a ``size`` x ``size`` patch: Conv(4, stride 2) → LeakyReLU(0.2),
    then [Conv(4, stride 2) → BN → LeakyReLU(0.2)] doubling the channels while the map is larger than
    4 x 4, then a convolution over the whole map to one logit (the official ``Sigmoid`` +
    ``BCECriterion`` is ``binary_cross_entropy_with_logits`` here). Weights N(0, 0.02), BN scales
    N(1, 0.02), as the official ``weights_init``."""
    if size < 2:
        raise ValueError(f"the discriminator needs a central square of at least 2 px, got {size}")
    layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
    side, channels = size // 2, width
    while side > 4:
        layers += [nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * channels),
                   nn.LeakyReLU(0.2, inplace=True)]
        side, channels = side // 2, 2 * channels
    layers += [nn.Conv2d(channels, 1, side), nn.Flatten()]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net
