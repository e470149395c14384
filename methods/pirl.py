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
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslab.methods.backbone import Backbone
from sslab.methods.losses import estimate_log_z, info_nce_loss, nce_loss
from sslab.methods.memory_bank import MemoryBank
from sslab.methods.views import ImageView, JigsawView

NUM_PATCHES = 9
ALL_PERMUTATIONS = math.factorial(NUM_PATCHES)


def hyperparameter(default, symbol: str, help: str, range: str):
    """A config field with its paper symbol (or its own name when the paper has none), a one-line
    help and its allowed range: an interval such as "[0, 1)" or a set such as "{a, b}"."""
    return field(default=default, metadata={"symbol": symbol, "help": help, "range": range})


@dataclass
class PIRLConfig:
    """PIRL's hyperparameters with the paper's defaults (sec. 4, "Implementation details")."""

    temperature: float = hyperparameter(0.07, "τ", "temperature of the similarities s/τ in eq. 3", "(0, inf)")
    loss_weight: float = hyperparameter(
        0.5, "λ", "weight of the jigsaw term in eq. 5; 1 - λ weighs the image term", "[0, 1]"
    )
    bank_momentum: float = hyperparameter(0.5, "α", "memory-bank EMA: m_I <- α m_I + (1 - α) f(v_I)", "[0, 1)")
    num_negatives: int = hyperparameter(32000, "N", "negatives drawn from the memory bank per image", "[1, inf)")
    num_permutations: int = hyperparameter(
        ALL_PERMUTATIONS, "P", "size of the jigsaw permutation set; 9! = any permutation",
        f"[1, {ALL_PERMUTATIONS}]",
    )
    embedding_dim: int = hyperparameter(128, "d", "dimension of f, g and the memory bank", "[1, inf)")
    loss_form: str = hyperparameter(
        "nce", "loss_form", "'nce' (eq. 3-4) or 'infonce' (softmax cross-entropy over the negatives)", "{nce, infonce}"
    )
    permutation_seed: int = hyperparameter(0, "permutation_seed", "seed of the greedy permutation-set selection", "[0, inf)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field, its value and the allowed range, for the first bad field."""
        for f in fields(self):
            _check(f.name, getattr(self, f.name), f.metadata, integer=f.type in ("int", int))


_INTERVAL = re.compile(r"^([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])$")


def _check(name: str, value, meta, integer: bool) -> None:
    """Check ``value`` against ``meta["range"]``: an interval like "[0, 1)" or a set like "{a, b}"."""
    label = f"{name} ({meta['symbol']})" if meta.get("symbol", name) != name else name
    allowed = meta["range"]
    if allowed.startswith("{"):
        if value not in [v.strip() for v in allowed[1:-1].split(",")]:
            raise ValueError(f"{label} = {value!r} is not one of the allowed values {allowed}")
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{label} = {value!r} must be {'an integer' if integer else 'a number'} in {allowed}")
    left, low, high, right = _INTERVAL.match(allowed).groups()
    above = value >= float(low) if left == "[" else value > float(low)
    below = value <= float(high) if right == "]" else value < float(high)
    if not (above and below):  # also catches NaN
        raise ValueError(f"{label} = {value!r} is outside the allowed range {allowed}")


class PIRL(nn.Module):
    """PIRL with a jigsaw pretext task and a memory bank (Misra & van der Maaten 2019)."""

    name = "pirl"
    Config = PIRLConfig

    def __init__(self, config: PIRLConfig, backbone: Backbone, num_samples: int) -> None:
        super().__init__()
        config.validate()
        if num_samples < 2:
            raise ValueError(f"num_samples = {num_samples}: the memory bank needs at least 2 images")
        self.config, self.backbone, self.num_samples = config, backbone, num_samples
        d = config.embedding_dim
        self.image_head = nn.Linear(backbone.out_dim, d)  # f
        self.patch_head = nn.Linear(backbone.out_dim, d)  # g, per patch ...
        self.jigsaw_head = nn.Linear(NUM_PATCHES * d, d)  # ... then over the 9 concatenated patches
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
        self.register_buffer("log_z_jigsaw", torch.tensor(float("nan")))
        self._last_embedding: torch.Tensor | None = None

    # --- what the data pipeline must produce -------------------------------------------
    def _jigsaw_view(self) -> JigsawView:
        c = self.config
        return JigsawView(num_permutations=c.num_permutations, permutation_seed=c.permutation_seed)

    def views(self) -> list[ImageView | JigsawView]:
        """v_I, plus v_I^t only when the jigsaw term is trained (λ > 0)."""
        return [ImageView()] + ([self._jigsaw_view()] if self.config.loss_weight > 0 else [])

    def invariance_views(self) -> list[ImageView | JigsawView]:
        """Both views, to measure the invariance of f(v_I) and g(v_I^t) at any λ."""
        return [ImageView(), self._jigsaw_view()]

    @property
    def has_unused_parameters(self) -> bool:
        """At λ = 0 the jigsaw head g gets no gradient (DDP needs find_unused_parameters)."""
        return self.config.loss_weight == 0

    # --- heads --------------------------------------------------------------------------
    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """f(v_I), L2-normalised, B x d."""
        return F.normalize(self.image_head(self.backbone(images)).float(), dim=1)

    def embed_jigsaw(self, patches: torch.Tensor) -> torch.Tensor:
        """g(v_I^t), L2-normalised, B x d, from B x 9 x 3 x p x p patches in their permuted order."""
        if patches.dim() != 5 or patches.shape[1] != NUM_PATCHES:
            raise ValueError(f"jigsaw patches must be B x {NUM_PATCHES} x 3 x p x p, got {tuple(patches.shape)}")
        with _running_stats_frozen(self.backbone):
            per_patch = self.patch_head(self.backbone(patches.flatten(0, 1)))
        return F.normalize(self.jigsaw_head(per_patch.reshape(len(patches), -1)).float(), dim=1)

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
            if torch.isnan(log_z):  # Z is estimated once, from the first batch (NPID / VISSL)
                log_z.copy_(_mean_over_workers(estimate_log_z(pos_sim, neg_sim, tau, self.num_samples)))
            return nce_loss(pos_sim, neg_sim, tau, self.num_samples, log_z)

    def training_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 5 on a batch with keys image, idx and, when λ > 0, jigsaw (jigsaw_perm is not needed)."""
        lam = self.config.loss_weight
        idx = batch["idx"].long()
        f = self.embed_image(batch["image"])
        negatives = self.memory_bank.sample_negatives(len(idx), self.num_negatives)  # N uniform rows per image, shared by both terms
        loss_image = self._contrast("image", f, idx, negatives)  # positives: m_I
        loss, loss_jigsaw = loss_image, float("nan")
        if lam > 0:  # at λ = 0 g is skipped entirely, so no jigsaw view is needed
            jigsaw = self._contrast("jigsaw", self.embed_jigsaw(batch["jigsaw"]), idx, negatives)
            loss, loss_jigsaw = lam * jigsaw + (1 - lam) * loss_image, jigsaw.item()
        self._last_embedding = f.detach()
        return loss, {"loss": loss.item(), "loss_image": loss_image.item(), "loss_jigsaw": loss_jigsaw}

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Same as ``training_step``, so the platform can wrap the method in DDP."""
        return self.training_step(batch)

    # --- state --------------------------------------------------------------------------
    def after_step(self, batch: dict[str, torch.Tensor]) -> None:
        """Move m_I towards the f(v_I) of the last training step (sec. 3.2), all-gathered under DDP."""
        if self._last_embedding is None:
            raise RuntimeError("after_step needs the embeddings of a preceding training_step on the same batch")
        if len(self._last_embedding) != len(batch["idx"]):
            raise RuntimeError(
                f"after_step got {len(batch['idx'])} indices but the last training_step saw "
                f"{len(self._last_embedding)} images; call it with the same batch"
            )
        self.memory_bank.update(batch["idx"].long(), self._last_embedding, self.config.bank_momentum)
        self._last_embedding = None

    @torch.no_grad()
    def invariance_pair(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(v_I), g(v_I^t)), both L2-normalised; the caller chooses train or eval mode."""
        return self.embed_image(batch["image"]), self.embed_jigsaw(batch["jigsaw"])


@contextmanager
def _running_stats_frozen(module: nn.Module):
    """Patches normalise with their own batch statistics but leave BatchNorm's running estimates alone.

    The running mean/variance are what the frozen backbone uses at evaluation, on whole images;
    tiny jigsaw patches (8x8 on CIFAR) have very different statistics and, passing through the
    trunk after the image in every step, would otherwise overwrite them.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def _mean_over_workers(log_z: torch.Tensor) -> torch.Tensor:
    """log of the workers' mean Z, so that every data-parallel replica uses the same Z (as VISSL)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return log_z
    parts = [torch.empty_like(log_z) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, log_z.contiguous())
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(len(parts))
