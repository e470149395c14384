"""PIRL: Pretext-Invariant Representation Learning (Misra & van der Maaten 2019, arXiv:1912.01991).

PIRL learns a representation of an image I that is *invariant* to a pretext
transformation t (here: cutting the image into 9 jigsaw patches and shuffling them),
instead of one that predicts t. Two heads sit on one backbone:

    f(v_I)    the image crop      -> backbone -> pooled res5 -> linear -> d dims
    g(v_I^t)  the 9 patches       -> backbone -> pooled res5 -> linear (each patch)
                                  -> concatenate in the (permuted) order given -> linear -> d dims

Both are contrasted with m_I, the image's row of a memory bank (sec. 3.2), against N
negatives m_I' drawn uniformly from the bank:

    L(I) = λ · L_NCE(m_I, g(v_I^t)) + (1 - λ) · L_NCE(m_I, f(v_I))            (eq. 5)

with L_NCE of eq. 3-4 (see ``losses.nce_loss``). After each step the bank moves
towards f(v_I): m_I <- normalise(α m_I + (1 - α) f(v_I)). At λ = 0 this is NPID++
(``npid.py``).

**Other transforms** (``transform``; the paper's sec. 5, "PIRL with other pretext tasks": PIRL
with rotation beats RotNet, and jigsaw + rotation beats both):

- ``"jigsaw"`` (default): the 9 shuffled patches above.
- ``"rotation"``: v_I^t is RotNet's input (``views.rotation.RotationView``: random crop with
  zero padding of 1/8 of the side, horizontal flip) turned by k · 90°, and
  g(v_I^t) = a linear head on its pooled res5 features. k is drawn uniformly from **all four**
  quarter turns, the identity included: t ~ p(T) over RotNet's transformation set, as the jigsaw
  draws from a set that holds the identity permutation; a quarter of the pairs then differ only
  by crop and colour, like NPID's. The L_NCE term against the memory bank is the jigsaw's.
- ``"jigsaw+rotation"`` (sslab's choice of combination): both views of every image, and the
  transform term of eq. 5 is the mean of the two,
  λ · ½ [L_NCE(m_I, g_jig(v_I^jig)) + L_NCE(m_I, g_rot(v_I^rot))] + (1 - λ) · L_NCE(m_I, f(v_I)).
  As far as we know (not checked against the paper's text) the paper draws each image's
  transformation from the union of the two sets; the mean is that loss in expectation when each
  set is drawn with probability ½, computed for every image at once (no per-image choice, which
  would need a data-dependent shape or both forward passes anyway), at twice the cost of g.

Both transforms' g pass their inputs through the backbone with BatchNorm's running estimates
frozen, so those stay the statistics of v_I whatever the transform.

At λ = 1 the image term weighs 1 - λ = 0, so f(v_I) is computed without a graph: it only fills
the memory bank, and the step skips its backward (a 12-px jigsaw step on 2 CPU cores: 105 -> 82
ms, interleaved against λ = 1 - 1e-9). The image head f then gets no gradient, where a zero one
would have let weight decay shrink it by ~1 % over a local run; the bank rows are normalised
either way.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sslab.methods.base import Batch, Method, State, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.batchnorm import running_stats_frozen
from sslab.methods.blocks.config import MethodConfig, Optimiser, hyperparameter, optimiser
from sslab.methods.blocks.distributed import broadcast_from_first_worker_, log_mean_exp_over_workers
from sslab.methods.blocks.memory_bank import MemoryBank
from sslab.methods.losses import estimate_log_z, info_nce_loss, nce_loss
from sslab.methods.views import ImageView, JigsawView, View
from sslab.methods.views.rotation import RotationView

NUM_PATCHES = 9
ALL_PERMUTATIONS = math.factorial(NUM_PATCHES)
#: the value of ``transform`` -> the transformations whose terms it trains, in this order
TRANSFORMS = {"jigsaw": ("jigsaw",), "rotation": ("rotation",), "jigsaw+rotation": ("jigsaw", "rotation")}


@dataclass
class PIRLConfig(MethodConfig):
    """PIRL's hyperparameters with the paper's defaults (sec. 4, "Implementation details").

    Optimiser: SGD, momentum 0.9, weight decay 1e-4, lr 0.12 at batch 1024 (0.03 per 256,
    scaled linearly), cosine decay; the 5 warm-up epochs are sslab's (the CIFAR profile used
    them before the optimiser moved into the method).
    """

    temperature: float = hyperparameter(0.07, "τ", "temperature of the similarities s/τ in eq. 3", "(0, inf)")
    loss_weight: float = hyperparameter(
        0.5, "λ", "weight of the transform (jigsaw) term in eq. 5; 1 - λ weighs the image term", "[0, 1]"
    )
    transform: str = hyperparameter(
        "jigsaw", "T", "the pretext transformation of v_I^t: 'jigsaw' (the paper's), 'rotation' (RotNet's quarter "
        "turns), or 'jigsaw+rotation' (both views, the λ term their mean)", "{jigsaw, rotation, jigsaw+rotation}")
    bank_momentum: float = hyperparameter(0.5, "α", "memory-bank EMA: m_I <- α m_I + (1 - α) f(v_I)", "[0, 1)")
    num_negatives: int = hyperparameter(32000, "N", "negatives drawn from the memory bank per image", "[1, inf)")
    num_permutations: int = hyperparameter(
        ALL_PERMUTATIONS, "P", "size of the jigsaw permutation set; 9! = any permutation",
        f"[1, {ALL_PERMUTATIONS}]",
    )
    jigsaw_patch_size: int = hyperparameter(
        0, "jigsaw_patch_size",
        "side in pixels at which the jigsaw patches reach the backbone (bilinear); 0 = as cut: 4/5 of a "
        "grid cell (8 px at 32-px images; the paper's 64 px of a 255-px crop)", "[0, inf)")
    bank_init: str = hyperparameter(
        "random", "bank_init",
        "'random': rows uniform on the sphere (NPID, PIRL); 'features': each row f(v_I) of the "
        "untrained network, computed before the first step", "{random, features}",
    )
    embedding_dim: int = hyperparameter(128, "d", "dimension of f, g and the memory bank", "[1, inf)")
    loss_form: str = hyperparameter(
        "nce", "loss_form", "'nce' (eq. 3-4) or 'infonce' (softmax cross-entropy over the negatives)", "{nce, infonce}"
    )
    permutation_seed: int = hyperparameter(0, "permutation_seed", "seed of the greedy permutation-set selection", "[0, inf)")
    optim: Optimiser = optimiser(
        base_lr=0.03, warmup_epochs=5,
        notes={"base_lr": "SGD learning rate per 256 images (paper: 0.12 at batch 1024)"})


class PIRL(Method):
    """PIRL with a jigsaw pretext task and a memory bank (Misra & van der Maaten 2019)."""

    name = "pirl"
    Config = PIRLConfig
    needs = ("num_samples",)
    # The local profile (16 epochs of a width-8 ResNet-10 on 5,000 CPU images; measured in
    # docs/local-profile.md#pirl):
    # - the softmax (InfoNCE) form: NCE's normalising constant Z is estimated once, on the first
    #   batch, against a still-random bank, and NPID++ then fell below random init;
    # - bank_init 'features': the rows start as the untrained network's f(v_I), not as noise, so the
    #   bank's positives mean something from the first epoch (with random rows NPID++ needed α = 0 to
    #   learn at all); with it the paper's α = 0.5 is best again;
    # - base lr 0.2 per 256 images (0.05 at batch 64), one warm-up epoch;
    # - jigsaw patches as cut, 8 px (jigsaw_patch_size 0): larger ones lift λ = 1 a little, but cost
    #   ~1.5x a step and take the main job well past 10 minutes, and no size lifts λ = 1 clear of
    #   random init beyond its spread; fp32, as CPU bf16 moved λ = 1's kNN.
    profile_defaults = {"local": {"loss_form": "infonce", "bank_init": "features", "base_lr": 0.2,
                                  "warmup_epochs": 1}}

    def __init__(self, config: PIRLConfig, backbone: Backbone, *, num_samples: int) -> None:
        super().__init__(config, backbone)
        if num_samples < 2:
            raise ValueError(f"num_samples = {num_samples}: the memory bank needs at least 2 images")
        self.num_samples = num_samples
        d = config.embedding_dim
        self.transforms = TRANSFORMS[config.transform]
        self.image_head = nn.Linear(backbone.out_dim, d)  # f
        if "jigsaw" in self.transforms:
            self.patch_head = nn.Linear(backbone.out_dim, d)  # g, per patch ...
            self.jigsaw_head = nn.Linear(NUM_PATCHES * d, d)  # ... then over the 9 concatenated patches
        if "rotation" in self.transforms:
            self.rotation_head = nn.Linear(backbone.out_dim, d)  # g of the rotated image
        self.memory_bank = MemoryBank(num_samples, d)
        self.num_negatives = min(config.num_negatives, num_samples - 1)
        if self.num_negatives < config.num_negatives:
            warnings.warn(
                f"num_negatives (N) = {config.num_negatives} exceeds the {num_samples - 1} other images "
                f"in the memory bank; using N = {self.num_negatives}",
                stacklevel=2,
            )
        # log Z of eq. 3 per loss term, estimated on the first step (NaN until then), as in NPID.
        self.register_buffer("log_z_image", torch.tensor(float("nan")))
        for term in self.transforms:
            self.register_buffer(f"log_z_{term}", torch.tensor(float("nan")))
        # the terms whose log Z is known to be set, so that a step does not ask the device (a
        # host synchronisation) whether it is NaN; forgotten whenever a state_dict is loaded
        self._log_z_set: set[str] = set()
        self.register_load_state_dict_post_hook(lambda module, incompatible: module._log_z_set.clear())

    # --- what the data pipeline must produce -------------------------------------------
    @classmethod
    def views(cls, config: PIRLConfig, image_size: int) -> list[View]:
        """v_I, plus v_I^t of each transform (keys ``jigsaw``, ``rotation``) only when the transform
        term is trained (λ > 0)."""
        transformed = _transform_views(config, image_size) if config.loss_weight > 0 else []
        return [ImageView(size=image_size)] + transformed

    @classmethod
    def invariance_views(cls, config: PIRLConfig, image_size: int) -> list[View]:
        """v_I and v_I^t of the configured transform(s), to measure the invariance of f(v_I) and
        g(v_I^t) at any λ. The rotated image is turned by 90°, 180° or 270° (image i of a batch by
        1 + i mod 3 quarter turns), never 0°, so that the distance measures rotation as RotNet's does."""
        return [ImageView(size=image_size)] + _transform_views(config, image_size, invariance=True)

    def unused_parameters(self) -> list[nn.Parameter]:
        """At λ = 0 the transform heads (g) get no gradient; at λ = 1 the image head (f) gets none."""
        lam = self.config.loss_weight
        transform_heads = [getattr(self, name) for name in ("patch_head", "jigsaw_head", "rotation_head")
                           if hasattr(self, name)]
        heads = transform_heads if lam == 0 else [self.image_head] if lam == 1 else []
        return [p for head in heads for p in head.parameters()]

    # --- heads --------------------------------------------------------------------------
    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """f(v_I), L2-normalised, B x d."""
        return self.embedding(self.backbone(images))

    def embedding(self, representation: torch.Tensor) -> torch.Tensor:
        """f of the backbone's pooled features, L2-normalised, B x d: what eq. 5 and the memory bank compare."""
        return F.normalize(self.image_head(representation).float(), dim=1)

    def embed_jigsaw(self, patches: torch.Tensor) -> torch.Tensor:
        """g(v_I^t), L2-normalised, B x d, from B x 9 x 3 x p x p patches in their permuted order."""
        if patches.dim() != 5 or patches.shape[1] != NUM_PATCHES:
            raise ValueError(f"jigsaw patches must be B x {NUM_PATCHES} x 3 x p x p, got {tuple(patches.shape)}")
        with running_stats_frozen(self.backbone):
            per_patch = self.patch_head(self.backbone(patches.flatten(0, 1)))
        return F.normalize(self.jigsaw_head(per_patch.reshape(len(patches), -1)).float(), dim=1)

    def embed_rotation(self, images: torch.Tensor) -> torch.Tensor:
        """g(v_I^t) of the rotation transform, L2-normalised, B x d, from B x 3 x H x W rotated images."""
        if images.dim() != 4:
            raise ValueError(f"rotated images must be B x 3 x H x W, got {tuple(images.shape)}")
        with running_stats_frozen(self.backbone):
            return F.normalize(self.rotation_head(self.backbone(images)).float(), dim=1)

    def transform_embeddings(self, batch: Batch) -> dict[str, torch.Tensor]:
        """g(v_I^t) of each configured transform, by term name (``jigsaw``, ``rotation``), in ``TRANSFORMS`` order."""
        embed = {"jigsaw": self.embed_jigsaw, "rotation": self.embed_rotation}
        return {term: embed[term](batch[term]) for term in self.transforms}

    # --- loss ---------------------------------------------------------------------------
    def _contrast(self, term: str, emb: torch.Tensor, idx: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """L_NCE(m_I, emb) against the memory-bank rows ``negatives`` (B x N indices; eq. 3-4), in float32."""
        with torch.autocast(emb.device.type, enabled=False):
            pos_sim = self.memory_bank.similarities(emb, idx)
            neg_sim = self.memory_bank.similarities(emb, negatives)
            tau = self.config.temperature
            if self.config.loss_form == "infonce":
                return info_nce_loss(pos_sim, neg_sim, tau)
            log_z = getattr(self, f"log_z_{term}")
            if term not in self._log_z_set:  # asks the device once per run (and after a load)
                if torch.isnan(log_z):  # Z is estimated once, from the first batch (NPID / VISSL)
                    log_z.copy_(log_mean_exp_over_workers(estimate_log_z(pos_sim, neg_sim, tau, self.num_samples)))
                self._log_z_set.add(term)
            return nce_loss(pos_sim, neg_sim, tau, self.num_samples, log_z)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        """Eq. 5 on a batch with keys image, idx and, when λ > 0, the transform's views (jigsaw,
        rotation; jigsaw_perm and rotation_label are not needed). With two transforms the λ term is
        the mean of their L_NCE terms. Metrics: loss, loss_image and loss_<term> per transform.
        Carries f(v_I), detached, for the memory-bank update."""
        lam = self.config.loss_weight
        idx = batch["idx"].long()
        with torch.set_grad_enabled(torch.is_grad_enabled() and lam < 1):  # at λ = 1 f only fills the bank
            f = self.embed_image(batch["image"])
        negatives = self.memory_bank.sample_negatives(len(idx), self.num_negatives)  # N uniform rows per image, shared by every term
        loss_image = self._contrast("image", f, idx, negatives)  # positives: m_I
        loss, terms = loss_image, {term: float("nan") for term in self.transforms}
        if lam > 0:  # at λ = 0 g is skipped entirely, so no transformed view is needed
            terms = {term: self._contrast(term, g, idx, negatives) for term, g in self.transform_embeddings(batch).items()}
            loss = lam * (sum(terms.values()) / len(terms)) + (1 - lam) * loss_image
            terms = {term: value.detach() for term, value in terms.items()}
        metrics = {"loss": loss.detach(), "loss_image": loss_image.detach(),
                   **{f"loss_{term}": value for term, value in terms.items()}}
        return StepOutput(loss, metrics, carry=f.detach())

    # --- state --------------------------------------------------------------------------
    @torch.no_grad()
    def before_training(self, images: Iterable[Batch]) -> None:
        """``bank_init='features'``: m_I = f(v_I) of the untrained network (the un-augmented image,
        BatchNorm on the batch's statistics as in training, its running estimates left alone)
        instead of a random unit vector.

        Not in the official code (NPID and VISSL draw the rows at random): a short run's first
        epoch then contrasts against noise, and, with α = 0, positives that are just the image's
        own features from one epoch before. Measured at the local profile (see
        ``profile_defaults``). Every worker computes the rows; rank 0's are kept (bitwise equal
        replicas on non-deterministic GPUs too).
        """
        if self.config.bank_init != "features":
            return
        was_training, written = self.training, torch.zeros(self.num_samples, dtype=torch.bool)
        self.train()
        try:
            with running_stats_frozen(self.backbone):
                for batch in images:
                    idx = batch["idx"].long().to(self.memory_bank.bank.device)
                    self.memory_bank.bank[idx] = self.embed_image(batch["image"]).to(self.memory_bank.bank.dtype)
                    written[idx.cpu()] = True
        finally:
            self.train(was_training)
        if not bool(written.all()):
            raise ValueError(
                f"bank_init='features' got {int(written.sum())} of the {self.num_samples} training images "
                "before training; the platform must pass every image (or use bank_init='random')"
            )
        broadcast_from_first_worker_(self.memory_bank.bank)

    def after_step(self, batch: Batch, out: StepOutput, ctx: StepContext) -> None:
        """Move m_I towards the step's f(v_I) (``out.carry``; sec. 3.2), all-gathered under DDP."""
        embedding = out.carry
        if not isinstance(embedding, torch.Tensor):
            raise RuntimeError("after_step needs the embeddings that this method's training_step carries")
        if len(embedding) != len(batch["idx"]):
            raise RuntimeError(
                f"after_step got {len(batch['idx'])} indices but the training_step saw "
                f"{len(embedding)} images; call it with the same batch"
            )
        self.memory_bank.update(batch["idx"].long(), embedding, self.config.bank_momentum)

    def kept_in_sync(self) -> list[State]:
        """The memory bank (every write all-gathered first)."""
        return [self.memory_bank]

    @torch.no_grad()
    def invariance_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(v_I), g(v_I^t)), both L2-normalised; the caller chooses train or eval mode. With
        ``jigsaw+rotation`` both pairs are measured: f(v_I) twice against [g_jig; g_rot], 2B rows
        (each image's jigsaw distance, then each image's rotation distance)."""
        f = self.embed_image(batch["image"])
        g = list(self.transform_embeddings(batch).values())
        return (f, g[0]) if len(g) == 1 else (torch.cat([f] * len(g)), torch.cat(g))


def _transform_views(config: PIRLConfig, image_size: int, invariance: bool = False) -> list[View]:
    """The v_I^t views of the configured transform(s): jigsaw patches, an image turned by k · 90°
    (k uniform in 0..3 when training; 1..3, cycling, for ``invariance``)."""
    views: list[View] = []
    for term in TRANSFORMS[config.transform]:
        if term == "jigsaw":
            views.append(_jigsaw_view(config, image_size))
        else:
            views.append(RotationView(name="rotation", size=image_size, all_rotations=False, padding=image_size // 8,
                                      rotations=(1, 2, 3) if invariance else (0, 1, 2, 3)))
    return views


def _jigsaw_view(config: PIRLConfig, image_size: int) -> JigsawView:
    return JigsawView.for_image_size(image_size, num_permutations=config.num_permutations,
                                     permutation_seed=config.permutation_seed, output_size=config.jigsaw_patch_size)
