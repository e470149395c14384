"""SimCLR: A Simple Framework for Contrastive Learning (Chen et al. 2020, arXiv:2002.05709).

Two random views of every image go through the backbone f and a projection MLP g; the
NT-Xent loss (eq. 1) pulls the two projections of an image together against the other
2N − 2 projections of the global batch (``losses.nt_xent_loss``, negatives from every
data-parallel worker, gradients flowing back to each worker's own rows):

    ℓ_i = −log exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ),   z = g(f(x̃)).

Defaults follow the official code's CIFAR-10 setting (google-research/simclr README:
ResNet-18, batch 512, 1000 epochs, LARS, lr 1.0 scaled linearly per 256 images, weight
decay 1e-6, **τ = 0.5**, colour strength 0.5, no blur; 10 warm-up epochs as in its
``run.py``): τ = 0.5 rather than the ImageNet paper's 0.1 because sslab trains at CIFAR
scale with CIFAR-sized batches, where the README reports 0.5. Choices where the official
code and the ports differ:

- the loss is the mean over the 2N anchors (PyTorch ports) rather than the TF code's sum of
  both directions (twice the value; ``losses.nt_xent_loss``);
- the projection head is the v1 paper's two layers (``blocks.heads.mlp``: Linear-BN-ReLU-
  Linear-BN, hidden width = the backbone's feature width, 128-d output); the official
  code's output BN has a scale and no shift, here it has neither (affine=False);
- BatchNorm statistics are per worker (the official code's global BN is left to
  SyncBatchNorm, not used here).

**With a momentum encoder** (``encoder_momentum`` m > 0; UniGrad's "gradient implementation with
momentum encoder" column, Tao et al. 2022, ``loss_simclr_grad_mm`` in its ``pretrainer.py``,
methods.md 1.5): an EMA copy of f and g (``MomentumTarget``; m rises to 1 on a cosine by default,
UniGrad's m = 0.996) embeds both views under stop-gradient, z₁ᵐ and z₂ᵐ, gathered from every
worker without gradient. The online z₁ and z₂ are the anchors; each is contrasted with **all 2N
momentum embeddings** of the global batch, its positive being the other view's z^m:

    ℓ_i = −log exp(sim(z_i, z_{j(i)}ᵐ)/τ) / Σ_{k=1..2N} exp(sim(z_i, z_kᵐ)/τ),

averaged over the 2N anchors (``momentum_nt_xent_loss``). Nothing is masked: the anchor's own
view from the momentum branch, z_iᵐ, stays among the candidates, as in UniGrad's code (its
softmax runs over the whole gathered [z₁ᵐ; z₂ᵐ]); it is not the anchor itself, which is what
SimCLR masks. This is a loss, not UniGrad's surrogate ⟨sg(g), z⟩: its gradient with respect to
the normalised anchors is UniGrad's (−z_jᵐ + Σ_k softmax_k z_kᵐ)/τ divided by 2N, its value the
cross-entropy. At m = 0 (the default) SimCLR is the paper's, gradients through both views; UniGrad
runs this loss with τ = 0.2 (``moco_t``) and a 3-layer head.
"""

from __future__ import annotations

from dataclasses import dataclass

from sslab.methods.base import Batch, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.heads import mlp
from sslab.methods.blocks.momentum import MomentumTarget, encoder_momentum_schedule
from sslab.methods.losses import momentum_nt_xent_loss, nt_xent_loss
from sslab.methods.views import ImageView
from sslab.methods.siamese.two_view import TwoViewMethod


@dataclass
class SimCLRConfig(MethodConfig):
    """SimCLR's hyperparameters, official CIFAR-10 defaults (see the module docstring)."""

    temperature: float = hyperparameter(0.5, "τ", "NT-Xent temperature (CIFAR: 0.5; ImageNet paper: 0.1)", "(0, inf)")
    projection_dim: int = hyperparameter(128, "d", "output dimension of the projection head g", "[1, inf)")
    projection_hidden_dim: int = hyperparameter(
        0, "projection_hidden_dim", "hidden width of g; 0 = the backbone's feature width (paper)", "[0, inf)")
    projection_layers: int = hyperparameter(2, "projection_layers", "Linear layers in g (v1: 2, v2: 3)", "[1, 8]")
    color_strength: float = hyperparameter(
        0.5, "s", "colour distortion strength: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with p 0.8", "[0, inf)")
    crop_min_scale: float = hyperparameter(0.08, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    blur_prob: float = hyperparameter(0.0, "blur_prob", "Gaussian blur probability (CIFAR: 0, ImageNet: 0.5)", "[0, 1]")
    optim: Optimiser = optimiser(
        optimizer="lars", base_lr=1.0, weight_decay=1e-6, exclude_norm_and_bias=True, warmup_epochs=10,
        notes={"base_lr": "LARS learning rate per 256 images (CIFAR README)",
               "exclude_norm_and_bias": "no weight decay and no LARS adaptation on BatchNorm and biases (official)"})
    encoder_momentum: float = hyperparameter(
        0.0, "m", "momentum encoder's EMA coefficient (start of its schedule); > 0: online anchors against the "
        "momentum branch's embeddings of both views (UniGrad, 0.996); 0 = SimCLR, gradients through both views",
        "[0, 1)")
    encoder_momentum_schedule: str = encoder_momentum_schedule("cosine")


class SimCLR(TwoViewMethod):
    """Backbone f, projection head g, NT-Xent over the global batch (against a momentum copy of f
    and g when ``encoder_momentum`` > 0)."""

    name = "simclr"
    Config = SimCLRConfig
    # 16 epochs on 5,000 CPU images at batch 64: the paper's 10 warm-up epochs would be most of
    # the run, so one warm-up epoch; base lr 1.0 per 256 gives 0.25 at batch 64.
    profile_defaults = {"local": {"warmup_epochs": 1}}

    def __init__(self, config: SimCLRConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        hidden = config.projection_hidden_dim or backbone.out_dim
        self.projector = mlp(backbone.out_dim, hidden, config.projection_dim, config.projection_layers,
                             last_bn=True, last_bn_affine=False)
        # m = 0: no target branch at all (SimCLR proper, gradients through both views)
        self.target = MomentumTarget.from_config(config, backbone, self.projector)

    @classmethod
    def augmentation(cls, config: SimCLRConfig, image_size: int, name: str = "view", copies: int = 2) -> ImageView:
        """SimCLR's t ~ T: random resized crop, flip, colour distortion of strength s (p 0.8),
        grayscale (p 0.2), blur (off on CIFAR)."""
        s = config.color_strength
        return ImageView(name=name, size=image_size, scale=(config.crop_min_scale, 1.0),
                         jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), jitter_prob=0.8, grayscale=0.2,
                         blur_prob=config.blur_prob, copies=copies)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        z1, z2 = self.project(batch["view_0"]), self.project(batch["view_1"])
        if self.target is None:
            loss = nt_xent_loss(z1.float(), z2.float(), self.config.temperature)
        else:
            z1m, z2m = self.target(batch["view_0"]), self.target(batch["view_1"])
            loss = momentum_nt_xent_loss(z1.float(), z2.float(), z1m.float(), z2m.float(), self.config.temperature)
        return StepOutput(loss, {"loss": loss.detach()})


