"""Profiles: how big a study runs, independent of what it studies.

A study script says *what* to compare (method, base configuration, search
space, seeds); a profile says *how large* each trial is: dataset and subset,
image size, backbone, epochs, batch size, Train workers and GPUs per trial,
evaluation sizes. How a method is optimised (optimiser, learning rate, warm-up)
is the method's own configuration; a method adapts it to a profile's scale in
``Method.profile_defaults``. ``--profile local`` runs on a laptop CPU in minutes; ``--profile cifar``
is the paper-scale CIFAR-10 run with one GPU per trial.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    """Everything about a trial's size and placement (not its hyperparameters)."""

    name: str
    dataset: str = "cifar10"
    #: training images (class-balanced, deterministic subset); None = the whole split
    train_subset: int | None = None
    #: test images used by kNN, probes, invariance and the label-free measures; None = the whole split
    test_subset: int | None = None
    #: a labelled dataset kNN and the linear probes read instead of the training data (its train
    #: split the bank, its test split the queries; ``--eval-dataset``); None = the training data's own
    #: splits, when they have labels and the study reads them
    eval_dataset: str | None = None
    #: side of the (square) images every dataset is decoded to, and of the views' output
    image_size: int = 32
    arch: str = "resnet18"
    width: int = 64
    cifar_stem: bool = True
    #: passes over the training split; with ``steps`` set, derived from the split's size instead
    epochs: int = 200
    #: the training budget in optimiser steps, when set: a run trains the fewest whole epochs that
    #: take at least this many steps of its training split (``epochs_for``), so that a small
    #: dataset gets as many updates as a large one; None = ``epochs`` whatever the data's size
    steps: int | None = None
    batch_size: int = 256
    #: rows of the local shuffle buffer each Train worker draws its batches from (0 = no shuffle)
    shuffle_buffer: int = 4096
    #: Ray Train workers per trial; 0 = no TorchTrainer: the Tune trial's own process trains,
    #: holding one worker's resources, and keeps its epoch checkpoints itself (src/sslab/checkpoints.py)
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    #: how a trial's Train workers are spread over nodes: Ray's PACK, SPREAD or STRICT_SPREAD
    worker_placement: str = "PACK"
    #: where Ray Data's augmentation runs: "prefer" nodes labelled sslab.io/role=augment when
    #: any is up, "require" them (autoscaled clusters), or "any"; $SSLAB_AUGMENT_NODES overrides
    augment_nodes: str = "prefer"
    #: on GPU: "fp32" (IEEE float32, TF32 off), "tf32" (float32 with TF32 tensor cores for
    #: convolutions and matrix products) or "bf16" (torch.autocast(bfloat16), TF32 for the rest);
    #: ignored on CPU
    precision: str = "fp32"
    #: cuDNN picks the fastest convolution algorithms on the first batch (GPU only)
    cudnn_benchmark: bool = True
    #: torch.compile the backbone (GPU throughput; the first steps of a trial pay for compiling)
    compile: bool = False
    #: batches each worker's data iterator fetches ahead of the one it trains on
    prefetch_batches: int = 2
    #: how views travel from the augmentation tasks to the trainer: "float32" (normalised there)
    #: or "uint8" (pixels: a quarter of the bytes through the object store and the network,
    #: normalised on the training device)
    view_transfer: str = "float32"
    #: benchmarks: synchronise after this many steps of each epoch and after its last, and report
    #: the steady-state images/s in between (0 = off: no extra synchronisation)
    timing_warmup_steps: int = 0
    #: model and 4-D batches in channels_last (NHWC) memory format: faster convolutions on GPUs, and
    #: on the 2-core CPU the local profile was measured on (benchmarks/cpu_numerics.py)
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
    #: test images (the first ones) whose features the label-free measures read (RankMe, α-ReQ,
    #: uniformity), every epoch and at the end alike; and those that compare an image's augmented
    #: views (LiDAR, alignment): the first ``lidar_instances`` test images, ``lidar_views`` views of
    #: each (``evaluation/label_free_metrics.py``)
    label_free_images: int = 1000
    lidar_instances: int = 512
    lidar_views: int = 4
    #: retries of a trial whose workers or node died, each from its last epoch checkpoint
    #: (Ray Train restarts the worker group; Tune restarts a trial whose driver was lost)
    max_failures: int = 2
    #: torch intra-op threads per Train worker (0 = Ray's default: one per CPU of the worker)
    torch_threads: int = 0
    #: a rough training rate (images per device-second) for the estimate a study states before it
    #: runs (src/sslab/plan/cost.py), until the store has finished trials of its own to measure the rate
    images_per_device_s: float = 1000.0
    #: method hyperparameters set for every method that has them, for ad-hoc profiles (tests,
    #: benchmarks); the built-in profiles set none: a method's own ``profile_defaults`` adapt it.
    #: Precedence: method defaults < method's profile_defaults < this < study base < grid point.
    method_defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "steps": self.steps is None or (isinstance(self.steps, int) and self.steps >= 1),
            "batch_size": self.batch_size >= 2,
            "image_size": isinstance(self.image_size, int) and self.image_size >= 8,
            "num_workers": self.num_workers >= 0,
            "width": self.width >= 1,
            "knn_k": self.knn_k >= 1,
            "probe_epochs": self.probe_epochs >= 1,
            "precision": self.precision in ("fp32", "tf32", "bf16"),
            "cudnn_benchmark": isinstance(self.cudnn_benchmark, bool),
            "compile": isinstance(self.compile, bool),
            "view_transfer": self.view_transfer in ("float32", "uint8"),
            "prefetch_batches": isinstance(self.prefetch_batches, int) and self.prefetch_batches >= 0,
            "timing_warmup_steps": isinstance(self.timing_warmup_steps, int) and self.timing_warmup_steps >= 0,
            "channels_last": isinstance(self.channels_last, bool),
            "worker_placement": self.worker_placement in ("PACK", "SPREAD", "STRICT_SPREAD"),
            "augment_nodes": self.augment_nodes in ("prefer", "require", "any"),
            "max_failures": self.max_failures >= 0,
            "label_free_images": isinstance(self.label_free_images, int) and self.label_free_images >= 2,
            "lidar_instances": isinstance(self.lidar_instances, int) and self.lidar_instances >= 2,
            "lidar_views": isinstance(self.lidar_views, int) and self.lidar_views >= 2,
            "images_per_device_s": self.images_per_device_s > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"profile {self.name!r}: {name} = {getattr(self, name)!r} is not allowed")

    def with_overrides(self, **overrides: Any) -> "Profile":
        """A copy with some fields changed; unknown names are refused. Epochs given without
        steps replace a step budget: ``--epochs 3`` means three epochs on any dataset."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown profile field(s) {unknown}; known: {sorted(known)}")
        if "epochs" in overrides and "steps" not in overrides:
            overrides = {**overrides, "steps": None}
        return replace(self, **overrides)

    @property
    def global_batch(self) -> int:
        """Images of one optimiser step: the batch of every Train worker (one without workers)."""
        return self.batch_size * max(1, self.num_workers)

    def steps_per_epoch(self, train_images: int) -> int:
        """Optimiser steps of one epoch of ``train_images`` images: whole global batches, the
        last partial one dropped, as the training loop counts them."""
        return max(1, train_images // self.global_batch)

    def epochs_for(self, train_images: int) -> int:
        """The epochs a run on ``train_images`` training images trains: ``epochs``, or with a
        step budget the fewest whole epochs that reach ``steps``."""
        if self.steps is None:
            return self.epochs
        return max(1, math.ceil(self.steps / self.steps_per_epoch(train_images)))

    def for_train_images(self, train_images: int) -> "Profile":
        """This profile with ``epochs`` set for a training split of ``train_images`` images
        (what every part of a run that counts epochs reads: the schedule, checkpoints, ASHA)."""
        return replace(self, epochs=self.epochs_for(train_images))

    def budget_note(self, train_images: int) -> str | None:
        """One line saying how a step budget became epochs on this data; None without one."""
        if self.steps is None:
            return None
        per_epoch, epochs = self.steps_per_epoch(train_images), self.epochs_for(train_images)
        return (f"profile {self.name}: {self.steps:,} optimiser steps = {epochs} epoch(s) of {train_images:,} "
                f"images ({per_epoch} steps of {self.global_batch}; {epochs * per_epoch:,} in all); "
                "--epochs N trains N epochs instead")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def backbone_name(self) -> str:
        """The backbone this profile trains, e.g. ``resnet18-w8-cifar`` (baselines are keyed by it)."""
        return f"{self.arch}-w{self.width}{'-cifar' if self.cifar_stem else ''}"


PROFILES: dict[str, Profile] = {
    # Minutes on a 2-core laptop CPU: a width-8 ResNet-10 (ResNet-18's four stages and taps, one
    # block each) on a 5,000-image class-balanced subset of CIFAR-10. Enough to rank settings and to
    # beat a random-init backbone; not enough to reproduce paper numbers. Methods adapt their
    # optimiser and loss to this scale in their own ``profile_defaults``.
    #
    # Why these settings (chosen with benchmarks/local_profile.py; the measurements and the commands
    # that made them are in docs/local-profile.md#the-profile):
    # - ResNet-10 w8: in the same time it learns more than ResNet-18 w8, and wider learns less;
    # - a budget of 1,248 optimiser steps (``steps``): 16 epochs of the 5,000-image subset, which
    #   keep the λ ablation (five trials and the baseline) under about 10 minutes on 2 cores, and
    #   as many updates for a smaller dataset (57 epochs of 1,437 images), which 16 would starve;
    # - batch 64: a smaller batch was no better than a lower lr;
    # - channels_last convolutions: the same results (to the rounding of another summation order),
    #   faster on some 2-core hosts and about even on others.
    #
    # Each trial trains in its own process (num_workers=0): Ray Train's controller,
    # worker group and dataset coordinator would add about 20 s of start-up to every
    # trial on 2 CPUs (benchmarks/sweep_overhead.py). Its views are seeded by (seed, epoch):
    # the same command gives the same result.
    "local": Profile(
        name="local",
        train_subset=5000,
        test_subset=2000,
        arch="resnet10",
        width=8,
        epochs=16,  # what ``steps`` gives on the 5,000-image subset; other data gets its own
        steps=1248,
        batch_size=64,
        num_workers=0,
        torch_threads=2,
        channels_last=True,
        probe_epochs=30,
        invariance_samples=500,
        # the label-free measures on 512 test images, LiDAR and alignment on 128 of them x 4 views:
        # within the 3 % of a trial that they may cost (docs/label-free.md#cost)
        label_free_images=512,
        lidar_instances=128,
        lidar_views=4,
        images_per_device_s=850.0,  # the main job's trials on 2 cores
    ),
    # The CIFAR-10 setting: full data, ResNet-18, one GPU per trial.
    "cifar": Profile(
        name="cifar",
        width=64,
        epochs=200,
        batch_size=256,
        num_workers=1,
        use_gpu=True,
        cpus_per_worker=4,
        precision="bf16",
        channels_last=True,
        view_transfer="uint8",
        images_per_device_s=8000.0,  # the throughput target of benchmarks/gpu_throughput.py, not yet measured
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
