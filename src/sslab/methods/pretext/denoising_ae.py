"""Denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol, ICML 2008).

An input x is corrupted into x̃ ~ q_D(x̃ | x), encoded, and decoded back; the network is trained to
reconstruct the **clean** x (sec. 2.3):

    L = ‖g(f(x̃)) − x‖²,

so that f must capture the structure of the data to undo the corruption. The encoder f is the
backbone up to ``tap`` (res5 by default), the decoder g the shared ``blocks.decoder.ConvDecoder``
(transposed-convolution stages back to the image size). The corrupted and clean copies of the same
random crop come from ``views.corrupted.CorruptedView`` on Ray Data.

The paper's corruption is **masking noise** (a fixed fraction ν of the input components forced to
0, chosen at random per example); Gaussian noise (``corruption="gaussian"``, σ = ``noise_level``) is
the option the same authors studied later (Vincent et al., JMLR 2010). The paper trains stacked
fully-connected layers one at a time with plain SGD and no official code exists for a convolutional
version, so sslab chooses:

- the corruption zeroes whole pixels (all three channels) rather than single channel values, and
  ν = 0.25 (the paper varies ν between 0 and 50% and picks it per data set; 0.25 is sslab's choice);
- the reconstruction loss is the mean squared error on the **normalised** pixels of the clean crop
  (the paper's reconstruction loss is the cross-entropy for inputs in [0, 1]; the squared error is the
  usual one for real-valued inputs), averaged over **all pixels** as the paper's loss is (``loss_on="all"``), or over the
  corrupted pixels only (``loss_on="corrupted"``, the "emphasised" variant of the 2010 paper with
  full emphasis; with Gaussian noise every pixel is corrupted, so both agree);
- the network is trained end to end with Adam (lr 1e-3 per 64 images, β₁ 0.9, no weight decay),
  the context encoder's optimiser family; random resized crops (area 0.2-1) and flips feed it.

Invariance: the pooled res5 features (what the probes read) of the clean image and of its
corrupted version, L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.decoder import ConvDecoder
from sslab.methods.losses import reconstruction_loss
from sslab.methods.views.base import View
from sslab.methods.views.corrupted import CorruptedView


@dataclass
class DenoisingAEConfig(MethodConfig):
    """The denoising autoencoder's hyperparameters (see the module docstring)."""

    corruption: str = hyperparameter(
        "masking", "q_D", "corruption: masking noise (pixels zeroed, paper) or additive Gaussian noise",
        "{masking, gaussian}")
    noise_level: float = hyperparameter(
        0.25, "ν", "masking: fraction of pixels zeroed; gaussian: σ in [0, 1] pixel units", "[0, 1]")
    loss_on: str = hyperparameter(
        "all", "loss_on", "pixels the squared error is averaged over: all (paper) or the corrupted ones",
        "{all, corrupted}")
    tap: str = hyperparameter("res5", "tap", "backbone feature map the decoder reads", "{conv1, res2, res3, res4, res5}")
    decoder_width: int = hyperparameter(
        0, "decoder_width", "channels of the decoder's first stage (halved per stage); 0 = half the tap's channels",
        "[0, inf)")
    crop_min_scale: float = hyperparameter(0.2, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    optim: Optimiser = optimiser(
        optimizer="adamw", base_lr=1e-3, reference_batch=64, momentum=0.9, weight_decay=0.0,
        notes={"optimizer": "optimizer family (Adam)", "base_lr": "Adam learning rate per 64 images",
               "momentum": "Adam β₁"},
        symbols={"momentum": "β₁"})


class DenoisingAE(Method):
    """Backbone (to ``tap``) and a convolutional decoder reconstructing the clean crop from a corrupted one."""

    name = "denoising_ae"
    Config = DenoisingAEConfig
    # The defaults learn at the local profile as they are (no profile_defaults):
    # docs/local-profile.md#denoising_ae.

    def __init__(self, config: DenoisingAEConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        self.decoder = ConvDecoder.for_tap(backbone, config.tap, 3,
                                           config.decoder_width or max(1, backbone.tap_channels[config.tap] // 2))

    @classmethod
    def corrupted_view(cls, config: DenoisingAEConfig, image_size: int, name: str) -> CorruptedView:
        return CorruptedView(name=name, size=image_size, scale=(config.crop_min_scale, 1.0),
                             corruption=config.corruption, level=config.noise_level,
                             mask=config.loss_on == "corrupted")

    @classmethod
    def views(cls, config: DenoisingAEConfig, image_size: int) -> list[View]:
        """Keys ``noised`` (x̃), ``noised_target`` (x) and, for ``loss_on="corrupted"``, ``noised_mask``
        (1 on the corrupted pixels)."""
        return [cls.corrupted_view(config, image_size, "noised")]

    @classmethod
    def invariance_views(cls, config: DenoisingAEConfig, image_size: int) -> list[View]:
        """The whole image (``inv_target``) and its corrupted version (``inv``)."""
        return [cls.corrupted_view(config, image_size, "inv")]

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        x_noisy, x = batch["noised"], batch["noised_target"]
        features = self.backbone.features(x_noisy, (self.config.tap,))[self.config.tap]
        reconstruction = self.decoder(features, size=tuple(x.shape[-2:])).float()
        mask = batch["noised_mask"] if self.config.loss_on == "corrupted" else None
        loss = reconstruction_loss(reconstruction, x.float(), mask)
        return StepOutput(loss, {"loss": loss.detach()})

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(x̃)): pooled res5 features of the clean and the corrupted image, L2-normalised."""
        return (self.backbone.unit_features(batch["inv_target"]),
                self.backbone.unit_features(batch["inv"]))


