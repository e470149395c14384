"""PIRL's number of jigsaw permutations P (Misra & van der Maaten 2019, Fig. 7; PIRL uses all 9!).

The jigsaw view shuffles 9 patches under a permutation drawn from a set of size
P (a greedy max-min Hamming set for P < 9!): P = 1 always applies the same
shuffle, P = 9! = 362,880 allows any.

    python studies/pirl_permutations.py --seeds 3
    python studies/pirl_permutations.py --profile cifar
"""

from sslab.cli import run
from sslab.plan.study import Study

STUDY = Study(
    name="pirl_permutations",
    method="pirl",
    description="PIRL jigsaw permutations P from 1 to 9! (paper: 9!)",
    grid={"num_permutations": [1, 10, 100, 1000, 362880]},
    grids={"local": {"num_permutations": [1, 100, 362880]}},
    seeds=3,
)

if __name__ == "__main__":
    run(STUDY)
