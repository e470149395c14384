"""PIRL with other transforms (Misra & van der Maaten 2019, sec. 5.3, "PIRL with other pretext
tasks"): PIRL made invariant to rotation beats RotNet, which predicts it, and PIRL invariant to
both jigsaw and rotation beats either alone.

PIRL's ``transform`` field selects the transform (``methods/contrastive/pirl.py``: one method, three
variants); Jigsaw and RotNet are the covariant methods that predict the same transforms.
Invariance is measured for whichever transform each trial trained with.

    python studies/pirl_transforms.py                  # local profile: CPU
    python studies/pirl_transforms.py --seeds 3
    python studies/pirl_transforms.py --profile cifar  # one GPU per trial
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

STUDY = Study(
    name="pirl_transforms",
    methods={"pirl": [{"transform": "jigsaw"}, {"transform": "rotation"}, {"transform": "jigsaw+rotation"}],
             "jigsaw": {}, "rotation": {}},
    description="PIRL with jigsaw, rotation and both, beside Jigsaw and RotNet",
    seeds=1,
    findings=(
        Finding("PIRL (rotation) beats RotNet", {"method": "pirl", "transform": "rotation"}, {"method": "rotation"},
                source="PIRL sec. 5.3"),
        Finding("PIRL (jigsaw) beats Jigsaw", {"method": "pirl", "transform": "jigsaw"}, {"method": "jigsaw"},
                source="PIRL Table 3"),
        Finding("PIRL (jigsaw + rotation) beats PIRL (jigsaw)", {"method": "pirl", "transform": "jigsaw+rotation"},
                {"method": "pirl", "transform": "jigsaw"}, source="PIRL sec. 5.3"),
        Finding("PIRL (jigsaw + rotation) beats PIRL (rotation)", {"method": "pirl", "transform": "jigsaw+rotation"},
                {"method": "pirl", "transform": "rotation"}, source="PIRL sec. 5.3"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
