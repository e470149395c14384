"""PIRL's λ ablation (Misra & van der Maaten 2019, Table 6 / Fig. 5).

λ weighs the invariance term (memory bank vs. jigsaw view g(v_I^t)) against the
NPID-style term (memory bank vs. image view f(v_I)) in eq. 5; λ = 0 is NPID++.

    python studies/pirl_lambda.py                  # local profile: CPU, minutes
    python studies/pirl_lambda.py --profile cifar  # one GPU per trial, full CIFAR-10
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

STUDY = Study(
    name="pirl_lambda",
    method="pirl",
    description="PIRL loss weight λ ∈ {0, .25, .5, .75, 1} (λ=0 is NPID++)",
    grid={"loss_weight": [0.0, 0.25, 0.5, 0.75, 1.0]},
    seeds=1,
    metric="knn_top1",
    findings=(
        Finding("PIRL (λ = 0.5) beats NPID++ (λ = 0)", {"loss_weight": 0.5}, {"loss_weight": 0.0},
                source="PIRL Fig. 5"),
        Finding("λ = 0.5 beats λ = 1 (the jigsaw term alone)", {"loss_weight": 0.5}, {"loss_weight": 1.0},
                source="PIRL Fig. 5"),
        Finding("PIRL's res5 probe beats its res4 probe", {"loss_weight": 0.5}, metric="probe_res5_top1",
                worse_metric="probe_res4_top1", source="PIRL Table 3"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
