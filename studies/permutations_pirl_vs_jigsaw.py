"""The number of jigsaw permutations P for PIRL and for Jigsaw (Misra & van der Maaten 2019,
Fig. 6): PIRL's accuracy keeps growing with P (more transforms to be invariant to, at no cost),
while Jigsaw's saturates (a P-way classifier gets harder to train as P grows; Noroozi & Favaro
chose P = 1000).

Both sample their permutations from the same maximal-Hamming-distance sets
(``methods/blocks/permutations.py``) with the same seed.

    python studies/permutations_pirl_vs_jigsaw.py                  # local profile: CPU
    python studies/permutations_pirl_vs_jigsaw.py --seeds 3
    python studies/permutations_pirl_vs_jigsaw.py --profile cifar  # one GPU per trial
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

STUDY = Study(
    name="permutations_pirl_vs_jigsaw",
    methods={"pirl": {}, "jigsaw": {}},
    description="P ∈ {10, 100, 1000} → {10, 100, 1000, 10000} permutations for PIRL and Jigsaw",
    grid={"num_permutations": [10, 100, 1000, 10000]},
    grids={"local": {"num_permutations": [10, 100, 1000]}},
    seeds=1,
    findings=(
        Finding("PIRL with P = 1000 beats PIRL with P = 10", {"method": "pirl", "num_permutations": 1000},
                {"method": "pirl", "num_permutations": 10}, source="PIRL Fig. 6"),
        Finding("PIRL beats Jigsaw at P = 1000", {"method": "pirl", "num_permutations": 1000},
                {"method": "jigsaw", "num_permutations": 1000}, source="PIRL Fig. 6"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
