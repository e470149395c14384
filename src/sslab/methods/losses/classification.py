"""Classification losses of the pretext tasks (rotation, jigsaw, relative location, Exemplar-CNN,
colourisation) and the supervised baseline: cross-entropies over logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean softmax cross-entropy of ``logits`` (B x C) against integer ``labels``, and the metrics of
    a classification pretext task: the loss and the batch's top-1 accuracy, detached on the device."""
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
    return loss, {"loss": loss.detach(), "accuracy": accuracy}


def surrogate_loss(logits: torch.Tensor, classes: torch.Tensor, seed_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy) of the surrogate classification, without host synchronisation.

    ``logits``: B x K; ``classes``: B, each in 0..K-1, or -1 for an image that is not a seed (weight
    0); ``seed_fraction``: K / N, the expected share of seeds in a batch. The loss is
    Σ_b w_b CE(logits_b, class_b) / (B · seed_fraction) (the plain batch mean when every image is a
    seed); the accuracy is the share of argmax hits among the batch's seeds (0 when it has none).
    """
    weight = (classes >= 0).to(logits.dtype)
    target = classes.clamp(min=0)
    per_image = F.cross_entropy(logits, target, reduction="none")
    loss = (weight * per_image).sum() / (len(classes) * seed_fraction)
    hits = (logits.detach().argmax(dim=1) == target).to(logits.dtype) * weight
    return loss, hits.sum() / weight.sum().clamp(min=1)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over pixels of v · (−Σ_q Z_q log softmax(logits)_q); logits, Z: N x K x h x w, v: N x h x w.
    The log-softmax is taken in float32 at least (half-precision logits are promoted)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    per_pixel = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    return (weights * per_pixel).mean()
