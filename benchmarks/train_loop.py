"""sslab's worker loop against a bare PyTorch loop: the same model, batches, forward and backward.

The views are computed once and materialised, so neither side pays for augmentation. sslab's
side is the real loop as a ``local``-profile trial runs it (``run_loop`` with an ``InProcessSession``: in this
process, epoch checkpoints written to disk) reading the materialised Ray Dataset through ``iter_torch_batches`` with the profile's
local shuffle buffer, checking the loss, stepping the LR schedule, averaging step metrics and
checkpointing every epoch. The bare side loops over the same batches held as tensors. Both build
the model from the same seed; the bare loop runs before and after sslab's, to bracket drift.
Epoch times after the first (warm-up) epoch are compared.

    python benchmarks/train_loop.py [--images 2048] [--epochs 4] [--batch 64] [--width 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sslab.methods.base import DataInfo, StepContext
from sslab.methods.views import ImageView, JigsawView, apply_views
from sslab.engine.augment import VIEW_BATCH
from sslab.plan.profiles import Profile
from sslab.checkpoints import EpochCheckpoints
from sslab.engine.sessions import InProcessSession
from sslab.engine.train import TrialRun, run_loop


def bare_epochs(spec: TrialRun, batches: list[dict[str, torch.Tensor]], epochs: int) -> list[float]:
    """The loop a researcher would write by hand: forward, backward, step, the method's state update."""
    _, method = spec.build()
    optim = method.config.optim
    optimizer = torch.optim.SGD(method.parameters(), lr=optim.learning_rate(spec.profile.batch_size),
                                momentum=optim.momentum, weight_decay=optim.weight_decay)
    total = len(batches) * epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"],
                                                   total_steps=total, pct_start=1 / epochs)
    seconds = []
    for epoch in range(epochs):
        method.train()
        start = time.perf_counter()
        for step, batch in enumerate(batches):
            ctx = StepContext(step=epoch * len(batches) + step, total_steps=total, epoch=epoch)
            optimisation_step(method, optimizer, schedule, batch, ctx)
        seconds.append(time.perf_counter() - start)
    return seconds


def optimisation_step(method, optimizer, schedule, batch, ctx) -> torch.Tensor:
    """One bare step: the loss, its backward, the optimiser and schedule, then the method's after_step."""
    out = method(batch, ctx)
    loss = out.loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    method.after_step(batch, out, ctx)
    return loss.detach()


def sslab_fit(spec: TrialRun, dataset, storage: str, name: str) -> tuple[float, list[float]]:
    """Wall seconds of the whole ``fit()`` and the loop's own per-epoch times."""
    reports: list[dict] = []
    start = time.perf_counter()
    # the views are computed once, up front (this benchmark times the loop, not augmentation)
    run_loop(spec, InProcessSession(spec.profile, lambda epoch, rank=0, world_size=1: dataset,
                                    EpochCheckpoints(os.path.join(storage, name)), report=reports.append))
    return time.perf_counter() - start, [row["epoch_s"] for row in reports[-1]["history"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is a warm-up")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 width (64 = the paper's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "train_loop.json"))
    args = parser.parse_args()

    import ray
    import ray.data

    from sslab.data.catalog import load_split

    torch.set_num_threads(args.threads)
    split = load_split("cifar10", "train", subset=args.images, seed=0)
    views = apply_views([ImageView(), JigsawView()], split.images, np.random.default_rng(0), stats=split.normalization)
    columns = {"idx": split.idx, "label": split.labels, **views}
    profile = Profile(name="bench", train_subset=args.images, width=args.width, epochs=args.epochs,
                      batch_size=args.batch, num_workers=0, torch_threads=args.threads)
    config = {"loss_form": "infonce", "num_negatives": 1024, "base_lr": 0.4, "warmup_epochs": 1}
    spec = TrialRun(method="pirl", method_config=config, profile=profile, seed=0,
                     data=DataInfo(num_samples=args.images, num_classes=10, image_size=32))

    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # every dataset execution logs at INFO
    ray.data.DataContext.get_current().enable_progress_bars = False
    # blocks of VIEW_BATCH rows, as the augmentation stage emits them
    dataset = (ray.data.from_items([{k: v[i] for k, v in columns.items()} for i in range(args.images)])
               .repartition(max(1, args.images // VIEW_BATCH)).materialize())
    batches = [
        {k: torch.as_tensor(v[s:s + args.batch]) for k, v in columns.items()}
        for s in range(0, args.images - args.batch + 1, args.batch)
    ]
    bare_before = bare_epochs(spec, batches, args.epochs)  # bare runs on both sides bracket any drift
    with tempfile.TemporaryDirectory() as storage:
        # the difference of a 1-epoch and an E-epoch fit is E-1 steady epochs with everything the
        # platform adds per epoch (checkpoint, report); the in-loop times leave those out
        one_s, _ = sslab_fit(replace(spec, profile=replace(profile, epochs=1)), dataset, storage, "one")
        all_s, loop = sslab_fit(spec, dataset, storage, "all")
    bare_after = bare_epochs(spec, batches, args.epochs)
    ray.shutdown()
    bare = bare_before[1:] + bare_after[1:]

    sslab_s = (all_s - one_s) / (args.epochs - 1)
    loop_s, bare_s = float(np.mean(loop[1:])), float(np.mean(bare))
    overhead = sslab_s / bare_s - 1
    steps = len(batches)
    print(f"training loop: PIRL, ResNet-18 width {args.width}, {args.images} images, batch {args.batch}, "
          f"{steps} steps/epoch, {args.threads} thread(s); epochs 2..{args.epochs}")
    print(f"{'loop':<40}{'s/epoch':>9}{'ms/step':>9}")
    print(f"{'bare PyTorch':<40}{bare_s:>9.2f}{bare_s / steps * 1e3:>9.1f}")
    print(f"{'sslab, batches only (epoch_s)':<40}{loop_s:>9.2f}{loop_s / steps * 1e3:>9.1f}")
    print(f"{'sslab, with checkpoint and report':<40}{sslab_s:>9.2f}{sslab_s / steps * 1e3:>9.1f}")
    spread = float(np.std(bare) / np.mean(bare))
    print(f"sslab overhead: {overhead:+.1%} per epoch (target: at most +5%; the bare loop's own epoch-to-epoch "
          f"spread is ±{spread:.1%}); "
          f"fit() start-up and teardown: {one_s - loop[0]:.1f} s once per trial")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "train_loop", "images": args.images, "batch": args.batch,
                               "width": args.width, "threads": args.threads, "machine": platform.machine(),
                               "bare_epoch_s": bare, "sslab_loop_epoch_s": loop, "sslab_epoch_s": sslab_s,
                               "overhead": overhead, "bare_spread": spread, "fit_startup_s": one_s - loop[0]}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
