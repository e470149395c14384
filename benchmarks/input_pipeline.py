"""Views per second: sslab's Ray Data pipeline against a torch DataLoader, same CPUs, same data.

Both sides start from the same decoded CIFAR-10 images (uint8, decoded once) and produce the
same views with the same number of CPU workers:

- ``pirl``: v_I (random resized crop, flip, colour jitter, grayscale) and v_I^t (a crop cut into
  3x3 cells, an 8x8 patch at a random offset in each, per-patch jitter and grayscale, shuffled
  by a random permutation): 1 image + 9 patches per sample;
- ``simclr``: SimCLR's CIFAR-10 augmentation (google-research/simclr, colour strength 0.5, no
  blur), twice per image: random resized crop (scale 0.08-1), flip, ColorJitter(0.4, 0.4, 0.4,
  0.1) applied with p 0.8, grayscale with p 0.2.

sslab's side is ``with_views(to_ray_dataset(split), views)`` (batched augmentation in Ray Data
tasks, streamed to the consumer as Train's ``iter_torch_batches`` does); the DataLoader's side
is the usual per-image torchvision-v2 transform in ``num_workers`` worker processes. Each side
runs one warm-up epoch (worker start-up, first-call costs), then timed epochs.

    python benchmarks/input_pipeline.py [--images 10000] [--workers 2] [--epochs 2] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from sslab.methods.views import CIFAR10, ImageView, JigsawView

MEAN, STD = list(CIFAR10.mean), list(CIFAR10.std)

#: SimCLR's CIFAR-10 views (ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) at strength s = 0.5, p 0.8),
#: as sslab declares them: one ImageView drawing two independent copies, keys view_0 and view_1.
SIMCLR_VIEWS = [ImageView(name="view", copies=2, scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8,
                          grayscale=0.2)]


# ------------------------------------------------------------------ the DataLoader baseline
def _pirl_image_transform() -> v2.Compose:
    """PIRL's v_I, as ``ImageView()``."""
    return v2.Compose([
        v2.RandomResizedCrop(32, scale=(0.2, 1.0), antialias=False),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.4, 0.4, 0.4),
        v2.RandomGrayscale(0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def _simclr_transform() -> v2.Compose:
    """SimCLR's CIFAR-10 augmentation as its PyTorch ports write it, = ``SIMCLR_VIEWS``' ImageView."""
    return v2.Compose([
        v2.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=False),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


class PerImageViews(torch.utils.data.Dataset):
    """The hand-written baseline: torchvision transforms applied image by image."""

    def __init__(self, images: np.ndarray, kind: str):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # N x 3 x H x W uint8
        self.kind = kind
        if kind == "pirl":
            self.image = _pirl_image_transform()
            self.crop = v2.RandomResizedCrop(30, scale=(0.6, 1.0), ratio=(1.0, 1.0), antialias=False)
            self.patch = v2.Compose([v2.ColorJitter(0.4, 0.4, 0.4), v2.RandomGrayscale(0.2),
                                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
        else:
            self.view = _simclr_transform()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.images[i]
        if self.kind == "simclr":
            return {"idx": i, "view_0": self.view(x), "view_1": self.view(x)}
        crop = self.crop(x)
        patches = []
        for r in range(3):
            for c in range(3):
                dy, dx = np.random.randint(0, 3, size=2)  # 8x8 patch at a random offset in its 10x10 cell
                patches.append(self.patch(crop[:, r * 10 + dy:r * 10 + dy + 8, c * 10 + dx:c * 10 + dx + 8]))
        perm = torch.randperm(9)
        return {"idx": i, "image": self.image(x), "jigsaw": torch.stack(patches)[perm], "jigsaw_perm": 0}


def dataloader_epochs(images: np.ndarray, kind: str, workers: int, batch: int, epochs: int) -> list[float]:
    loader = torch.utils.data.DataLoader(PerImageViews(images, kind), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    seconds = []
    for _ in range(epochs + 1):  # the first is the warm-up
        start, n = time.perf_counter(), 0
        for out in loader:
            n += len(out["idx"])
        seconds.append((time.perf_counter() - start, n))
    return seconds


# ------------------------------------------------------------------------- sslab's side
def sslab_epochs(images: np.ndarray, kind: str, workers: int, batch: int, epochs: int) -> list[float]:
    from sslab.data.split import Split
    from sslab.engine.augment import to_ray_dataset, with_views

    views = [ImageView(), JigsawView()] if kind == "pirl" else SIMCLR_VIEWS
    n = len(images)
    split = Split(images, np.zeros(n, dtype=np.int64), np.arange(n, dtype=np.int64), ["x"])
    dataset = with_views(to_ray_dataset(split), views, stats=CIFAR10)
    seconds = []
    for _ in range(epochs + 1):
        start, seen = time.perf_counter(), 0
        for out in dataset.iter_torch_batches(batch_size=batch, drop_last=True):
            seen += len(out["idx"])
        seconds.append((time.perf_counter() - start, seen))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CPU workers on each side")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--kinds", nargs="+", default=["pirl", "simclr"], choices=["pirl", "simclr"])
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "input_pipeline.json"))
    args = parser.parse_args()

    import ray

    from sslab.data.catalog import load_split

    split = load_split("cifar10", "train", subset=args.images, seed=0)
    images = split.images
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    rows = []
    for kind in args.kinds:
        for side, run in (("DataLoader", dataloader_epochs), ("sslab", sslab_epochs)):
            timed = run(images, kind, args.workers, args.batch, args.epochs)
            warm = timed[1:]
            rate = sum(n for _, n in warm) / sum(s for s, _ in warm)
            rows.append({"views": kind, "side": side, "images_per_s": rate,
                         "warmup_images_per_s": timed[0][1] / timed[0][0]})
        pair = {r["side"]: r for r in rows if r["views"] == kind}
        pair["sslab"]["ratio_vs_dataloader"] = pair["sslab"]["images_per_s"] / pair["DataLoader"]["images_per_s"]
    ray.shutdown()

    print(f"input pipeline: {len(images)} CIFAR-10 images, {args.workers} CPU worker(s) per side, batch {args.batch}, "
          f"{args.epochs} timed epoch(s) after a warm-up")
    print(f"{'views':<8}{'side':<12}{'images/s':>10}{'warm-up/s':>11}{'sslab / DataLoader':>20}")
    for row in rows:
        ratio = f"{row['ratio_vs_dataloader']:.2f}x" if "ratio_vs_dataloader" in row else ""
        print(f"{row['views']:<8}{row['side']:<12}{row['images_per_s']:>10.0f}{row['warmup_images_per_s']:>11.0f}{ratio:>20}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "input_pipeline", "images": len(images), "workers": args.workers,
                               "batch": args.batch, "machine": platform.machine(), "cpus": os.cpu_count(),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
