"""Does the momentum encoder, not the loss, lift the Siamese methods? (UniGrad, Tao et al.
CVPR 2022, README table: without a momentum encoder the six land at 67.6-67.9 ImageNet linear
top-1; with one at 69.8-70.2.)

Each of the six methods trains with its target branch as the online network under
stop-gradient (``encoder_momentum`` = 0: no EMA at all, not a cosine that climbs from 0) and
as a momentum encoder (m = 0.99 rising to 1 on a cosine; MoCo keeps its constant schedule).
The summary says, per method, whether the momentum encoder helped beyond the seed spread.

The local profile trains one method of each family (MoCo: contrastive, BYOL: asymmetric,
Barlow Twins: decorrelation), 6 trials, so that a seed fits the 2-core machine's 25 minutes
(all six methods take about 28 minutes a seed there); the other profiles train all six.

    python studies/siamese/momentum_encoder.py                 # local profile: CPU, one seed
    python studies/siamese/momentum_encoder.py --seeds 3
    python studies/siamese/momentum_encoder.py --profile cifar # all six, one GPU per trial
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

METHODS = ("simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg")
WITH, WITHOUT = 0.99, 0.0

STUDY = Study(
    name="momentum_encoder",
    methods={name: {} for name in METHODS},
    description="each Siamese method without (m = 0) and with (m = 0.99) a momentum encoder",
    grid={"encoder_momentum": [WITHOUT, WITH]},
    profile_methods={"local": ("moco", "byol", "barlow_twins")},
    seeds=1,
    findings=tuple(
        Finding(f"the momentum encoder helps {name}", {"method": name, "encoder_momentum": WITH},
                {"method": name, "encoder_momentum": WITHOUT}, source="UniGrad README table")
        for name in METHODS
    ),
)

if __name__ == "__main__":
    run(STUDY)
