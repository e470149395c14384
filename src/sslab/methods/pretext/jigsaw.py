"""Jigsaw: Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles (Noroozi &
Favaro, ECCV 2016, arXiv:1603.09246), the covariant baseline PIRL compares with.

An image is cut into a 3 x 3 grid of tiles, the tiles are shuffled by a permutation drawn from a
fixed set of P permutations, and the network predicts *which* permutation was applied: the
paper's context-free network (CFN; the official ``train_val_cfn_jps.prototxt``) sends each tile
through the shared trunk, a per-tile fc6, concatenates the 9 in the order given, then fc7 and
fc8, a P-way softmax over the permutation index:

    ℓ = −log softmax(fc8(fc7([fc6(f(t_π(1))), ..., fc6(f(t_π(9)))])))_π

with f the backbone's pooled res5 features. The tiles and the index come from ``JigsawView``
(``jigsaw`` and ``jigsaw_perm``: output tile k is grid cell perm[k], perm = row ``jigsaw_perm`` of
``permutation_set(P, permutation_seed)``, the greedy maximal-Hamming-distance set of
``blocks/permutations.py``). Metrics: the loss and the top-1 accuracy of the permutation.

Defaults: the official Caffe network's head (fc6 1024 per tile with ReLU and dropout 0.5,
fc7 4096 with ReLU and dropout 0.5, fc8 P) and the paper's **P = 1000** (its choice among the
permutation sets it compares;
VISSL's ResNet-50 config reads a 2000-permutation file, and ships 100 and 10K). The backbone is
sslab's ResNet, so the optimiser is VISSL's ResNet-50 jigsaw recipe (``jigsaw_8gpu_resnet.yaml``):
SGD, momentum 0.9, weight decay 1e-4, lr 0.1 per 256 images, 5 warm-up epochs (VISSL: then
steps at 30/60/90/100 of 105 epochs; here sslab's cosine). Choices where sslab departs:

- the tiles are PIRL's v_I^t (``JigsawView``: a crop of >= 60% of the image, a tile at a random
  offset in each cell, each tile colour-jittered and grayscaled independently), so that Jigsaw
  and PIRL see the same transformation (as VISSL's ResNet jigsaw, the tiles keep their own
  mean and contrast); Noroozi normalises each tile's mean and standard deviation against
  low-level shortcuts: ``tile_normalization=True`` (per channel, as the PyTorch port
  JigsawPuzzlePytorch does);
- VISSL's ResNet head (a BN fc6 per tile straight into a linear P-way layer, no fc7) is not
  followed: the paper's fc6 -> fc7 -> fc8 is, widths as knobs;
- the permutation set maximises the *minimum* Hamming distance (``blocks/permutations.py``),
  Noroozi's and VISSL's default file the *average*.

**BatchNorm** (``bn_statistics``). Training shows the backbone tiles only (8 px at 32-px
images, 1 x 1 at res5), while kNN and the probes read whole images in eval mode through
BatchNorm's running estimates. With ``'tiles'`` those estimates are the tiles' (what VISSL's
ResNet jigsaw does, with 64-px tiles). With ``'images'`` (default) every step also passes the
whole, un-augmented image through the backbone once, without gradient, in train mode; only this
pass updates the running estimates, and the tiles are normalised with their own batch
statistics and leave them alone (``blocks.batchnorm.running_stats_frozen``, as PIRL). The gradients, hence the
trained weights, are the same in both modes; only the statistics the evaluation reads differ.
It costs one forward pass of the batch per step. Measured at the local profile: see
``profile_defaults``.

**Invariance** (PIRL sec. 5.2, Fig. 3 compares PIRL and Jigsaw): the pair is fc7 of the tiles
in their grid order against fc7 of the same tiles shuffled (both after ReLU, L2-normalised).
fc7 is where the network represents the puzzle as a whole, and the only change between the two
is the permutation, the transformation Jigsaw learns to be covariant to. The backbone's own
features of the tiles cannot measure it: a tile's features do not depend on where it is put,
and their mean over the tiles is invariant to the shuffle by construction. (PIRL's pair, f(v_I)
against g(v_I^t), also spans the crop and the per-tile jitter and two different heads: the two
distributions measure related, not identical, transformations.)
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslab.methods.base import Batch, Method, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.batchnorm import follow_images, running_stats_frozen
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.permutations import permutation_set
from sslab.methods.losses import classification
from sslab.methods.views import ImageView, JigsawView, View

NUM_TILES = 9
#: the largest permutation set: VISSL ships 10K; beyond, fc8 alone outgrows any trunk
MAX_PERMUTATIONS = 10000


@dataclass
class JigsawConfig(MethodConfig):
    """Jigsaw's hyperparameters: the paper's P and head, VISSL's ResNet optimiser (module docstring)."""

    num_permutations: int = hyperparameter(
        1000, "P", "size of the permutation set, the classes of fc8 (paper: 1000; VISSL: 2000)",
        f"[2, {MAX_PERMUTATIONS}]")
    permutation_seed: int = hyperparameter(
        0, "permutation_seed", "seed of the greedy maximal-Hamming-distance permutation set", "[0, inf)")
    tile_dim: int = hyperparameter(1024, "fc6", "width of the per-tile fc6 (paper: 1024)", "[1, inf)")
    hidden_dim: int = hyperparameter(4096, "fc7", "width of fc7 over the 9 concatenated tiles (paper: 4096)",
                                     "[1, inf)")
    dropout: float = hyperparameter(0.5, "dropout", "dropout after fc6 and fc7 (paper: 0.5)", "[0, 1)")
    tile_size: int = hyperparameter(
        0, "tile_size",
        "side in pixels at which the tiles reach the backbone (bilinear); 0 = as cut: 4/5 of a grid cell "
        "(8 px at 32-px images; the paper's 64 px of a 225-px crop)", "[0, inf)")
    tile_normalization: bool = hyperparameter(
        False, "tile_normalization",
        "each tile's channels to zero mean and unit std (Noroozi's guard against low-level shortcuts); "
        "false: PIRL's and VISSL's tiles", "{true, false}")
    bn_statistics: str = hyperparameter(
        "images", "bn_statistics",
        "what BatchNorm's running estimates (read by kNN and the probes) track: 'images', a no-gradient pass "
        "of the whole image per step; 'tiles', the training tiles (VISSL)", "{images, tiles}")
    optim: Optimiser = optimiser(
        base_lr=0.1, warmup_epochs=5,
        notes={"base_lr": "SGD learning rate per 256 images (VISSL ResNet-50)",
               "warmup_epochs": "linear warm-up before the cosine decay (VISSL: 5)"})


class Jigsaw(Method):
    """Shared backbone over 9 shuffled tiles, fc6 per tile, fc7, fc8: the permutation's index out of P."""

    name = "jigsaw"
    Config = JigsawConfig
    # The local profile (16 epochs of a width-8 ResNet-10 on 5,000 CPU images, batch 64): the
    # paper's head (9 x 1024 -> 4096) would cost ~15x the backbone's work on 8-px tiles, so a
    # smaller one (fc6 128, fc7 512); P = 100, as the paper's P = 1000 never leaves chance (ln P) in
    # this budget; lr 0.2 per 256 (0.05 at batch 64) and one warm-up epoch, as PIRL's local setting
    # (not tuned). Measured in docs/local-profile.md#jigsaw, with bn_statistics 'images' against
    # 'tiles'.
    profile_defaults = {"local": {"num_permutations": 100, "tile_dim": 128, "hidden_dim": 512, "base_lr": 0.2,
                                  "warmup_epochs": 1}}

    def __init__(self, config: JigsawConfig, backbone: Backbone) -> None:
        super().__init__(config, backbone)
        self.fc6 = nn.Sequential(nn.Linear(backbone.out_dim, config.tile_dim), nn.ReLU(inplace=True),
                                 nn.Dropout(config.dropout))
        self.fc7 = nn.Sequential(nn.Linear(NUM_TILES * config.tile_dim, config.hidden_dim), nn.ReLU(inplace=True),
                                 nn.Dropout(config.dropout))
        self.fc8 = nn.Linear(config.hidden_dim, config.num_permutations)

    # --- what the data pipeline must produce -------------------------------------------
    @classmethod
    def views(cls, config: JigsawConfig, image_size: int) -> list[View]:
        """The shuffled tiles and their permutation index; the whole image too for ``bn_statistics='images'``."""
        jigsaw = [_jigsaw_view(config, image_size)]
        if config.bn_statistics == "tiles":
            return jigsaw
        # the evaluation view's pixels (whole image, no flip, no colour change), drawn in train mode
        return [ImageView(size=image_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter=0.0,
                          grayscale=0.0)] + jigsaw

    @classmethod
    def invariance_views(cls, config: JigsawConfig, image_size: int) -> list[View]:
        """The shuffled tiles and the permutation index, which un-shuffles them."""
        return [_jigsaw_view(config, image_size)]

    # --- heads --------------------------------------------------------------------------
    def puzzle_features(self, tiles: torch.Tensor) -> torch.Tensor:
        """fc7 (after ReLU and dropout) of B x 9 x 3 x p x p tiles in the order given, B x ``hidden_dim``."""
        if tiles.dim() != 5 or tiles.shape[1] != NUM_TILES:
            raise ValueError(f"jigsaw tiles must be B x {NUM_TILES} x 3 x p x p, got {tuple(tiles.shape)}")
        frozen = running_stats_frozen(self.backbone) if self.config.bn_statistics == "images" else nullcontext()
        with frozen:
            per_tile = self.fc6(self.backbone(tiles.flatten(0, 1)))
        return self.fc7(per_tile.reshape(len(tiles), -1))

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Cross-entropy of fc8 over the P permutations against ``jigsaw_perm``."""
        if self.config.bn_statistics == "images":
            follow_images(self.backbone, batch["image"])  # the running estimates follow whole images
        logits = self.fc8(self.puzzle_features(batch["jigsaw"])).float()
        target = batch["jigsaw_perm"].long()
        return StepOutput(*classification(logits, target))

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(fc7 of the tiles in grid order, fc7 of the same tiles shuffled), both L2-normalised;
        the caller chooses train or eval mode."""
        shuffled = batch["jigsaw"]
        perms = permutation_set(self.config.num_permutations, self.config.permutation_seed).to(shuffled.device)
        # shuffled tile k is grid cell perm[k], so grid cell c is shuffled tile argsort(perm)[c]
        inverse = perms[batch["jigsaw_perm"].long()].argsort(dim=1)
        in_order = shuffled[torch.arange(len(shuffled), device=shuffled.device)[:, None], inverse]
        return (F.normalize(self.puzzle_features(in_order).float(), dim=1),
                F.normalize(self.puzzle_features(shuffled).float(), dim=1))


def _jigsaw_view(config: JigsawConfig, image_size: int) -> JigsawView:
    return JigsawView.for_image_size(image_size, num_permutations=config.num_permutations,
                                     permutation_seed=config.permutation_seed, output_size=config.tile_size,
                                     tile_normalization=config.tile_normalization)

