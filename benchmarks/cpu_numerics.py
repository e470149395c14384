"""Milliseconds per training step of every method on the CPU, at the ``local`` profile's model and
batch, under three numerics settings: float32 (NCHW), float32 + channels_last (NHWC), and bfloat16
autocast + channels_last.

Each method trains with its ``local`` ``profile_defaults`` (``--set`` adds to them) on views
computed once for ``--images`` CIFAR-10 images; the first ``--warmup`` steps of each setting are
not timed (oneDNN picks its kernels there). The settings run in turn, each from the same seed,
and the whole round is repeated ``--rounds`` times so that drift of the machine shows up as
spread rather than as a difference between settings.

What it measured, and why the ``local`` profile trains channels_last: docs/performance.md and
docs/local-profile.md.

    python benchmarks/cpu_numerics.py [--methods pirl simclr] [--set jigsaw_patch_size=12] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sslab import methods
from sslab.methods.base import DataInfo, StepContext
from sslab.methods.views import apply_views
from sslab.data.catalog import load_split
from sslab.plan.profiles import get_profile
from sslab.engine.device import channels_last_batch
from sslab.engine.train import TrialRun
from local_profile import parse_set  # noqa: E402 - a sibling script (benchmarks/ is on sys.path)
from train_loop import optimisation_step  # noqa: E402

#: label -> (bf16 autocast, channels_last)
SETTINGS = {"fp32": (False, False), "fp32 + channels_last": (False, True), "bf16 + channels_last": (True, True)}


def _batches(name: str, config: dict, split, batch: int, steps: int) -> list[dict[str, torch.Tensor]]:
    cls = methods.get(name)
    views = apply_views(cls.views(cls.Config.from_flat(config), split.images.shape[1]), split.images,
                        np.random.default_rng(0), train=True, stats=split.normalization)
    columns = {"idx": split.idx, "label": split.labels, **views}
    n = len(split.idx)
    return [{k: torch.as_tensor(np.asarray(v[(s * batch) % (n - batch + 1):][:batch])) for k, v in columns.items()}
            for s in range(steps)]


def _ms_per_step(spec: TrialRun, batches, *, bf16: bool, channels_last: bool, warmup: int) -> float:
    """The steps of ``local_profile.py`` (``optimisation_step``, under the same autocast as its ``--bf16``)."""
    _, method = spec.build()
    if channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # a constant learning rate
    method.train()
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        if channels_last:  # per step, as the training loop converts each batch
            batch = channels_last_batch(batch)
        ctx = StepContext(step=step, total_steps=len(batches), epoch=0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            optimisation_step(method, optimizer, schedule, batch, ctx)
    return (time.perf_counter() - start) / (len(batches) - warmup) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=methods.names(), choices=methods.names())
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a hyperparameter, applied to every method that has it")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30, help="steps per setting, the warm-up included")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=get_profile("local").batch_size,
                        help="images per step (the local profile's by default)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "cpu_numerics.json"))
    args = parser.parse_args()
    overrides = parse_set(args.set)
    torch.set_num_threads(args.threads)
    local = get_profile("local")
    profile = replace(local, train_subset=args.images)
    split = load_split("cifar10", "train", subset=args.images, seed=0)
    info = DataInfo(num_samples=args.images, num_classes=split.num_classes, image_size=split.images.shape[1])
    print(f"cpu numerics: {local.backbone_name}, batch {args.batch}, {args.threads} thread(s), "
          f"{args.steps - args.warmup} timed steps x {args.rounds} rounds per setting")
    print(f"{'method':<18}" + "".join(f"{label:>24}" for label in SETTINGS) + f"{'cl / fp32':>11}")
    rows = []
    for name in args.methods:
        cls = methods.get(name)
        config = {**cls.profile_defaults.get("local", {}),
                  **{k: v for k, v in overrides.items() if k in cls.Config.field_names()}}
        spec = TrialRun(method=name, method_config=config, profile=profile, seed=0, data=info)
        batches = _batches(name, config, split, args.batch, args.steps)
        times = {label: [] for label in SETTINGS}
        for _ in range(args.rounds):
            for label, (bf16, channels_last) in SETTINGS.items():
                times[label].append(_ms_per_step(spec, batches, bf16=bf16, channels_last=channels_last,
                                                 warmup=args.warmup))
        row = {"method": name, "config": config,
               **{label: {"ms_per_step": float(np.mean(t)), "spread": float(np.std(t))} for label, t in times.items()}}
        row["channels_last_ratio"] = row["fp32 + channels_last"]["ms_per_step"] / row["fp32"]["ms_per_step"]
        rows.append(row)
        print(f"{name:<18}" + "".join(f"{row[label]['ms_per_step']:>15.1f} ± {row[label]['spread']:>4.1f} ms"
                                      for label in SETTINGS) + f"{row['channels_last_ratio']:>11.2f}", flush=True)
    ratios = [r["channels_last_ratio"] for r in rows]
    summary = (f"channels_last / fp32 step time over {len(rows)} method(s): median {np.median(ratios):.2f}, "
               f"range {min(ratios):.2f}-{max(ratios):.2f}")
    print(summary)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "cpu_numerics", "backbone": local.backbone_name,
                               "batch": args.batch, "threads": args.threads, "rows": rows,
                               "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
