"""Reconstruction losses: a decoder's pixels against the clean image (denoising autoencoder,
context encoder), and the context encoder's adversarial terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over every element of N x C x H x W, or (``mask``, N x 1 x H x W in {0, 1})
    over the channels of the masked pixels only: Σ m (ŷ − x)² / (C · Σ m), 0 when nothing is masked."""
    if mask is None:
        return F.mse_loss(prediction, target)
    squared = (prediction - target).square() * mask
    return squared.sum() / (mask.sum() * prediction.shape[1]).clamp_min(1.0)


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean over every element of W ⊙ (ŷ − x)² (``nn.MSECriterion``'s mean, gradient scaled by W)."""
    return (weights * (prediction - target).square()).mean()


def generator_adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating GAN loss −log D(ŷ), mean over the batch, from the
    discriminator's logits on the predictions (``Sigmoid`` + ``BCECriterion`` as one stable op)."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's −log D(x) − log(1 − D(ŷ)): the sum of the two means (the official errD)."""
    return (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
            + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
