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

from sslab.methods.base import Batch, Metrics, StepContext
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, hyperparameter
from sslab.methods.blocks.distributed import all_gather_no_grad, all_gather_with_grad, rank
from sslab.methods.blocks.heads import mlp
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


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float,
                base_temperature: float, form: str = "out") -> torch.Tensor:
    """The supervised contrastive loss over the global batch of every worker (L_out or L_in).

    ``features`` (B, V, D): this worker's V L2-normalised projections of each of B images (the
    official ``[bsz, n_views, D]``); ``labels`` (B,) integers. Projections are gathered from every
    worker with their gradient (``all_gather_with_grad``) and labels without, giving V·N
    candidates for N = B × world size. Every local projection z_i is an anchor (contrast_mode
    'all'); A(i) is every candidate but z_i itself, P(i) those of A(i) with z_i's label. With
    log p_ia = z_i·z_a/τ − log Σ_{a'∈A(i)} exp(z_i·z_a'/τ):

        out: ℓ_i = −(τ/τ_base) · 1/|P(i)| Σ_{p∈P(i)} log p_ip
        in:  ℓ_i = −(τ/τ_base) · log( 1/|P(i)| Σ_{p∈P(i)} p_ip )

    An anchor with P(i) empty has ℓ_i = 0. The result is the mean of ℓ_i over this worker's V·B
    anchors; with DDP's gradient averaging, training equals one worker on the global batch
    (whose loss is the mean over all V·N anchors, the official code's). Computed in float32
    at least, outside autocast, without a host synchronisation.
    """
    if features.dim() != 3 or labels.shape != features.shape[:1]:
        raise ValueError(f"expected features (B, V, D) and labels (B,), got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    if form not in ("out", "in"):
        raise ValueError(f"form = {form!r} is not one of 'out', 'in'")
    if not (temperature > 0 and base_temperature > 0):
        raise ValueError(f"temperature (τ) = {temperature!r} and base temperature = {base_temperature!r} must be > 0")
    with torch.autocast(features.device.type, enabled=False):
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        batch, views = features.shape[:2]
        anchors = torch.cat(features.unbind(1))  # (V·B, D), view-major as the official code
        anchor_labels = labels.repeat(views)
        candidates = all_gather_with_grad(anchors)  # (V·N, D): each worker's V·B rows, in rank order
        candidate_labels = all_gather_no_grad(anchor_labels)
        logits = anchors @ candidates.T / temperature

        columns = torch.arange(len(candidates), device=features.device)
        own = rank() * views * batch + torch.arange(views * batch, device=features.device)
        is_self = own[:, None] == columns[None, :]
        positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
        log_prob = logits - torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
        num_positives = positive.sum(dim=1)
        has_positive = num_positives > 0
        count = num_positives.clamp(min=1).to(log_prob.dtype)
        if form == "out":
            per_anchor = -torch.where(positive, log_prob, 0.0).sum(dim=1) / count
        else:
            # log Σ_{p∈P(i)} p_ip, over a row of zeros where P(i) is empty (no -inf gradient)
            pos_log_prob = torch.where(positive, log_prob, float("-inf"))
            log_sum = torch.logsumexp(torch.where(has_positive[:, None], pos_log_prob, 0.0), dim=1)
            per_anchor = torch.where(has_positive, count.log() - log_sum, 0.0)
        return (temperature / base_temperature) * per_anchor.mean()


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
    base_lr: float = hyperparameter(0.125, "lr", "SGD learning rate per 256 images (README: 0.5 at 1024)", "(0, inf)")
    warmup_epochs: int = hyperparameter(
        10, "warmup_epochs", "linear warm-up before the cosine decay (official: 10 when the batch > 256)", "[0, inf)")


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

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """z = g(f(x)) / ‖g(f(x))‖, B x d (SupConResNet normalises in the model)."""
        return F.normalize(self.projector(self.backbone(images)).float(), dim=1)

    def training_step(self, batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, Metrics]:
        if "label" not in batch:
            raise KeyError("supcon trains on labels: the batch has no 'label' (use a labelled dataset)")
        z = self.project(torch.cat([batch["view_0"], batch["view_1"]]))
        features = torch.stack(z.chunk(2), dim=1)  # (B, 2, d)
        config = self.config
        loss = supcon_loss(features, batch["label"].long(), config.temperature, config.base_temperature,
                           config.loss_form)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(z(x), z(t(x))), the L2-normalised projections the loss compares."""
        return self.project(batch["clean"]), self.project(batch["transformed"])
