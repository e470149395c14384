"""PIRL's λ ablation (Misra & van der Maaten 2019, Table 6 / Fig. 5).

λ weighs the invariance term (memory bank vs. jigsaw view g(v_I^t)) against the
NPID-style term (memory bank vs. image view f(v_I)) in eq. 5; λ = 0 is NPID++.

    python studies/pirl_lambda.py                  # local profile: CPU, minutes
    python studies/pirl_lambda.py --profile cifar  # one GPU per trial, full CIFAR-10
"""

from sslab.platform.study import Study

STUDY = Study(
    name="pirl_lambda",
    method="pirl",
    description="PIRL loss weight λ ∈ {0, .25, .5, .75, 1} (λ=0 is NPID++)",
    grid={"loss_weight": [0.0, 0.25, 0.5, 0.75, 1.0]},
    seeds=1,
    metric="knn_top1",
)

if __name__ == "__main__":
    STUDY.main()
