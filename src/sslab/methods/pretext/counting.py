"""Counting: Representation Learning by Learning to Count (Noroozi, Pirsiavash & Favaro, ICCV 2017,
arXiv:1708.06734).

A network φ maps an image to a non-negative vector of "counts" of visual primitives. Counts do
not change when an image is downsampled (D, by 2), and the counts of the four tiles of its 2 x 2
grid (T_1..T_4) add up to those of the whole, so φ(D∘x) = Σ_j φ(T_j∘x). That alone is solved by
φ ≡ 0; the contrastive term (eq. 4) asks the tiles of x to add up to something other than the
counts of another image y, by a margin M:

    ℓ(x, y) = ‖φ(D∘x) − Σ_j φ(T_j∘x)‖² + max(0, M − ‖φ(D∘y) − Σ_j φ(T_j∘x)‖²).

Here φ = ReLU(fc(f(·))), f the backbone's pooled res5 features and fc a linear layer to
``num_counts`` outputs (the paper: an AlexNet whose last layer has 1000 outputs, followed by a
ReLU). D∘x and the tiles come from ``TilesView`` (D∘x = the 2 x 2 area mean of a
random crop, the tiles its quarters, each half the crop's side) and go through the backbone in
one call, 5B images, so BatchNorm sees both kinds in one batch. M = 10, the value of the
third-party port (clvrai's TensorFlow code; there is no official code, methods.md section 4) and
the one summaries of the paper quote (methods.md marks the paper's value unverified). M only sets
the scale of φ, which nothing else normalises: the hinge asks two images' counts to lie √M apart.
Choices where sslab departs from that port or fills in what the paper leaves open:

- the hinge acts on the **squared norm** of the difference, as in eq. 4; the port applies it to
  each of the 1000 coordinates and averages them (max(0, M − d_k²) per k), which asks every
  count to differ by √M between two images instead of the vectors by √M in all;
- both terms are summed over the count dimensions and averaged over the global batch (the port
  averages over dimensions too, dividing the loss by 1000);
- y is the previous image of the global batch: φ(D∘x) is gathered from every data-parallel
  worker (with gradient) and rolled by one, so image i is contrasted with image i − 1 (the first
  with the last); no extra view is drawn, and two workers train exactly as one on their batches;
- the crop is a random square of 60-100% of the image's area, flipped, colour-jittered and
  grayscaled once for the whole crop (sslab's; see ``TilesView``); D∘x and the tiles are fed as
  cut, half the image's side (at 32 px: 16 px, res5 2 x 2), as the paper's network takes
  114-px inputs and is evaluated on full-size images (``tile_size`` resamples them instead);
- the fc is initialised N(0, 0.01²) with zero bias (see ``__init__``), so that φ starts small;
- the paper's measures against low-level shortcuts between D∘x and the tiles, and its
  optimiser settings, are not recorded in methods.md; D is area averaging only, and training
  uses the platform's SGD (momentum 0.9, weight decay 1e-4, cosine schedule).

Invariance (``invariance_pair``) is read on the pooled res5 features the probes read,
L2-normalised, between the image and its 2x-downsampled (area) version resampled back to the
image's size (bilinear): the scale half of the counting relation, φ(D∘x) vs the image's own
counts, on the representation a downstream task uses. The tiling half is additive, not an
invariance (a tile is not the image), so it gives no pair of the same image to compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.config import MethodConfig, hyperparameter
from sslab.methods.losses import counting_loss
from sslab.methods.views import ImageView, View
from sslab.methods.views.tiles import NUM_TILES, TilesView


@dataclass
class CountingConfig(MethodConfig):
    """Counting's hyperparameters: the paper's φ width and margin, sslab's crop (module docstring)."""

    num_counts: int = hyperparameter(1000, "φ_dim", "dimension of the count vector φ (paper: 1000)", "[1, inf)")
    margin: float = hyperparameter(
        10.0, "M", "margin of the contrastive term on ‖φ(D∘y) − Σ_j φ(T_j∘x)‖² (port and paper "
        "summaries: 10)", "(0, inf)")
    crop_min_scale: float = hyperparameter(
        0.6, "crop_min_scale", "smallest area fraction of the square crop that D and T are taken from", "(0, 1]")
    color_jitter: float = hyperparameter(
        0.4, "color_jitter", "ColorJitter(s, s, s) strength, one draw per crop (D∘x and tiles alike)", "[0, inf)")
    grayscale: float = hyperparameter(0.2, "grayscale", "probability that a crop is grayscaled", "[0, 1]")
    tile_size: int = hyperparameter(
        0, "tile_size", "side at which D∘x and the tiles reach the backbone (bilinear); 0 = as cut, half the "
        "image's side (the paper's network: 114-px inputs)", "[0, inf)")


class Counting(Method):
    """Count vector φ = ReLU(fc(f(·))), trained so that the tiles' counts add up to the
    downsampled image's and not to another image's (eq. 4)."""

    name = "counting"
    Config = CountingConfig
    # The local profile: tiles at 32 px (tile_size: D∘x and the tiles at the size the probes read, so
    # the backbone is trained and evaluated at one scale), base lr 0.05 per 256 (at 0.2 the loss stayed
    # near M and res5 fell below random init) and one warm-up epoch. Even so counting does not learn
    # visibly in this budget: docs/local-profile.md#counting.
    profile_defaults = {"local": {"tile_size": 32, "base_lr": 0.05, "warmup_epochs": 1}}

    def __init__(self, config: CountingConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        self.counter = nn.Linear(backbone.out_dim, config.num_counts)
        # N(0, 0.01²) weights and zero bias, as Caffe's AlexNet initialises its last layer: φ starts
        # near ‖φ‖ ≈ 1, so the first steps are not driven by the untrained network's Σ_j φ(T_j∘x)
        # ≈ 4 φ(D∘x) (PyTorch's default init gives a pair term of ~800 at the local profile)
        nn.init.normal_(self.counter.weight, std=0.01)
        nn.init.zeros_(self.counter.bias)

    @classmethod
    def views(cls, config: CountingConfig, image_size: int) -> list[View]:
        """D∘x and T_1..T_4∘x of a random crop at the image's (even) size: keys ``count_down``,
        ``count_tiles``."""
        return [TilesView(crop_size=_even(image_size), crop_scale=(config.crop_min_scale, 1.0),
                          jitter=config.color_jitter, grayscale=config.grayscale, output_size=config.tile_size)]

    @classmethod
    def invariance_views(cls, config: CountingConfig, image_size: int) -> list[View]:
        """The image, and (``scaled_down``) the image downsampled by 2 and resampled back to its size."""
        return [ImageView(name="clean", size=image_size),
                TilesView(name="scaled", crop_size=_even(image_size), output_size=image_size)]

    def count(self, images: torch.Tensor) -> torch.Tensor:
        """φ(images): non-negative counts, B x ``num_counts``."""
        return F.relu(self.counter(self.backbone(images)))

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Eq. 4 on D∘x and the tiles (one backbone call); metrics: both terms and the mean ‖φ(D∘x)‖,
        which falls towards 0 if φ collapses."""
        down, tiles = batch["count_down"], batch["count_tiles"]
        b = down.shape[0]
        counts = self.count(torch.cat([down, tiles.flatten(0, 1)])).float()
        down_counts, tile_counts = counts[:b], counts[b:].unflatten(0, (b, NUM_TILES))
        loss, pair, contrast = counting_loss(down_counts, tile_counts, self.config.margin)
        return StepOutput(loss, {"loss": loss.detach(), "pair_term": pair.detach(),
                                 "contrast_term": contrast.detach(),
                                 "count_norm": down_counts.detach().norm(dim=1).mean()})

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(U∘D∘x)): pooled res5 features of the image and of its downsampled-then-upsampled
        copy, L2-normalised."""
        return (self.backbone.unit_features(batch["clean"]),
                self.backbone.unit_features(batch["scaled_down"]))


def _even(size: int) -> int:
    """The largest even side <= ``size`` (the crop is cut into a 2 x 2 grid)."""
    return size - size % 2
