"""PIRL's number of negatives N (Misra & van der Maaten 2019, Fig. 6; the paper uses N = 32,000).

N negatives are drawn from the memory bank per image for the NCE loss. N is
capped by the dataset: with fewer images than N + 1 the method uses every other
image and the results store records the N actually used (``effective/num_negatives``).

    python studies/pirl_negatives.py --seeds 3
    python studies/pirl_negatives.py --profile cifar
"""

from sslab.cli import run
from sslab.plan.study import Study

STUDY = Study(
    name="pirl_negatives",
    method="pirl",
    description="PIRL negatives N from 256 to 32,000 (paper: 32,000; capped by dataset size)",
    grid={"num_negatives": [256, 1024, 4096, 16384, 32000]},
    grids={"local": {"num_negatives": [256, 1024, 4096]}},
    seeds=3,
)

if __name__ == "__main__":
    run(STUDY)
