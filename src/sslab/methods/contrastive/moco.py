"""MoCo v2: Momentum Contrast (He et al. 2020, arXiv:1911.05722) with the improvements of Chen et
al. 2020, "Improved Baselines with Momentum Contrastive Learning" (arXiv:2003.04297).

A query encoder (backbone f and projection MLP g) embeds one view of every image; a key encoder,
an EMA of it (θ_k ← m·θ_k + (1 − m)·θ_q, MoCo eq. 2, under stop-gradient), embeds the other.
Each query q contrasts its own image's key k₊ against the K keys of earlier batches held in a
FIFO queue (InfoNCE, MoCo eq. 1):

    L_q = −log exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k in queue} exp(q·k/τ)),   q, k L2-normalised.

After the optimiser step the batch's keys, gathered from every data-parallel worker, replace the
oldest K_step entries of the queue and the key encoder takes its EMA step (``after_step``).

Defaults are MoCo v2's official recipe (facebookresearch/moco ``main_moco.py`` with ``--mlp
--moco-t 0.2 --aug-plus --cos``; methods.md 3.2): m = 0.999 constant, τ = 0.2, 128-d output of a
Linear-ReLU-Linear head without BatchNorm (hidden width = the backbone's feature width, as the
official 2048-2048-128), SGD lr 0.03 per 256 images with momentum 0.9, weight decay 1e-4, cosine
decay, no warm-up (the ``MethodConfig`` defaults), colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8,
grayscale 0.2, crops of 0.2-1 of the image. Where CIFAR-scale data asks for other values, the
MoCo authors' own CIFAR-10 demo (``colab/moco_cifar10_demo.ipynb``) decides:

- **queue K = 4096** (official ImageNet: 65536 of 1.28 M images). The demo uses 4096 on CIFAR-10
  and reports that accuracy saturates there; solo-learn takes 32768 of 50k images. 4096 is a
  multiple of every power-of-two global batch up to 4096 and smaller than the local profile's
  5,000 images: the queue spans less than an epoch, as on ImageNet, so it rarely holds a stale
  key of the very image being queried;
- **no blur** (aug-plus: p 0.5 at 224 px): the demo and solo-learn's CIFAR configs turn it off.

Choices where the official code and the ports differ:

- **symmetric** (off by default, as the paper): both views act as queries, each against the other
  view's key, and the two losses are **averaged** (solo-learn's MoCo v2+, UniGrad's ½ symmetric
  form; the demo sums them, twice the gradient). As in the demo, one queue takes the keys of both
  views, 2N per step (solo-learn keeps one queue per view instead).
- **BatchNorm shuffling.** The official code shuffles the key batch across GPUs so that a query
  and its positive key are not normalised with the statistics of the same images, a signature
  that would let the model spot the positive among the queue's keys from other batches. sslab's
  BatchNorm is per worker. ``bn_splits`` S > 1 emulates the shuffle on each worker as the MoCo
  demo's SplitBatchNorm does: the queries are normalised in S contiguous shards of the local batch,
  the keys in S shards of a random permutation of it, so a query's and its key's statistics come
  from mostly different images. The default S = 1 normalises each view with the whole local batch
  and does not shuffle, like solo-learn's MoCo v2+ (92.9% on CIFAR-10 without it); the demo
  reports that shuffle-BN adds ~4 points after 800 CIFAR epochs.
- **the queue's pointer** is a persistent 0-d device buffer (``queue_ptr``), advanced with tensor
  arithmetic: the write positions (ptr + 0..K_step−1) mod K are computed on the device, so
  writing never waits for the host, and the pointer travels in the checkpoint with the queue.
  Deriving it from ``ctx.step`` instead would tie the queue's state to how the training loop
  counts steps (a change of world size or a restart of the counter would silently misplace keys).
- ``encoder_momentum`` = 0 has no key encoder: the keys are the online network's outputs under
  stop-gradient (the demo notes that this "should fail" to learn well; it is the "w/o momentum
  encoder" point of UniGrad's table).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sslab.methods.base import Batch, State, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, hyperparameter
from sslab.methods.blocks.distributed import all_gather_no_grad
from sslab.methods.blocks.heads import mlp
from sslab.methods.blocks.momentum import MomentumTarget, encoder_momentum, encoder_momentum_schedule
from sslab.methods.losses import info_nce_loss
from sslab.methods.siamese.two_view import TwoViewMethod


@dataclass
class MoCoConfig(MethodConfig):
    """MoCo v2's hyperparameters (see the module docstring); the optimiser fields keep the
    ``MethodConfig`` defaults, which are MoCo's (SGD, lr 0.03 per 256, momentum 0.9, wd 1e-4)."""

    temperature: float = hyperparameter(0.2, "τ", "InfoNCE temperature (v2: 0.2; v1: 0.07)", "(0, inf)")
    queue_size: int = hyperparameter(
        4096, "K", "keys in the FIFO queue of negatives; a multiple of the keys enqueued per step (global "
        "batch, ×2 when symmetric)", "[1, inf)")
    encoder_momentum: float = encoder_momentum(0.999)
    encoder_momentum_schedule: str = encoder_momentum_schedule("constant")
    projection_dim: int = hyperparameter(128, "d", "output dimension of the projection head (queue width)", "[1, inf)")
    projection_hidden_dim: int = hyperparameter(
        0, "projection_hidden_dim", "hidden width of the head; 0 = the backbone's feature width (official)", "[0, inf)")
    symmetric: bool = hyperparameter(
        False, "symmetric", "both views as queries, the two losses averaged (solo-learn's MoCo v2+); "
        "false: view 0 queries, view 1 keys (official)", "{true, false}")
    bn_splits: int = hyperparameter(
        1, "S", "shuffle-BN per worker: queries normalised in S shards of the batch, keys in S shards of a "
        "random permutation (MoCo's CIFAR demo: 8); 1 = no shuffle (solo-learn)", "[1, inf)")
    crop_min_scale: float = hyperparameter(0.2, "crop_min_scale", "smallest area fraction of a random crop", "(0, 1]")
    blur_prob: float = hyperparameter(0.0, "blur_prob", "Gaussian blur probability (CIFAR: 0, ImageNet: 0.5)", "[0, 1]")


class MoCo(TwoViewMethod):
    """Query encoder (backbone, head), EMA key encoder, a queue of K keys, InfoNCE."""

    name = "moco"
    Config = MoCoConfig
    # The paper's defaults learn at the local profile (16 epochs, width-8 ResNet-10, 5,000 images,
    # batch 64: lr 0.0075, K = 4096), so no profile override: docs/local-profile.md#moco.

    def __init__(self, config: MoCoConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        hidden = config.projection_hidden_dim or backbone.out_dim
        self.projector = mlp(backbone.out_dim, hidden, config.projection_dim, hidden_bn=False)
        self.target = MomentumTarget.from_config(config, self.backbone, self.projector)
        # MoCo's initial queue: random unit vectors (rows here; the official code stores D x K)
        self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, config.projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    # --- what the data pipeline must produce --------------------------------------------
    # --- heads --------------------------------------------------------------------------
    def _queries(self, images: torch.Tensor) -> torch.Tensor:
        """q, L2-normalised float32; with S > 1 BatchNorm sees S contiguous shards of the batch."""
        shards = images.chunk(self.config.bn_splits)
        return F.normalize(torch.cat([self.project(x) for x in shards]).float(), dim=1)

    @torch.no_grad()
    def _keys(self, images: torch.Tensor) -> torch.Tensor:
        """k from the key encoder (without one: the query encoder under stop-gradient), L2-normalised
        float32; with S > 1 BatchNorm sees S shards of a random permutation of the batch (shuffle-BN),
        and the keys return in the batch's order."""
        if self.config.bn_splits == 1:
            return F.normalize(self.target_projection(images).float(), dim=1)
        order = torch.randperm(len(images), device=images.device)
        shuffled = torch.cat([self.target_projection(x) for x in images[order].chunk(self.config.bn_splits)])
        keys = torch.empty_like(shuffled).index_copy_(0, order, shuffled)  # undo the permutation
        return F.normalize(keys.float(), dim=1)

    # --- loss ---------------------------------------------------------------------------
    def _check_batch(self, batch_size: int, world_size: int) -> None:
        """Refuse, before any computation, a queue that the keys of a step cannot tile and BatchNorm
        shards that do not split the batch (Python integers: no device synchronisation)."""
        config = self.config
        views = 2 if config.symmetric else 1
        per_step = views * batch_size * world_size
        if config.queue_size % per_step:
            fit = max(per_step, round(config.queue_size / per_step) * per_step)
            raise ValueError(
                f"queue_size (K) = {config.queue_size} is not a multiple of the {per_step} keys enqueued per step "
                f"(global batch = batch {batch_size} x world size {world_size} = {batch_size * world_size}"
                f"{', x 2 views (symmetric)' if views == 2 else ''}); set queue_size to a multiple of {per_step}, "
                f"e.g. {fit}, or change the batch size")
        splits = config.bn_splits
        if splits > 1 and (batch_size % splits or batch_size // splits < 2):
            raise ValueError(f"bn_splits (S) = {splits} must split the batch of {batch_size} images per worker into "
                             "equal shards of at least 2 images; choose a divisor of the batch size, or 1")

    def _loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """InfoNCE of queries q against their keys k (positives) and the queue (negatives), MoCo eq. 1,
        in float32 under autocast too (bf16 keeps ~3 significant digits of each of the K + 1 logits)."""
        with torch.autocast(q.device.type, enabled=False):
            return info_nce_loss((q * k).sum(dim=1), q @ self.queue.T, self.config.temperature)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """InfoNCE of the queries against their keys and the queue; carries the keys (views x B x d,
        enqueued view by view) to ``after_step``."""
        x0, x1 = batch["view_0"], batch["view_1"]
        self._check_batch(len(x0), ctx.world_size)
        q0, k1 = self._queries(x0), self._keys(x1)
        if self.config.symmetric:
            q1, k0 = self._queries(x1), self._keys(x0)
            loss = 0.5 * (self._loss(q0, k1) + self._loss(q1, k0))
            keys = torch.stack([k0, k1])  # views x B x d, enqueued view by view
        else:
            loss = self._loss(q0, k1)
            keys = k1[None]
        return StepOutput(loss, {"loss": loss.detach()}, carry=keys)

    # --- state --------------------------------------------------------------------------
    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write this step's keys (views x B x d, this worker's rows) over the oldest entries of the queue.

        The keys of every worker are gathered first (in rank order, view by view: the queue then
        equals the one a single worker holds after a step on the global batch, and is the same on
        every worker), then written at positions ptr, ptr + 1, ... (mod K), computed on the device.
        """
        gathered = all_gather_no_grad(keys.transpose(0, 1))  # N x views x d, every worker's rows
        rows = gathered.transpose(0, 1).reshape(-1, gathered.shape[-1])  # view 0's N keys, then view 1's
        positions = (self.queue_ptr + torch.arange(len(rows), device=self.queue.device)) % len(self.queue)
        self.queue.index_copy_(0, positions, rows.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + len(rows)) % len(self.queue))

    def after_step(self, batch: Batch, out: StepOutput, ctx: StepContext) -> None:
        """Enqueue the step's keys (``out.carry``) of every worker, then move the key encoder (MoCo eq. 2)."""
        if not isinstance(out.carry, torch.Tensor):
            raise RuntimeError("after_step needs the keys that this method's training_step carries")
        self.enqueue(out.carry)
        super().after_step(batch, out, ctx)  # the key encoder's EMA step

    def kept_in_sync(self) -> list[State]:
        """The queue and its pointer (written from the keys all-gathered over workers, so every replica
        holds the same) and the key encoder (its EMA step from the synchronised online weights)."""
        return [self.queue, self.queue_ptr, *super().kept_in_sync()]

