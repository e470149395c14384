"""The Siamese family side by side: UniGrad's comparison table (Tao et al., CVPR 2022, README
"Main Results") as an sslab study.

UniGrad shows that contrastive (MoCo, SimCLR), asymmetric (BYOL, SimSiam) and
feature-decorrelation (Barlow Twins, VICReg) methods share one gradient form, and that its
own loss matches the best of them. Here every method trains with its own paper defaults
(adapted to the profile by its ``profile_defaults``) on the same backbone, epochs and seeds,
and is compared on kNN and the res5 probe against the random-init baseline.

    python studies/siamese/siamese_unified.py                  # local profile: CPU, one seed
    python studies/siamese/siamese_unified.py --seeds 3        # enough seeds to call a difference
    python studies/siamese/siamese_unified.py --profile cifar  # one GPU per trial, full CIFAR-10
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

METHODS = ("simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "unigrad")

STUDY = Study(
    name="siamese_unified",
    methods={name: {} for name in METHODS},
    description="SimCLR, MoCo v2, BYOL, SimSiam, Barlow Twins, VICReg and UniGrad, each at its paper defaults",
    seeds=1,
    findings=(
        Finding("UniGrad beats SimCLR", {"method": "unigrad"}, {"method": "simclr"},
                source="UniGrad README: 70.3 vs 62.7 (SimCLR as published)"),
        Finding("BYOL beats SimCLR", {"method": "byol"}, {"method": "simclr"},
                source="UniGrad README: 66.5 vs 62.7 as published"),
        Finding("UniGrad beats MoCo v2", {"method": "unigrad"}, {"method": "moco"},
                source="UniGrad README: 70.3 vs 67.4 as published"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
