"""NPID++: Non-Parametric Instance Discrimination (Wu et al. 2018), as re-implemented in PIRL.

NPID treats every image as its own class: f(v_I) is contrasted with the image's
memory-bank row m_I against N uniformly drawn rows m_I' with the NCE loss (Wu et al.
eq. 3-7; PIRL eq. 3-4). Misra & van der Maaten (2019, sec. 4.1) call their stronger
re-implementation, with many more negatives (N = 32000) and PIRL's memory-bank update,
NPID++; it is exactly PIRL's eq. 5 at λ = 0, so it reuses ``PIRL`` with λ fixed at 0.
The jigsaw head g is still built so that invariance can be measured for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from sslab.methods.blocks.config import hyperparameter
from sslab.methods.contrastive.pirl import PIRL, PIRLConfig


@dataclass
class NPIDConfig(PIRLConfig):
    """PIRL's hyperparameters with λ fixed at 0 (no jigsaw term in the loss)."""

    loss_weight: float = hyperparameter(
        0.0, "λ", "fixed at 0: NPID has no jigsaw term (use 'pirl' for λ > 0)", "[0, 0]"
    )

    def validate(self) -> None:
        if self.loss_weight != 0:
            raise ValueError(
                f"loss_weight (λ) = {self.loss_weight!r} is outside the allowed range [0, 0]: "
                "NPID is PIRL with λ = 0; use the method 'pirl' for λ > 0"
            )
        super().validate()


class NPID(PIRL):
    """NPID++ = PIRL at λ = 0: only the image head f and the memory bank are trained."""

    name = "npid"
    Config = NPIDConfig
