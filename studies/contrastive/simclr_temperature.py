"""SimCLR's temperature τ (Chen et al. 2020, Table 5 / Appendix B.9; CIFAR-10 code default τ = 0.5).

τ scales the cosine similarities of NT-Xent: a small τ weighs the hardest negatives
most, a large one treats all negatives alike. The paper finds the best τ depends on
the batch size and training length (0.1 on ImageNet at batch 4096, 0.5 on CIFAR-10).

    python studies/contrastive/simclr_temperature.py --seeds 1     # local profile: CPU, minutes
    python studies/contrastive/simclr_temperature.py --profile cifar --seeds 3
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

STUDY = Study(
    name="simclr_temperature",
    method="simclr",
    description="SimCLR NT-Xent temperature τ from 0.05 to 1.0 (CIFAR-10 default: 0.5)",
    grid={"temperature": [0.05, 0.1, 0.2, 0.5, 1.0]},
    grids={"local": {"temperature": [0.1, 0.2, 0.5]}},
    seeds=3,
    findings=(
        Finding("τ = 0.5 beats τ = 0.1 on CIFAR-10", {"temperature": 0.5}, {"temperature": 0.1},
                source="SimCLR App. B.9"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
