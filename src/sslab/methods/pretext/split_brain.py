"""Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel Prediction (Zhang, Isola & Efros,
CVPR 2017, arXiv:1611.09842).

The image X is split into its Lab channel groups X₁ = L and X₂ = ab, and the network solves both
cross-channel problems (sec. 3): F₁ predicts ab from L and F₂ predicts L from ab, each as a
classification over quantised targets (the paper found cross-entropy better than regression):

    ℓ = ℓ_cl(F₁(L), Z_ab) + ℓ_cl(F₂(ab), Z_L),

Z_ab the soft encoding of the ab target over the in-gamut bins (grid 10, 10 nearest bins,
σ = 5: ``blocks.colour_bins``, as in ``colorization``) and Z_L the one-hot bin of L among
``l_bins`` equal bins of [0, 100] (default **50 bins of width 2**). Both terms are per-pixel
means over the target grid (1/4 of the side, every 4th pixel, as colourisation).

**sslab's variant (one shared backbone).** In the paper F₁ and F₂ are two disjoint half-width
networks whose features are concatenated layer by layer, so the full network sees L and ab at
test time. sslab trains and probes one given backbone, so here *one* backbone plays both parts:
it sees the L-only image (Lab (L, 0, 0) rendered to sRGB, the grey image) for F₁ and the ab-only
image (Lab (``chroma_lightness``, a, b) rendered to sRGB, clipped to the gamut: the colours at
one constant lightness) for F₂, both in one forward pass (BatchNorm statistics over both halves),
each sub-task with its own head (``colorization.PixelClassifier`` on ``res5``). Both inputs are
RGB images normalised like any other, so the platform's evaluation on colour images shows the
backbone the union of the two cues it was trained on separately. Splitting the backbone's
channels in two halves would need a backbone with grouped stages, which sslab's trunk is not.

Choices not fixed by an official training code (richzhang/splitbrainauto publishes only the
trained models and their deploy prototxts; methods.md marks the bin counts UNVERIFIED):

- the L bins (50 of width 2) and the ab bins (colourisation's, with its soft encoding);
- no class rebalancing (plain cross-entropy in both directions), but colourisation's grey-image
  mask on the L → ab term (a grey image has no colour to predict);
- the optimiser: colourisation's official Adam (lr 3e-5, β = (0.9, 0.99), weight decay 1e-3,
  as AdamW), batch 40.

Invariance pair: an image and its grey version (pooled ``res5``, L2-normalised), as colourisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.colour_bins import GRID, colourful, gamut_bins, soft_encode
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.losses import soft_cross_entropy
from sslab.methods.pretext.colorization import PixelClassifier, grey_invariance_pair, grey_invariance_views, subsample
from sslab.methods.views import View
from sslab.methods.views.lab import LabView


@dataclass
class SplitBrainConfig(MethodConfig):
    """The split-brain autoencoder's hyperparameters (see the module docstring for their sources)."""

    l_bins: int = hyperparameter(50, "Q_L", "equal bins of L in [0, 100] for the ab → L task", "[2, 100]")
    neighbours: int = hyperparameter(10, "k", "nearest ab bins of a colour's soft encoding", "[1, 64]")
    sigma: float = hyperparameter(5.0, "σ", "Gaussian width of the ab soft encoding, in ab units", "(0, inf)")
    grey_threshold: float = hyperparameter(
        5.0, "grey_threshold", "an image with no |a|, |b| above this trains no L → ab term (grey)", "[0, inf)")
    chroma_lightness: float = hyperparameter(
        50.0, "chroma_lightness", "the constant L at which the ab-only input is rendered", "(0, 100)")
    target_stride: int = hyperparameter(
        4, "target_stride", "targets are predicted at 1/stride of the input's side", "[1, 64]")
    head_width: int = hyperparameter(
        0, "head_width", "channels of each head's 3x3 conv; 0 = the backbone's res5 width", "[0, inf)")
    crop_min_scale: float = hyperparameter(
        0.5, "crop_min_scale", "smallest area fraction of the square random crop", "(0, 1]")
    optim: Optimiser = optimiser(
        optimizer="adamw", base_lr=3e-5, lr_scaling="none", reference_batch=40, weight_decay=1e-3,
        notes={"optimizer": "optimizer family (colourisation's Adam)",
               "base_lr": "learning rate (colourisation's solver: 3e-5 at batch 40)",
               "lr_scaling": "lr = base_lr at any batch [none], or scaled from reference_batch",
               "reference_batch": "colourisation's batch"})


def lightness_bins(lightness: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin index of each L in [0, 100] among ``bins`` equal bins (L = 100 in the last), int64."""
    return (lightness * (bins / 100.0)).floor().clamp(0, bins - 1).long()


class SplitBrain(Method):
    """One backbone, two cross-channel heads: L → ab over ab bins and ab → L over L bins."""

    name = "split_brain"
    Config = SplitBrainConfig
    # 16 epochs of the local profile (~1,250 steps at batch 64) are far too few for colourisation's
    # Adam lr of 3e-5 (tuned for 450k steps): lr 1e-3 with one warm-up epoch. Measured in
    # docs/local-profile.md#split_brain.
    profile_defaults = {"local": {"base_lr": 1e-3, "warmup_epochs": 1}}

    def __init__(self, config: SplitBrainConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        self.register_buffer("bins", gamut_bins(GRID), persistent=False)
        width = config.head_width or backbone.out_dim
        self.ab_head = PixelClassifier(backbone.out_dim, width, len(self.bins))  # F₁: L → ab
        self.l_head = PixelClassifier(backbone.out_dim, width, config.l_bins)  # F₂: ab → L

    @classmethod
    def views(cls, config: SplitBrainConfig, image_size: int) -> list[View]:
        """The grey crop (``lab``), its chroma image (``lab_chroma``) and both targets."""
        return [LabView(size=image_size, scale=(config.crop_min_scale, 1.0), chroma=True,
                        chroma_lightness=config.chroma_lightness)]

    @classmethod
    def invariance_views(cls, config: SplitBrainConfig, image_size: int) -> list[View]:
        return grey_invariance_views(image_size)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """ℓ_cl(F₁(grey), Z_ab) + ℓ_cl(F₂(chroma), Z_L), one backbone pass over both inputs."""
        c = self.config
        with torch.autocast(batch["lab_ab"].device.type, enabled=False):
            ab = subsample(batch["lab_ab"].float(), c.target_stride)
            z_ab = soft_encode(ab, self.bins, c.neighbours, c.sigma)
            mask = colourful(ab, c.grey_threshold).reshape(-1, 1, 1).expand(-1, *ab.shape[-2:])
            l_target = lightness_bins(subsample(batch["lab_l"].float(), c.target_stride)[:, 0], c.l_bins)
        size = tuple(ab.shape[-2:])
        features = self.backbone.features(torch.cat([batch["lab"], batch["lab_chroma"]]), ("res5",))["res5"]
        from_l, from_ab = features.chunk(2)
        loss_ab = soft_cross_entropy(self.ab_head(from_l, size), z_ab, mask)
        loss_l = F.cross_entropy(self.l_head(from_ab, size).float(), l_target)
        loss = loss_ab + loss_l
        return StepOutput(loss, {"loss": loss.detach(), "loss_ab": loss_ab.detach(), "loss_l": loss_l.detach()})

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(grey x)), the pooled res5 features the probes read, L2-normalised."""
        return grey_invariance_pair(self.backbone, batch)
