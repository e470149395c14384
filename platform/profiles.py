"""Profiles: how big a study runs, independent of what it studies.

A study script says *what* to compare (method, base configuration, search
space, seeds); a profile says *how large* each trial is: dataset and subset,
backbone, epochs, batch size, Train workers and GPUs per trial, evaluation
sizes. ``--profile local`` runs on a laptop CPU in minutes; ``--profile cifar``
is the paper-scale CIFAR-10 run with one GPU per trial.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    """Everything about a trial's size and placement (not its hyperparameters)."""

    name: str
    dataset: str = "cifar10"
    #: training images (class-balanced, deterministic subset); None = the whole split
    train_subset: int | None = None
    #: test images used by kNN, probes and invariance; None = the whole split
    test_subset: int | None = None
    arch: str = "resnet18"
    width: int = 64
    cifar_stem: bool = True
    epochs: int = 200
    batch_size: int = 256
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    #: rows of the local shuffle buffer each Train worker draws its batches from (0 = no shuffle)
    shuffle_buffer: int = 4096
    #: Ray Train workers per trial; 0 = no TorchTrainer: the Tune trial's own process trains,
    #: holding one worker's resources, and keeps its epoch checkpoints itself (platform/checkpoints.py)
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    #: how a trial's Train workers are spread over nodes: Ray's PACK, SPREAD or STRICT_SPREAD
    worker_placement: str = "PACK"
    #: where Ray Data's augmentation runs: "prefer" nodes labelled sslab.io/role=augment when
    #: any is up, "require" them (autoscaled clusters), or "any"; $SSLAB_AUGMENT_NODES overrides
    augment_nodes: str = "prefer"
    #: "bf16" enables torch.autocast(bfloat16) on GPU; ignored on CPU
    precision: str = "fp32"
    #: model and 4-D batches in channels_last (NHWC) memory format: faster convolutions on GPUs
    channels_last: bool = False
    #: kNN (Wu et al. 2018): k neighbours, weights exp(s/τ_knn)
    knn_k: int = 200
    knn_temperature: float = 0.07
    #: images (train bank and test queries) of the cheap kNN reported after every epoch;
    #: the last epoch reports the full evaluation instead
    monitor_images: int = 1000
    #: linear probes on frozen, pooled features of every tap
    probe_epochs: int = 100
    #: test images whose invariance distance is measured and kept as samples
    invariance_samples: int = 1000
    #: retries of a trial whose workers or node died, each from its last epoch checkpoint
    #: (Ray Train restarts the worker group; Tune restarts a trial whose driver was lost)
    max_failures: int = 2
    #: torch intra-op threads per Train worker (0 = Ray's default: one per CPU of the worker)
    torch_threads: int = 0
    #: method hyperparameters this profile needs, applied under the study's own settings
    #: (precedence: method defaults < profile < study base < grid point); recorded in config/<name>
    method_defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "num_workers": self.num_workers >= 0,
            "width": self.width >= 1,
            "knn_k": self.knn_k >= 1,
            "probe_epochs": self.probe_epochs >= 1,
            "precision": self.precision in ("fp32", "bf16"),
            "channels_last": isinstance(self.channels_last, bool),
            "worker_placement": self.worker_placement in ("PACK", "SPREAD", "STRICT_SPREAD"),
            "augment_nodes": self.augment_nodes in ("prefer", "require", "any"),
            "max_failures": self.max_failures >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"profile {self.name!r}: {name} = {getattr(self, name)!r} is not allowed")

    def with_overrides(self, **overrides: Any) -> "Profile":
        """A copy with some fields changed; unknown names are refused."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown profile field(s) {unknown}; known: {sorted(known)}")
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    # Minutes on a 2-core laptop CPU: a narrow ResNet-18 on a 5,000-image
    # class-balanced subset of CIFAR-10. Enough to rank settings and to beat a
    # random-init backbone; not enough to reproduce paper numbers.
    #
    # It uses the softmax (InfoNCE) form of the contrastive loss: NCE's
    # normalising constant Z is estimated once, on the first batch, against a
    # still-random memory bank, and in a 4-epoch run the loss then diverges
    # (kNN fell below the random-init baseline); the softmax form needs no Z.
    # lr 0.1 with one warm-up epoch: at λ=0 over 5 epochs kNN reached 0.264
    # against a 0.229 baseline; lr 0.03 gave 0.225, and lr 0.1 without warm-up
    # collapsed in the first epoch and ended at 0.217 (in-process, same subset).
    # Re-measured at commit 8dc2dc6 (seed 0, whole pirl_lambda study): λ=0 now
    # ends at 0.213-0.219 against a 0.223 baseline on both trial paths, while
    # λ = .5 / .75 / 1 reach 0.282 / 0.248 / 0.272: at this scale the jigsaw
    # term is what lifts kNN above the baseline.
    #
    # Each trial trains in its own process (num_workers=0): Ray Train's controller,
    # worker group and dataset coordinator would add about 20 s of start-up to every
    # trial on 2 CPUs (benchmarks/sweep_overhead.py), a quarter of a 5-epoch trial.
    "local": Profile(
        name="local",
        train_subset=5000,
        test_subset=2000,
        width=8,
        epochs=5,
        warmup_epochs=1,
        batch_size=64,
        lr=0.1,
        num_workers=0,
        torch_threads=2,
        probe_epochs=30,
        invariance_samples=500,
        method_defaults={"loss_form": "infonce"},
    ),
    # The CIFAR-10 setting: full data, ResNet-18, one GPU per trial.
    "cifar": Profile(
        name="cifar",
        width=64,
        epochs=200,
        batch_size=256,
        lr=0.03,
        warmup_epochs=5,
        num_workers=1,
        use_gpu=True,
        cpus_per_worker=4,
        precision="bf16",
        channels_last=True,
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
