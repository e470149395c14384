"""Images per second per GPU of the real training loop: fp32 against bf16 autocast + channels_last.

Every registered method (``--methods`` to choose: PIRL with its jigsaw patches and memory bank at
N = 4,096 negatives, NPID++, SimCLR's two views and NT-Xent, ...) with the paper's ResNet-18 on
CIFAR-10 views computed once per method and materialised (the input pipeline is measured apart,
in ``input_pipeline.py``), trained by one Ray Train worker holding one GPU through
``make_trainer``: the same loop every study runs, with the profile's ``precision`` and
``channels_last``. GPU utilisation is sampled with ``nvidia-smi`` while it trains, and the
device name is recorded.

Without a CUDA device it says so and exits 0 (``--cpu`` runs the same code on the CPU, at a
small size, to check the script itself).

    python benchmarks/gpu_throughput.py [--images 10240] [--epochs 3] [--batch 256] [--methods pirl simclr]
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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sslab import methods
from sslab.methods.base import DataInfo
from sslab.methods.views import apply_views
from sslab.platform.augment import VIEW_BATCH
from sslab.platform.profiles import Profile
from sslab.platform.train import TrialSpec, make_trainer

#: (label, precision, channels_last)
SETTINGS = (("fp32", "fp32", False), ("bf16 + channels_last", "bf16", True))


class Utilisation:
    """Samples nvidia-smi's utilization.gpu every 0.5 s while the block runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    def __enter__(self) -> "Utilisation":
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def median(self) -> float:
        return float(np.median(self.samples)) if self.samples else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_240)
    parser.add_argument("--epochs", type=int, default=3, help="the first is a warm-up")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=methods.names(), choices=methods.names())
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

    from sslab.platform.data import load_split

    logging.getLogger("ray").setLevel(logging.WARNING)
    use_gpu = not args.cpu
    device = torch.cuda.get_device_name(0) if use_gpu else platform.processor() or "cpu"
    split = load_split("cifar10", "train", subset=args.images, seed=0)
    ray.init(include_dashboard=False, log_to_driver=False)
    base = Profile(name="gpu-bench", train_subset=args.images, width=args.width, epochs=args.epochs,
                   batch_size=args.batch, num_workers=1, use_gpu=use_gpu, cpus_per_worker=1)
    info = DataInfo(num_samples=args.images, num_classes=split.num_classes, image_size=base.image_size)
    rows = []
    for name in args.methods:
        cls = methods.get(name)
        config = {"num_negatives": 4096} if "num_negatives" in cls.Config.field_names() else {}
        views = apply_views(cls.views(cls.Config(**config), base.image_size), split.images,
                            np.random.default_rng(0), stats=split.normalization)
        columns = {"idx": split.idx, "label": split.labels, **views}
        dataset = (ray.data.from_items([{k: v[i] for k, v in columns.items()} for i in range(args.images)])
                   .repartition(max(1, args.images // VIEW_BATCH)).materialize())
        for label, precision, channels_last in SETTINGS:
            profile = replace(base, precision=precision, channels_last=channels_last)
            spec = TrialSpec(method=name, method_config=config, profile=profile, seed=0, data=info)
            with tempfile.TemporaryDirectory() as storage, Utilisation() as utilisation:
                result = make_trainer(spec, lambda epoch, rank=0, world_size=1: dataset, name=f"{name}-{label.replace(' ', '')}",
                                      storage_path=storage).fit()
            epochs = [h["epoch_s"] for h in result.metrics["history"]][1:]
            steps = args.images // args.batch
            rate = steps * args.batch / float(np.mean(epochs))
            rows.append({"method": name, "setting": label, "images_per_s": rate,
                         "gpu_util_median": utilisation.median, "loss": result.metrics["loss"]})
    ray.shutdown()
    parts = []
    for name in args.methods:
        fp32, bf16 = (r for r in rows if r["method"] == name)
        parts.append(f"{name} {fp32['images_per_s']:.0f} → {bf16['images_per_s']:.0f} img/s "
                     f"({bf16['images_per_s'] / fp32['images_per_s']:.2f}x)")
    summary = f"ResNet-18 on {device}, fp32 → bf16+channels_last: " + "; ".join(parts)
    print(f"gpu throughput: ResNet-18 width {args.width}, batch {args.batch}, {args.images} images, "
          f"device {device}; epochs 2..{args.epochs}")
    print(f"{'method':<10}{'setting':<24}{'images/s':>10}{'GPU util %':>12}{'final loss':>12}")
    for row in rows:
        print(f"{row['method']:<10}{row['setting']:<24}{row['images_per_s']:>10.0f}"
              f"{row['gpu_util_median']:>12.0f}{row['loss']:>12.3f}")
    print(summary)
    out.write_text(json.dumps({"benchmark": "gpu_throughput", "device": device, "width": args.width,
                               "batch": args.batch, "images": args.images, "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
