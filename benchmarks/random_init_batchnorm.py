"""Is the random-init baseline a fair one? Its BatchNorm layers keep their initial running
statistics (mean 0, variance 1), where a trained backbone's hold statistics of real images. This
evaluates each seed's untrained ``local`` backbone twice, exactly as a study records its baseline
(``evaluate_for_profile``: kNN on res5, a linear probe per tap): as it is, and after its running
statistics were recomputed on the training images (one pass in train mode, cumulative average).

What it measured, and why studies keep the untrained network as it is: docs/performance.md.

    python benchmarks/random_init_batchnorm.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sslab.methods.blocks.backbone import Backbone
from sslab.data.train_test import evaluation_arrays, load_train_test
from sslab.evaluation.evaluate import evaluate_for_profile, evaluation_batches
from sslab.plan.profiles import get_profile


@torch.no_grad()
def recompute_batchnorm_statistics(backbone: Backbone, images: np.ndarray, stats) -> None:
    """Every BatchNorm's running mean and variance, as the average over ``images`` (train mode, one pass)."""
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    backbone.train()
    for batch in evaluation_batches(images, stats):
        backbone(batch["image"])
    backbone.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--profile", default="local")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "random_init_batchnorm.json"))
    args = parser.parse_args()
    profile = get_profile(args.profile)
    torch.set_num_threads(profile.torch_threads)
    train, test = load_train_test(profile.dataset, image_size=profile.image_size, train_subset=profile.train_subset,
                                  test_subset=profile.test_subset)  # as a study loads them
    arrays = evaluation_arrays(train, test)
    rows = []
    for seed in range(args.seeds):
        for variant in ("as initialised", "recomputed"):
            torch.manual_seed(seed)
            backbone = Backbone(profile.arch, cifar_stem=profile.cifar_stem, width=profile.width)
            if variant == "recomputed":
                recompute_batchnorm_statistics(backbone, train.images, train.normalization)
            metrics = evaluate_for_profile(backbone, arrays, profile, seed=seed)
            rows.append({"seed": seed, "variant": variant, **metrics})
            print(json.dumps(rows[-1]), flush=True)
    metrics = [k for k in rows[0] if k.endswith("top1")]
    per_variant = pd.DataFrame(rows).groupby("variant")[metrics].agg(["mean", "std"])  # sample std, as studies
    summary = {variant: {k: [round(float(per_variant.loc[variant, (k, "mean")]), 4),
                             round(float(per_variant.loc[variant, (k, "std")]), 4)] for k in metrics}
               for variant in ("as initialised", "recomputed")}
    print(f"{'metric':18s} {'as initialised':>16s} {'recomputed':>16s}   (mean ± std over {args.seeds} seeds)")
    for k in metrics:
        a, b = summary["as initialised"][k], summary["recomputed"][k]
        print(f"{k:18s} {a[0]:9.3f} ± {a[1]:.3f} {b[0]:9.3f} ± {b[1]:.3f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"seeds": args.seeds, "profile": args.profile, "summary": summary,
                                           "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
