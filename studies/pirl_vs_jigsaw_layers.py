"""PIRL against Jigsaw layer by layer (Misra & van der Maaten 2019, Table 3 and Fig. 3).

PIRL's argument: a pretext task that *predicts* the transformation (Jigsaw) learns covariant
features that peak in an intermediate layer and fall off at res5 (ImageNet linear probes,
conv1, res2..res5: Jigsaw 12.5 / 28.0 / 39.5 / 45.7 / 34.0), while PIRL's features, made
*invariant* to it, keep improving up to res5 (9.0 / 29.0 / 40.0 / 55.0 / 63.6); and PIRL's
representation of an image moves less under the jigsaw transform (Fig. 3: the l2 distance
between the representations of I and I^t). Both methods train the same backbone with the
same budget and seeds; every trial records a linear probe per tap and the invariance samples.

    python studies/pirl_vs_jigsaw_layers.py                  # local profile: CPU, 3 seeds
    python studies/pirl_vs_jigsaw_layers.py --profile cifar  # one GPU per trial
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

PIRL, JIGSAW = {"method": "pirl"}, {"method": "jigsaw"}

STUDY = Study(
    name="pirl_vs_jigsaw_layers",
    methods={"pirl": {}, "jigsaw": {}},
    description="PIRL (λ = 0.5) vs Jigsaw: a linear probe per layer and the invariance to the jigsaw transform",
    seeds=3,
    findings=(
        Finding("PIRL's res5 probe beats Jigsaw's", PIRL, JIGSAW, metric="probe_res5_top1",
                source="PIRL Table 3: 63.6 vs 34.0"),
        Finding("PIRL's res5 probe beats its res4 probe", PIRL, metric="probe_res5_top1",
                worse_metric="probe_res4_top1", source="PIRL Table 3: 63.6 vs 55.0"),
        Finding("Jigsaw peaks below res5: its res4 probe beats its res5 probe", JIGSAW, metric="probe_res4_top1",
                worse_metric="probe_res5_top1", source="PIRL Table 3: 45.7 vs 34.0"),
        Finding("Jigsaw's representation moves more under the jigsaw transform than PIRL's", JIGSAW, PIRL,
                metric="invariance_l2_mean", source="PIRL Fig. 3"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
