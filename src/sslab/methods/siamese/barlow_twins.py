"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al. 2021, arXiv:2103.03230).

Two views of every image go through the backbone f and a projector g; each embedding
dimension is standardised over the global batch (BatchNorm without affine parameters) and the
cross-correlation matrix of the two views' standardised embeddings is pushed to the identity
(eq. 1-2):

    C_ij = Σ_b ẑ1_bi ẑ2_bj / N,     L_BT = Σ_i (1 − C_ii)² + λ Σ_i Σ_{j≠i} C_ij².

Defaults follow the official code (facebookresearch/barlowtwins ``main.py``; methods.md 3.5):
λ = 0.0051, LARS (momentum 0.9, η = 0.001, no weight decay and no LARS adaptation on
BatchNorm parameters and biases), lr 0.2 per 256 images scaled linearly, weight decay 1e-6,
10 warm-up epochs then a cosine; the BYOL-style asymmetric views. Choices where the official
code, the CIFAR ports and sslab differ:

- projector: the official head is 8192-8192-8192 on a ResNet-50 (``heads.mlp(2048, 8192, 8192,
  num_layers=3, bias=False)``); the defaults here are the CIFAR ports' 2048-2048-2048 for a
  ResNet-18 (solo-learn ``scripts/pretrain/cifar/barlow.yaml``; lightly's CIFAR-10 benchmark
  ``BarlowTwinsProjectionHead(512, 2048, 2048)``). At D = 2048 solo-learn keeps λ = 0.0051,
  lightly uses 0.005; solo-learn also multiplies the loss by ``scale_loss`` 0.1, which the
  current official code does not do (none here);
- the global batch: the official code standardises with SyncBatchNorm and all-reduces (sums)
  C = bn(z1)ᵀ bn(z2) / N; here every worker gathers the rows of z1 and z2 with their gradients
  (``all_gather_with_grad``) and computes the standardisation and C on the whole global batch
  itself, so that two workers train exactly as one worker on the global batch (solo-learn and
  lightly standardise per worker instead). Each worker multiplies N x D by D x N instead of
  its B x D share: cheap next to the backbone at CIFAR scale, and it moves N·D numbers per
  view instead of D² (less traffic at D ≥ N);
- biases and BatchNorm parameters train at the weights' learning rate (as in solo-learn); the
  official code gives them lr_biases = 0.0048 per 256 images, 1/41.7 of the weights' rate,
  which ``blocks.optim`` has no per-group factor for; the cosine ends at 0, not at 1e-3 of the
  peak;
- views: at 32 px ``ImageView`` applies no blur, which matches the CIFAR ports (solo-learn's
  ``asymmetric.yaml``: blur 0, solarisation 0 / 0.2, crops 0.08-1).

``encoder_momentum`` m > 0 gives the "w/ momentum encoder" variant of UniGrad's table
(Tao et al. 2022, methods.md 1.5-1.6): the second embedding of each pair comes from an EMA copy
of backbone and projector under stop-gradient (``MomentumTarget``), and the loss is made
symmetric over the views:

    L = ½ [L_BT(g(f(x1)), sg(g_m(f_m(x2)))) + L_BT(g(f(x2)), sg(g_m(f_m(x1))))].

UniGrad implements that column by its gradient formula (L2-normalised embeddings, λ = 50 on the
whole of C); here the published loss stays as it is and only its second branch changes, so that
the momentum encoder is the one thing an ablation varies. m = 0 is the published method (one
branch per view, the gradient through both); m → 0⁺ is not that: it is the symmetrised loss
against sg(online).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sslab.methods.base import Batch, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.heads import mlp
from sslab.methods.blocks.momentum import MomentumTarget, encoder_momentum, encoder_momentum_schedule
from sslab.methods.losses import barlow_twins_loss
from sslab.methods.views import Augmented, ImageView, View
from sslab.methods.siamese.two_view import TwoViewMethod

def asymmetric_views(config, image_size: int) -> list[ImageView]:
    """BYOL's two augmentations, as Barlow Twins and VICReg use them (methods.md 3.5): crops of
    area ``crop_min_scale``-1, flip, ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale
    p 0.2, then blur and solarisation with each view's own probability. Keys ``view_0``, ``view_1``."""
    common = dict(size=image_size, scale=(config.crop_min_scale, 1.0), jitter=(0.4, 0.4, 0.2, 0.1),
                  jitter_prob=0.8, grayscale=0.2)
    return [ImageView(name="view_0", blur_prob=config.blur_prob_1, solarize_prob=config.solarize_prob_1, **common),
            ImageView(name="view_1", blur_prob=config.blur_prob_2, solarize_prob=config.solarize_prob_2, **common)]


@dataclass
class DecorrelationConfig(MethodConfig):
    """What Barlow Twins and VICReg (the feature-decorrelation family) share: the projector
    ("expander"), the momentum variant, BYOL's asymmetric views and the LARS recipe."""

    projection_dim: int = hyperparameter(2048, "D", "output dimension of the projector / expander (official: 8192)", "[1, inf)")
    projection_hidden_dim: int = hyperparameter(
        2048, "projection_hidden_dim", "hidden width of the projector (official: 8192)", "[1, inf)")
    projection_layers: int = hyperparameter(3, "projection_layers", "Linear layers in the projector", "[1, 8]")
    encoder_momentum: float = encoder_momentum(0.0)
    encoder_momentum_schedule: str = encoder_momentum_schedule("cosine")
    crop_min_scale: float = hyperparameter(0.08, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    blur_prob_1: float = hyperparameter(1.0, "blur_prob_1", "Gaussian blur probability, first view (none below 20 px)",
                                        "[0, 1]")
    blur_prob_2: float = hyperparameter(0.1, "blur_prob_2", "Gaussian blur probability, second view", "[0, 1]")
    solarize_prob_1: float = hyperparameter(0.0, "solarize_prob_1", "solarisation probability, first view", "[0, 1]")
    solarize_prob_2: float = hyperparameter(0.2, "solarize_prob_2", "solarisation probability, second view", "[0, 1]")
    optim: Optimiser = optimiser(
        optimizer="lars", base_lr=0.2, weight_decay=1e-6, exclude_norm_and_bias=True, warmup_epochs=10,
        notes={"base_lr": "LARS learning rate of the weights per 256 images",
               "exclude_norm_and_bias": "no weight decay and no LARS adaptation on BatchNorm and biases (official)"})


@dataclass
class BarlowTwinsConfig(DecorrelationConfig):
    """Barlow Twins' hyperparameters: official defaults, CIFAR-sized projector (module docstring)."""

    off_diagonal_weight: float = hyperparameter(
        0.0051, "λ", "weight of the redundancy-reduction term Σ_{i≠j} C_ij² (official: 0.0051 at D = 8192)",
        "[0, inf)")


class BarlowTwins(TwoViewMethod):
    """Backbone f, projector g, the Barlow Twins loss on the global batch (optionally against a momentum target)."""

    name = "barlow_twins"
    Config = BarlowTwinsConfig
    # The local profile (16 epochs of a width-8 ResNet-10 with 64-d features, batch 64): a 512-wide
    # projector, as 2048 (the CIFAR ports', for 512-d ResNet-18 features) makes a step several times
    # slower for so small a backbone; base lr 1.0 per 256 images (0.25 at batch 64, SimCLR's CIFAR
    # rate), as LARS at 0.2 scaled down to batch 64 barely moves each layer; one warm-up epoch, as
    # the paper's 10 would be most of the run. Measured in docs/local-profile.md#barlow_twins.
    profile_defaults = {"local": {"projection_dim": 512, "projection_hidden_dim": 512, "base_lr": 1.0,
                                  "warmup_epochs": 1}}

    def __init__(self, config: BarlowTwinsConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        self.projector = mlp(backbone.out_dim, config.projection_hidden_dim, config.projection_dim,
                             config.projection_layers, bias=False)
        self.target = MomentumTarget.from_config(config, self.backbone, self.projector)

    @classmethod
    def views(cls, config: BarlowTwinsConfig, image_size: int) -> list[View]:
        """The two asymmetric augmentations: keys ``view_0`` and ``view_1``."""
        return asymmetric_views(config, image_size)

    @classmethod
    def invariance_views(cls, config: BarlowTwinsConfig, image_size: int) -> list[View]:
        """The whole image and one draw of the first training augmentation t(x)."""
        first = asymmetric_views(config, image_size)[0]
        return [ImageView(name="clean", size=image_size), Augmented(replace(first, name="transformed"))]

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's loss on one pair of embedding batches, and its terms (float32 inputs)."""
        return barlow_twins_loss(z1, z2, self.config.off_diagonal_weight)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        x1, x2 = batch["view_0"], batch["view_1"]
        z1, z2 = self.project(x1), self.project(x2)
        if self.target is not None:  # ½ [L(z1, sg(z2_m)) + L(z2, sg(z1_m))]
            pairs = [(z1, self.target(x2)), (z2, self.target(x1))]
        else:
            pairs = [(z1, z2)]
        with torch.autocast(z1.device.type, enabled=False):  # the loss in float32 under bf16 autocast
            results = [self.loss(a.float(), b.float()) for a, b in pairs]
        loss = sum(value for value, _ in results) / len(results)
        metrics = {key: (sum(terms[key] for _, terms in results) / len(results)).detach() for key in results[0][1]}
        return StepOutput(loss, {"loss": loss.detach(), **metrics})
