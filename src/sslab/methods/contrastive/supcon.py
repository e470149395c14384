"""SupCon: Supervised Contrastive Learning (Khosla et al. 2020, arXiv:2004.11362).

Two random views of every image go through the backbone f and a projection head g whose
output is L2-normalised, z = g(f(x̃)) / ‖g(f(x̃))‖. Every one of the 2N projections of the
global batch is an anchor i; its positives P(i) are the other projections with the same
label (the other view of its own image among them), its candidates A(i) all but itself:

    L_out = Σ_i −1/|P(i)| Σ_{p∈P(i)} log [ exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ) ]   (eq. 2)
    L_in  = Σ_i −log { 1/|P(i)| Σ_{p∈P(i)} exp(z_i·z_p/τ) / Σ_{a∈A(i)} exp(z_i·z_a/τ) }   (eq. 3)

(``supcon_loss``). L_out, the form of the official code (HobbitLong/SupContrast
``losses.SupConLoss``) and the paper's better one, is the default; L_in is ``loss_form='in'``
(L_in ≤ L_out by Jensen). With every label distinct, P(i) is the other view alone and L_out is
SimCLR's NT-Xent (times τ/τ_base). Labels come from the batch's ``label``; they make this a
supervised method, a reference for the self-supervised ones, not one of them.

Defaults follow the official code and its README's CIFAR command (``main_supcon.py
--batch_size 1024 --learning_rate 0.5 --temp 0.1 --cosine``, /work/shared/reference/methods.md
section 2): views from ``TwoCropTransform`` (RandomResizedCrop scale 0.2-1, flip,
ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2), head Linear-ReLU-Linear to 128
without BatchNorm, **τ = 0.1** (the README's SupCon runs; the code's default is 0.07) with the
code's base temperature τ_base = 0.07 kept, so the loss carries the code's factor τ/τ_base =
1.43; contrast_mode 'all' (every view is an anchor); SGD, momentum 0.9, weight decay 1e-4 on
every parameter, lr 0.5 at batch 1024, i.e. 0.125 per 256 scaled linearly. Choices where
sslab departs from the official code:

- data parallelism: the official code runs ``DataParallel`` (the loss sees the whole batch on
  one device); here projections are gathered from every worker with their gradient and labels
  without, and each worker averages the loss over its own 2B anchors (the mean over workers is
  the official mean over all 2N anchors, and the gradients are those of one worker on the
  global batch);
- anchors without a positive (possible only with one view and a label seen once) contribute
  0 and still count in the mean, as the official code does since its NaN fix (72fd989);
  here that is done without branching on the data (clamps and ``torch.where``);
- the schedule: the official code warms up for 10 epochs only when the batch exceeds 256
  (from lr 0.01, per step) and then decays per epoch on a cosine to lr/1000; sslab's
  ``warmup_epochs`` is a fixed 10 (the README's batch is 1024; set 0 for batches ≤ 256), its
  warm-up starts near 0 and its cosine is per step and ends at 0;
- both views pass through the backbone as one batch (the official code's
  ``torch.cat([images[0], images[1]])``), so BatchNorm normalises over the 2B crops together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslab.methods.base import Batch, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.heads import mlp
from sslab.methods.losses import supcon_loss
from sslab.methods.views import ImageView
from sslab.methods.siamese.two_view import TwoViewMethod


def supcon_augmentation(image_size: int, crop_min_scale: float, *, color: bool = True, name: str = "view",
                          copies: int = 2) -> ImageView:
    """SupContrast's ``TwoCropTransform`` recipe: RandomResizedCrop(scale=(crop_min_scale, 1)),
    horizontal flip and, with ``color``, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 and grayscale
    with p 0.2 (``main_ce.py``'s cross-entropy baseline uses the crop and flip alone)."""
    colour = {"jitter": (0.4, 0.4, 0.4, 0.1), "jitter_prob": 0.8, "grayscale": 0.2} if color else \
        {"jitter": 0.0, "jitter_prob": 0.0, "grayscale": 0.0}
    return ImageView(name=name, size=image_size, scale=(crop_min_scale, 1.0), copies=copies, **colour)


@dataclass
class SupConConfig(MethodConfig):
    """SupCon's hyperparameters, official CIFAR defaults (see the module docstring)."""

    temperature: float = hyperparameter(
        0.1, "τ", "temperature of the similarities (README CIFAR runs: 0.1; code default: 0.07)", "(0, inf)")
    base_temperature: float = hyperparameter(
        0.07, "τ_base", "the loss is scaled by τ/τ_base (official code: 0.07)", "(0, inf)")
    loss_form: str = hyperparameter(
        "out", "loss_form", "'out': 1/|P(i)| outside the log (eq. 2, official); 'in': inside (eq. 3)", "{out, in}")
    projection_dim: int = hyperparameter(128, "d", "output dimension of the projection head g", "[1, inf)")
    projection_hidden_dim: int = hyperparameter(
        0, "projection_hidden_dim", "hidden width of g; 0 = the backbone's feature width (official)", "[0, inf)")
    crop_min_scale: float = hyperparameter(0.2, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    optim: Optimiser = optimiser(
        base_lr=0.125, warmup_epochs=10,
        notes={"base_lr": "SGD learning rate per 256 images (README: 0.5 at 1024)",
               "warmup_epochs": "linear warm-up before the cosine decay (official: 10 when the batch > 256)"})


class SupCon(TwoViewMethod):
    """Backbone f, L2-normalised projection head g, supervised contrastive loss over the global batch."""

    name = "supcon"
    Config = SupConConfig
    # 16 epochs on 5,000 CPU images at batch 64: the official 10 warm-up epochs (for batch 1024)
    # would be most of the run, so one; the rest as the paper (lr 0.125 per 256 gives 0.031 at
    # batch 64, τ 0.1). Measured in docs/local-profile.md#supcon.
    profile_defaults = {"local": {"warmup_epochs": 1}}

    def __init__(self, config: SupConConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        hidden = config.projection_hidden_dim or backbone.out_dim
        self.projector = mlp(backbone.out_dim, hidden, config.projection_dim, hidden_bn=False)

    @classmethod
    def augmentation(cls, config: SupConConfig, image_size: int, name: str = "view", copies: int = 2) -> ImageView:
        """SupContrast's TwoCropTransform: MoCo v2's recipe without blur (``supcon_augmentation``)."""
        return supcon_augmentation(image_size, config.crop_min_scale, name=name, copies=copies)

    @classmethod
    def reads_labels(cls, config: SupConConfig) -> bool:
        """The positives of an anchor are the images of its class."""
        return True

    def embedding(self, representation: torch.Tensor) -> torch.Tensor:
        """z = g(h) / ‖g(h)‖, B x d (SupConResNet normalises in the model; ``project`` of images: h = f(x))."""
        return F.normalize(self.projector(representation).float(), dim=1)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        if "label" not in batch:
            raise KeyError("supcon trains on labels: the batch has no 'label' (use a labelled dataset)")
        z = self.project(torch.cat([batch["view_0"], batch["view_1"]]))
        features = torch.stack(z.chunk(2), dim=1)  # (B, 2, d)
        config = self.config
        loss = supcon_loss(features, batch["label"].long(), config.temperature, config.base_temperature,
                           config.loss_form)
        return StepOutput(loss, {"loss": loss.detach()})

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(z(x), z(t(x))), the L2-normalised projections the loss compares."""
        return self.project(batch["clean"]), self.project(batch["transformed"])
