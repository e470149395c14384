"""What a small CPU profile can learn: train one method on a dataset's subset in this process
(no Ray: the same views, method, optimiser and schedule as a trial) and print the kNN top-1 of
the res5 features after every epoch next to the same backbone at random init.

    python benchmarks/local_profile.py --method pirl --set loss_weight=0.5 --epochs 10 --width 16
    python benchmarks/local_profile.py --method npid --set num_negatives=4096 --set bank_momentum=0
    python benchmarks/local_profile.py --dataset imagefolder:/tmp/digits --seeds 3

It is the quick loop behind the ``local`` profile's choices (src/sslab/plan/profiles.py): a setting
that does not beat random init here will not in a study either. Numbers are per seed; run
``--seeds 3`` before believing a difference.
"""

from __future__ import annotations

import argparse
import ast
import json
import time

import numpy as np
import torch

from sslab import methods
from sslab.methods.base import DataInfo, StepContext
from sslab.methods.blocks.backbone import TAPS, Backbone
from sslab.methods.blocks.optim import build_optimizer, build_schedule
from sslab.methods.views import apply_views
from sslab.data.train_test import load_train_test
from sslab.evaluation.evaluate import evaluation_batches, knn_top1, pooled_features
from sslab.plan.profiles import get_profile
from sslab.engine.device import channels_last_batch
from train_loop import optimisation_step  # noqa: E402 - a sibling script (benchmarks/ is on sys.path)


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_set(items: list[str]) -> dict:
    """``--set NAME=VALUE`` arguments as {name: value}, each value a Python literal or else a string."""
    return {name: _value(value) for name, value in (item.split("=", 1) for item in items)}


def knn(backbone, train, test, stats, k: int, taps: tuple[str, ...] = ("res5",)) -> dict[str, float]:
    """kNN top-1 of the pooled features at each tap."""
    f_train = pooled_features(backbone, train.images, taps, stats=stats)
    f_test = pooled_features(backbone, test.images, taps, stats=stats)
    return {tap: round(knn_top1(f_train[tap], torch.as_tensor(train.labels), f_test[tap],
                                torch.as_tensor(test.labels), k=k), 4) for tap in taps}


def run(args, seed: int, train, test) -> dict:
    """One seed's training on the loaded ``train`` / ``test`` splits (the same for every seed)."""
    torch.set_num_threads(args.threads)
    stats = train.normalization
    cls = methods.get(args.method)
    config = cls.Config.from_flat({**cls.profile_defaults.get("local", {}), **args.set})
    torch.manual_seed(seed)
    backbone = Backbone(args.arch, cifar_stem=True, width=args.width)
    info = DataInfo(num_samples=len(train.labels), num_classes=train.num_classes, image_size=args.image_size)
    method = cls.build(config, backbone, info)
    if args.bf16:
        method.to(memory_format=torch.channels_last)
    baseline = knn(backbone, train, test, stats, args.knn_k, args.taps)
    if len(args.taps) > 1:
        print(f"  seed {seed} random init: kNN per tap {baseline}", flush=True)
    method.before_training(evaluation_batches(train.images, stats))
    views = cls.views(config, args.image_size)
    optimizer = build_optimizer(method.parameter_groups(), config.optim, global_batch=args.batch_size)
    steps = len(train.labels) // args.batch_size
    schedule = build_schedule(optimizer, steps * args.epochs, config.optim.warmup_epochs * steps)
    rng = np.random.default_rng(seed)
    curve, start = [], time.perf_counter()
    for epoch in range(args.epochs):
        method.train()
        order = rng.permutation(len(train.labels))
        losses = []
        for step in range(steps):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            batch = {k: torch.from_numpy(v) for k, v in
                     apply_views(views, train.images[idx], rng, train=True, stats=stats).items()}
            batch["idx"], batch["label"] = torch.from_numpy(idx), torch.from_numpy(train.labels[idx])
            ctx = StepContext(step=schedule.last_epoch, total_steps=steps * args.epochs, epoch=epoch,
                              world_size=1, rank=0)
            if args.bf16:
                batch = channels_last_batch(batch)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                losses.append(float(optimisation_step(method, optimizer, schedule, batch, ctx)))
        per_tap = knn(backbone, train, test, stats, args.knn_k, args.taps)
        curve.append(per_tap["res5"] if "res5" in per_tap else max(per_tap.values()))
        shown = f"kNN {curve[-1]:.3f}" if len(per_tap) == 1 else f"kNN per tap {per_tap}"
        print(f"  seed {seed} epoch {epoch}: loss {np.mean(losses):.3f} {shown} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    base = baseline["res5"] if "res5" in baseline else max(baseline.values())
    return {"seed": seed, "baseline": base, "knn": curve[-1], "curve": curve, "baseline_per_tap": baseline,
            "knn_per_tap": per_tap, "train_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="pirl", choices=methods.names())
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a method hyperparameter")
    local = get_profile("local")  # every size defaults to the local profile's
    parser.add_argument("--dataset", default=local.dataset, help="any study's --dataset (default: the profile's)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default: as many as the profile's {local.steps:,} steps take on the dataset")
    parser.add_argument("--subset", type=int, default=local.train_subset)
    parser.add_argument("--test-subset", type=int, default=local.test_subset)
    parser.add_argument("--image-size", type=int, default=local.image_size)
    parser.add_argument("--width", type=int, default=local.width)
    parser.add_argument("--arch", default=local.arch, help="resnet10 (one block per stage), resnet18, resnet50")
    parser.add_argument("--batch-size", type=int, default=local.batch_size)
    parser.add_argument("--knn-k", type=int, default=local.knn_k)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--bf16", action="store_true",
                        help="train under CPU bfloat16 autocast with channels_last (see cpu_numerics.py)")
    parser.add_argument("--taps", default="res5",
                        help="comma-separated taps whose pooled features the kNN reads, or 'all' (conv1, res2..res5)")
    args = parser.parse_args()
    args.taps = TAPS if args.taps == "all" else tuple(t.strip() for t in args.taps.split(","))
    args.set = parse_set(args.set)
    train, test = load_train_test(args.dataset, image_size=args.image_size, train_subset=args.subset,
                                  test_subset=args.test_subset)  # once: every seed trains on the same images
    if args.epochs is None:  # the local profile's step budget, as a study's trials train it
        budget = local.with_overrides(batch_size=args.batch_size)
        args.epochs = budget.epochs_for(len(train.labels))
        print(budget.budget_note(len(train.labels)), flush=True)
    results = [run(args, seed, train, test) for seed in range(args.seeds)]
    gains = [r["knn"] - r["baseline"] for r in results]
    spread = round(float(np.std(gains, ddof=1)), 4) if len(gains) > 1 else None  # the sample std, as studies
    print(json.dumps({"method": args.method, "set": args.set, "dataset": args.dataset, "epochs": args.epochs,
                      "width": args.width, "arch": args.arch, "bf16": args.bf16, "batch_size": args.batch_size,
                      "subset": args.subset, "gain_mean": round(float(np.mean(gains)), 4), "gain_std": spread,
                      "runs": results}))


if __name__ == "__main__":
    main()
