"""Every loss function of the methods, as pure functions of tensors (no module state), by family:

- ``contrastive``: NCE (PIRL, NPID) and its log Z estimate, InfoNCE (PIRL, MoCo), NT-Xent (SimCLR,
  with or without a momentum branch), SupCon, counting's contrastive loss;
- ``siamese``: BYOL's and SimSiam's regression, UniGrad's unified gradient, Barlow Twins' and
  VICReg's redundancy reduction (and their terms);
- ``classification``: cross-entropy with accuracy (rotation, jigsaw, relative location,
  supervised), Exemplar-CNN's surrogate classes, colourisation's per-pixel soft cross-entropy;
- ``reconstruction``: the denoising autoencoder's and the context encoder's squared errors, the
  context encoder's adversarial terms.

A method imports its loss from here; each is tested against its formula in the method's tests,
and every public function here passes ``torch.autograd.gradcheck``
(``tests/methods/losses/test_loss_gradients.py``, which lists this package's functions, so a new
loss is covered as soon as it exists).
"""

from sslab.methods.losses.classification import classification, soft_cross_entropy, surrogate_loss
from sslab.methods.losses.contrastive import (counting_loss, estimate_log_z, info_nce_loss, momentum_nt_xent_loss,
                                              nce_loss, nt_xent_loss, supcon_loss)
from sslab.methods.losses.reconstruction import (discriminator_loss, generator_adversarial_loss, reconstruction_loss,
                                                 weighted_mse)
from sslab.methods.losses.siamese import (barlow_twins_loss, byol_loss, covariance_term, cross_correlation,
                                          off_diagonal, simsiam_loss, unigrad_loss, variance_term, vicreg_loss)

__all__ = [
    "barlow_twins_loss", "byol_loss", "classification", "counting_loss", "covariance_term", "cross_correlation",
    "discriminator_loss", "estimate_log_z", "generator_adversarial_loss", "info_nce_loss", "momentum_nt_xent_loss",
    "nce_loss", "nt_xent_loss", "off_diagonal", "reconstruction_loss", "simsiam_loss", "soft_cross_entropy",
    "supcon_loss", "surrogate_loss", "unigrad_loss", "variance_term", "vicreg_loss", "weighted_mse",
]
