"""Images per second per GPU of the real training loop, in steady state, at four numerics settings.

For PIRL (jigsaw patches, memory bank, N = 4,096 negatives) and SimCLR (two views, NT-Xent) by
default (``--methods`` for any registered method), a CIFAR-10 ResNet-18 trains through
``platform/train.run_loop`` (the loop every trial runs, here in this process on its GPU:
an ``InProcessSession``) on views computed once and materialised, so the input pipeline
(``input_pipeline.py``) is not what is measured. Each setting:

- ``fp32``: IEEE float32 throughout (TF32 off for convolutions and matrix products);
- ``tf32``: float32 with TF32 tensor cores;
- ``bf16 + channels_last``: autocast bfloat16, NHWC (the ``cifar`` profile's setting);
- ``bf16 + channels_last + compile``: the same with ``torch.compile`` on the backbone.

Timing is steady-state: the loop synchronises the GPU after ``--warmup-steps`` steps of each
epoch and after its last step (``Profile.timing_warmup_steps``), with no local shuffle buffer to
refill inside that window and ``--epochs`` − 1 epochs counted (the first pays for cuDNN's
algorithm search and compilation). GPU busy % is ``nvidia-smi``'s utilisation of this process's
own GPU (by UUID), sampled every 0.1 s and kept only inside the timed windows.

Without a CUDA device it says so and exits 0 (``--cpu`` runs the same code on the CPU at a small
size, to check the script; its numbers mean nothing).

    python benchmarks/gpu_throughput.py [--images 25600] [--epochs 3] [--batch 256] [--methods pirl simclr]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sslab import methods
from sslab.methods.base import DataInfo
from sslab.methods.views import apply_views
from sslab.engine.augment import VIEW_BATCH
from sslab.plan.profiles import Profile
from sslab.checkpoints import EpochCheckpoints
from sslab.engine.sessions import InProcessSession
from sslab.engine.train import TrialRun, run_loop

#: label → (precision, channels_last, compile)
SETTINGS = {
    "fp32": ("fp32", False, False),
    "tf32": ("tf32", False, False),
    "bf16 + channels_last": ("bf16", True, False),
    "bf16 + channels_last + compile": ("bf16", True, True),
}
TARGET = "SimCLR ResNet-18 on CIFAR-10: >= 8,000 images/s per H100/H200-class GPU, >= 90 % busy"


class Utilisation:
    """(time, utilisation %) of one GPU, from nvidia-smi every ``period`` seconds while the block runs."""

    def __init__(self, device: int = 0, period: float = 0.1) -> None:
        self.samples: list[tuple[float, float]] = []
        self._query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        if torch.cuda.is_available():  # this process's GPU, whatever CUDA_VISIBLE_DEVICES maps it to
            self._query += ["-i", f"GPU-{torch.cuda.get_device_properties(device).uuid}"]
        self._period, self._stop = period, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            out = subprocess.run(self._query, capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append((time.time(), float(out.stdout.split()[0])))

    def __enter__(self) -> "Utilisation":
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def mean_within(self, windows: list[tuple[float, float]]) -> float:
        inside = [u for t, u in self.samples if any(start <= t <= end for start, end in windows)]
        return float(np.mean(inside)) if inside else float("nan")


def _dataset(name: str, config: dict, split, image_size: int):
    import ray

    cls = methods.get(name)
    views = apply_views(cls.views(cls.Config.from_flat(config), image_size), split.images,
                        np.random.default_rng(0), stats=split.normalization)
    columns = {"idx": split.idx, "label": split.labels, **views}
    rows = [{k: v[i] for k, v in columns.items()} for i in range(len(split.idx))]
    return ray.data.from_items(rows).repartition(max(1, len(rows) // VIEW_BATCH)).materialize()


def _measure(name: str, config: dict, dataset, profile: Profile, info: DataInfo) -> dict:
    spec = TrialRun(method=name, method_config=config, profile=profile, seed=0, data=info)
    reported: list[dict] = []
    with tempfile.TemporaryDirectory() as checkpoints, Utilisation() as utilisation:
        run_loop(spec, InProcessSession(profile, lambda epoch, rank=0, world_size=1: dataset,
                                        EpochCheckpoints(checkpoints), report=reported.append))
    if "failure" in reported[-1]:
        raise RuntimeError(f"{name}: {reported[-1]['failure']}")
    steady = reported[1:]  # the first epoch searches cuDNN's algorithms and compiles
    windows = [(m["steady_window_start"], m["steady_window_end"]) for m in steady]
    return {"images_per_s": float(np.mean([m["steady_images_per_s"] for m in steady])),
            "images_per_s_spread": float(np.std([m["steady_images_per_s"] for m in steady])),
            "gpu_busy_percent": utilisation.mean_within(windows),
            "first_epoch_s": reported[0]["epoch_s"], "loss": reported[-1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=25_600)
    parser.add_argument("--epochs", type=int, default=3, help="the first is a warm-up")
    parser.add_argument("--warmup-steps", type=int, default=10, help="steps of each epoch before its timed window")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["pirl", "simclr"], choices=methods.names())
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (checks the script, measures nothing useful)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "gpu_throughput.json"))
    args = parser.parse_args()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available() and not args.cpu:
        summary = "skipped: no CUDA device on this machine"
        print(f"gpu throughput: {summary}")
        out.write_text(json.dumps({"benchmark": "gpu_throughput", "summary": summary}))
        return

    import ray

    from sslab.data.catalog import load_split

    logging.getLogger("ray").setLevel(logging.WARNING)
    use_gpu = not args.cpu
    device = torch.cuda.get_device_name(0) if use_gpu else platform.processor() or "cpu"
    split = load_split("cifar10", "train", subset=args.images, seed=0)
    ray.init(include_dashboard=False, log_to_driver=False)
    base = Profile(name="gpu-bench", train_subset=args.images, width=args.width, epochs=args.epochs,
                   batch_size=args.batch, num_workers=0, use_gpu=use_gpu, shuffle_buffer=0,
                   timing_warmup_steps=args.warmup_steps)
    info = DataInfo(num_samples=args.images, num_classes=split.num_classes, image_size=base.image_size)
    rows = []
    for name in args.methods:
        config = {"num_negatives": 4096} if "num_negatives" in methods.get(name).Config.field_names() else {}
        dataset = _dataset(name, config, split, base.image_size)
        for label in args.settings:
            precision, channels_last, compiled = SETTINGS[label]
            profile = replace(base, precision=precision, channels_last=channels_last, compile=compiled)
            row = {"method": name, "setting": label, **_measure(name, config, dataset, profile, info)}
            rows.append(row)
            print(f"{name:<8}{label:<34}{row['images_per_s']:>9.0f} img/s  {row['gpu_busy_percent']:>5.0f} % busy",
                  flush=True)
    ray.shutdown()

    def rate(method: str, setting: str) -> float:
        return next((r["images_per_s"] for r in rows if r["method"] == method and r["setting"] == setting), float("nan"))

    parts = [f"{m} fp32 {rate(m, 'fp32'):.0f} / tf32 {rate(m, 'tf32'):.0f} / bf16+cl "
             f"{rate(m, 'bf16 + channels_last'):.0f} / +compile {rate(m, 'bf16 + channels_last + compile'):.0f} img/s"
             for m in args.methods]
    summary = f"ResNet-18 on {device}, batch {args.batch}, per GPU: " + "; ".join(parts)
    print(f"gpu throughput: width {args.width}, batch {args.batch}, {args.images} images, device {device}; "
          f"steady state of epochs 2..{args.epochs} after {args.warmup_steps} steps each")
    print(f"{'method':<8}{'setting':<34}{'images/s':>10}{'± (epochs)':>12}{'GPU busy %':>12}{'1st epoch s':>13}")
    for r in rows:
        print(f"{r['method']:<8}{r['setting']:<34}{r['images_per_s']:>10.0f}{r['images_per_s_spread']:>12.0f}"
              f"{r['gpu_busy_percent']:>12.0f}{r['first_epoch_s']:>13.1f}")
    print(summary)
    print(f"target: {TARGET}")
    out.write_text(json.dumps({"benchmark": "gpu_throughput", "device": device, "width": args.width,
                               "batch": args.batch, "images": args.images, "warmup_steps": args.warmup_steps,
                               "rows": rows, "summary": summary, "target": TARGET}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
