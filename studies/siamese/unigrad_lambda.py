"""UniGrad's λ and ρ (Tao et al., CVPR 2022; official defaults λ = 100, ρ = 0.99).

λ weighs the negative gradient λ·F z₁ against the positive −z₂ᵐ; ρ is the EMA momentum of the
correlation matrix F that stands in for every negative. Too small a λ lets the
representation collapse; too large a one spends the update on decorrelation.

    python studies/siamese/unigrad_lambda.py                  # local profile: CPU
    python studies/siamese/unigrad_lambda.py --profile cifar  # one GPU per trial, full CIFAR-10
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

STUDY = Study(
    name="unigrad_lambda",
    method="unigrad",
    description="UniGrad λ ∈ {10, 50, 100, 200, 500} × ρ ∈ {0.9, 0.99, 0.999}",
    grid={"lambd": [10.0, 50.0, 100.0, 200.0, 500.0], "rho": [0.9, 0.99, 0.999]},
    # locally λ at the default ρ only: a UniGrad trial takes ~5.5 minutes on 2 cores (its 2048-wide
    # projector and momentum branch), so 3 trials fit the 25 minutes and 6 would not
    grids={"local": {"lambd": [10.0, 100.0, 500.0], "rho": [0.99]}},
    seeds=1,
    findings=(
        Finding("λ = 100 beats λ = 10", {"lambd": 100.0, "rho": 0.99}, {"lambd": 10.0, "rho": 0.99},
                source="UniGrad defaults (configs/unigrad.py)"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
