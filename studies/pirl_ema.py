"""PIRL's memory-bank EMA α (Misra & van der Maaten 2019, sec. 3.2; the paper uses α = 0.5).

Each memory-bank row is updated as m_I ← α m_I + (1 − α) f(v_I): α = 0 keeps
only the latest embedding, α → 1 averages over many epochs.

    python studies/pirl_ema.py --seeds 3
    python studies/pirl_ema.py --profile cifar
"""

from sslab.cli import run
from sslab.plan.study import Study

STUDY = Study(
    name="pirl_ema",
    method="pirl",
    description="PIRL memory-bank EMA α from 0 to 0.9 (paper: 0.5)",
    grid={"bank_momentum": [0.0, 0.3, 0.5, 0.7, 0.9]},
    grids={"local": {"bank_momentum": [0.0, 0.5, 0.9]}},
    seeds=3,
)

if __name__ == "__main__":
    run(STUDY)
