"""PIRL's temperature τ (Misra & van der Maaten 2019, eq. 3; the paper uses τ = 0.07).

τ scales the similarities s(·,·)/τ against the memory bank: small τ sharpens
the contrast between the positive and the hardest negatives.

    python studies/pirl_temperature.py --seeds 3
    python studies/pirl_temperature.py --profile cifar
"""

from sslab.cli import run
from sslab.plan.study import Study

STUDY = Study(
    name="pirl_temperature",
    method="pirl",
    description="PIRL temperature τ from 0.03 to 0.5 (paper: 0.07)",
    grid={"temperature": [0.03, 0.05, 0.07, 0.1, 0.2, 0.5]},
    grids={"local": {"temperature": [0.05, 0.07, 0.2]}},
    seeds=3,
)

if __name__ == "__main__":
    run(STUDY)
