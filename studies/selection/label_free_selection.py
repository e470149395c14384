"""Can a sweep choose without labels? Label-free measures against kNN and the res5 probe.

RankMe (Garrido et al., ICML 2023), α-ReQ (Agrawal et al., NeurIPS 2022), LiDAR (Thilak et
al., ICLR 2024) and alignment/uniformity (Wang & Isola, ICML 2020) are computed at evaluation
without reading a label. This study sweeps SimCLR's τ × lr and VICReg's λ = μ and reports, per
method, how well each measure ranks the configurations (Spearman and Kendall against kNN and the
res5 probe, with bootstrap intervals) and the regret of choosing by it (best kNN minus the kNN of
the configuration it picks): the table ``sslab report label_free_selection`` prints under the
summary. The papers' claims are its findings.

    python studies/selection/label_free_selection.py              # local profile: 12 shorter CPU trials, 2 seeds
    python studies/selection/label_free_selection.py --seeds 3    # narrower spreads, for the findings' verdicts
"""

from sslab.cli import run
from sslab.plan.study import Picks, RanksBetter, Study

SIMCLR = [{"temperature": t, "base_lr": lr} for t in (0.1, 0.5, 1.0) for lr in (0.5, 2.0)]
VICREG = [{"invariance_weight": w, "variance_weight": w} for w in (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)]

STUDY = Study(
    name="label_free_selection",
    methods={"simclr": SIMCLR, "vicreg": VICREG},
    description="label-free measures (RankMe, α-ReQ, LiDAR, alignment/uniformity) against kNN across configurations",
    # two seeds: the fewest that can judge a finding, in the 40 minutes a local run may take (docs/label-free.md)
    seeds=2,
    # 10 of the local profile's 16 epochs, so that twelve configurations × 2 seeds fit those 40 minutes
    profile_changes={"local": {"steps": 780}},
    findings=(
        Picks("RankMe picks SimCLR's configuration within 0.01 kNN of the best", "rankme", "max", method="simclr",
              source="Garrido et al. 2023, Table 1"),
        Picks("RankMe picks VICReg's configuration within 0.01 kNN of the best", "rankme", "max", method="vicreg",
              source="Garrido et al. 2023, Table 1"),
        RanksBetter("LiDAR ranks SimCLR's configurations better than RankMe", "lidar", "max", "rankme", "max",
                    method="simclr", source="Thilak et al. 2024, Table 2"),
        RanksBetter("LiDAR ranks VICReg's configurations better than RankMe", "lidar", "max", "rankme", "max",
                    method="vicreg", source="Thilak et al. 2024, Table 2"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
