"""What reading the next epoch ahead saves: the loop's wait for batches, with and without
``platform.prefetch.EpochBatches``, on the real views of a ``local``-profile trial.

The trial's Ray Data pipeline (``EpochViews``: seeded block order, the method's views, the
profile's local shuffle buffer) is iterated for a few epochs by a stand-in loop: each batch
costs ``--step-ms`` of work and each epoch ends with ``--epoch-end-ms`` (the monitor kNN and the
checkpoint). ``--work busy`` spends those milliseconds in 2-thread matrix products, as training
would (the views then compete with it for the cores); ``--work sleep`` leaves the cores to the
pipeline and measures its latency alone. Reported: seconds per epoch after the first, and the
wait, i.e. those seconds less the work; the two readers alternate, to bracket the machine's drift.

    python benchmarks/epoch_prefetch.py [--method pirl] [--set jigsaw_patch_size=12] [--work busy]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sslab import methods
from sslab.engine.augment import EpochViews, to_ray_dataset
from sslab.data.catalog import load_split
from sslab.data.split import take_subset
from sslab.engine.prefetch import EpochBatches
from sslab.plan.profiles import get_profile
from sslab.engine.train import iter_epoch_batches
from local_profile import parse_set  # noqa: E402 - a sibling script (benchmarks/ is on sys.path)


def work(ms: float, kind: str, a: torch.Tensor) -> None:
    if kind == "sleep":
        time.sleep(ms / 1e3)
        return
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        a @ a


def run(reader: str, views: EpochViews, profile, args, a: torch.Tensor) -> list[float]:
    def batches(epoch: int):  # as the training loop reads them
        return iter_epoch_batches(views(epoch), profile, seed=0, epoch=epoch, rank=0, device=torch.device("cpu"))

    epochs = range(args.epochs)
    ahead = EpochBatches(batches, epochs, depth=profile.prefetch_batches) if reader == "ahead" else None
    seconds = []
    try:
        for epoch in epochs:
            start = time.perf_counter()
            for batch in (ahead.next_epoch() if ahead else batches(epoch)):
                views.to_model_input(batch)  # uint8 views normalised, as the loop does
                work(args.step_ms, args.work, a)
            work(args.epoch_end_ms, args.work, a)
            seconds.append(time.perf_counter() - start)
    finally:
        if ahead:
            ahead.close()
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="pirl", choices=methods.names())
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a method hyperparameter")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each reader, alternating")
    parser.add_argument("--step-ms", type=float, default=60.0, help="work per batch")
    parser.add_argument("--epoch-end-ms", type=float, default=500.0, help="work after each epoch")
    parser.add_argument("--work", choices=("sleep", "busy"), default="busy")
    parser.add_argument("--transfer", choices=("float32", "uint8"), default=None, help="default: the profile's")
    parser.add_argument("--shuffle-buffer", type=int, default=None, help="default: the profile's")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "epoch_prefetch.json"))
    args = parser.parse_args()

    import ray
    import ray.data

    profile = get_profile("local")
    profile = replace(profile, view_transfer=args.transfer or profile.view_transfer,
                      shuffle_buffer=profile.shuffle_buffer if args.shuffle_buffer is None else args.shuffle_buffer)
    torch.set_num_threads(profile.torch_threads)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    train = take_subset(load_split("cifar10", "train", seed=0, image_size=profile.image_size),
                        profile.train_subset, seed=0, what="train")
    cls = methods.get(args.method)
    config = cls.Config.from_flat({**cls.profile_defaults.get("local", {}), **parse_set(args.set)})
    views = EpochViews(to_ray_dataset(train), cls.views(config, profile.image_size), train.normalization, seed=0,
                       transfer=profile.view_transfer)
    a = torch.randn(256, 256)
    steps = profile.train_subset // profile.batch_size
    work_s = (steps * args.step_ms + args.epoch_end_ms) / 1e3
    results: dict[str, list[float]] = {"direct": [], "ahead": []}
    for r in range(args.rounds):
        for reader in (("direct", "ahead") if r % 2 == 0 else ("ahead", "direct")):
            results[reader] += run(reader, views, replace(profile, epochs=args.epochs), args, a)
    ray.shutdown()

    print(f"{args.method} {args.set or ''} views, {profile.train_subset} images, batch {profile.batch_size}, "
          f"shuffle buffer {profile.shuffle_buffer}, {profile.view_transfer} views, {steps} steps of {args.step_ms:.0f} ms + "
          f"{args.epoch_end_ms:.0f} ms per epoch ({args.work}); work {work_s:.2f} s per epoch")
    summary = {}
    for reader, seconds in results.items():
        mean = float(np.mean(seconds))
        summary[reader] = {"epoch_s": seconds, "mean_epoch_s": mean, "mean_wait_s": mean - work_s}
        print(f"  {reader:<7} {mean:6.2f} s per epoch, waiting {mean - work_s:5.2f} s "
              f"(epochs {', '.join(f'{s:.2f}' for s in seconds)})")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "epoch_prefetch", "method": args.method, "set": args.set,
                               "work": args.work, "step_ms": args.step_ms, "epoch_end_ms": args.epoch_end_ms,
                               "work_s": work_s, **summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
