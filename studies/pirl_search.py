"""A joint search over PIRL's knobs: τ, λ, α, N and P with Optuna's TPE, ASHA stopping weak trials.

The paper's defaults (τ = 0.07, λ = 0.5, α = 0.5, N = 32,000, P = 9!) are the
first point evaluated, so every search reports its best configuration against
them. ASHA stops a trial whose per-epoch kNN trails the others at the same
epoch; the Optuna study is persisted beside the results store
(``<root>/pirl_search/optuna.journal``), so an interrupted search resumes and
can be inspected with Optuna's own tools (``optuna.load_study``).

    python studies/pirl_search.py                       # local: 8 trials or 25 minutes
    python studies/pirl_search.py --profile cifar --trials 64
"""

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sslab.cli import run
from sslab.plan.study import Search, Study

STUDY = Study(
    name="pirl_search",
    method="pirl",
    description="TPE over PIRL's τ, λ, α, N, P with ASHA early stopping, paper defaults first",
    search=Search(
        space={
            "temperature": FloatDistribution(0.03, 0.5, log=True),
            "loss_weight": FloatDistribution(0.0, 1.0),
            "bank_momentum": FloatDistribution(0.0, 0.95),
            "num_negatives": IntDistribution(256, 32000, log=True),
            "num_permutations": CategoricalDistribution([1, 10, 100, 1000, 362880]),
        },
        trials=64,
        budgets={"local": {"trials": 8, "time_budget_s": 25 * 60}},
    ),
)

if __name__ == "__main__":
    run(STUDY)
