"""Every classic pretext task on one backbone, budget and seeds: the survey behind PIRL, as one
table of linear probes per layer and kNN against the random-init baseline.

Exemplar-CNN (Dosovitskiy et al. 2014), relative patch location (Doersch et al. 2015), Jigsaw
(Noroozi & Favaro 2016), RotNet (Gidaris et al. 2018), the denoising autoencoder (Vincent et
al. 2008), the context encoder (Pathak et al. 2016), colourisation (Zhang et al. 2016), the
split-brain autoencoder (Zhang et al. 2017), counting (Noroozi et al. 2017) and multi-task
self-supervision (Doersch & Zisserman 2017), each at its paper defaults adapted to the profile
(``profile_defaults`` in each method's file). Pretext features often peak below res5, so read
each method at its best tap (the per-layer probes), not only at the kNN of res5.

    python studies/pretext/pretext_zoo.py                  # local profile: CPU, one seed
    python studies/pretext/pretext_zoo.py --seeds 3
    python studies/pretext/pretext_zoo.py --profile cifar  # one GPU per trial
"""

from sslab.cli import run
from sslab.plan.study import Finding, Study

PRETEXT = ("exemplar", "relative_location", "jigsaw", "rotation", "denoising_ae", "context_encoder",
           "colorization", "split_brain", "counting", "multitask")

STUDY = Study(
    name="pretext_zoo",
    methods={name: {} for name in PRETEXT},
    description="every classic pretext task, same backbone, budget and seeds",
    seeds=1,
    findings=(
        Finding("multi-task beats relative location alone", {"method": "multitask"}, {"method": "relative_location"},
                source="Doersch & Zisserman 2017, Table 2"),
        Finding("multi-task beats colourisation alone", {"method": "multitask"}, {"method": "colorization"},
                source="Doersch & Zisserman 2017, Table 2"),
        Finding("multi-task beats Exemplar alone", {"method": "multitask"}, {"method": "exemplar"},
                source="Doersch & Zisserman 2017, Table 2"),
        Finding("RotNet beats the context encoder", {"method": "rotation"}, {"method": "context_encoder"},
                source="Gidaris et al. 2018, Table 7 (ImageNet conv features)"),
    ),
)

if __name__ == "__main__":
    run(STUDY)
