"""Every benchmark, one after the other, at sizes that finish in under 10 minutes on 2 CPU cores.

Each runs as its own process (so one's Ray instance or memory does not colour the next), prints
its table and writes ``benchmarks/results/<name>.json``; this script then prints the headline
ratio of each. Pass ``--only NAME ...`` to run a subset, ``--full`` for the benchmarks' own
(larger) defaults.

    python benchmarks/run.py [--only memory_bank train_loop ...] [--full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: name → the arguments of its quick run (the 2-core, under-10-minutes sizes)
QUICK = {
    "memory_bank": ["--repeats", "2"],
    "train_loop": ["--images", "2048", "--epochs", "4"],
    "input_pipeline": ["--images", "5000", "--epochs", "1"],
    "sweep_overhead": ["--trials", "3", "--images", "1024", "--epochs", "2"],
    "dashboard_pages": ["--repeats", "2"],
    "cpu_numerics": ["--images", "512", "--steps", "15", "--rounds", "1"],
    "epoch_prefetch": ["--epochs", "3", "--rounds", "1"],
    "random_init_batchnorm": ["--seeds", "2"],
    "store_writes": ["--trials", "24", "--epochs", "50"],
    "gpu_throughput": [],
    "pictures_cost": [],  # one trial of the local profile's λ ablation
    "label_free_cost": [],  # one trial of the local profile's λ ablation
}


def headline(name: str) -> str:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return "no result"
    data = json.loads(path.read_text())
    if name == "memory_bank":
        best = [r for r in data["rows"] if r["impl"] == "sslab"]
        return "; ".join(f"N={r['negatives']}: {r['seconds'] * 1e3:.0f} ms, "
                         f"{r.get('speedup_vs_per_sample', r.get('speedup_vs_gather')):.1f}x faster than "
                         f"{'per-sample' if 'speedup_vs_per_sample' in r else 'gather'}" for r in best)
    if name == "train_loop":
        return f"sslab loop overhead vs bare PyTorch: {data['overhead']:+.1%}"
    if name == "input_pipeline":
        return "; ".join(f"{r['views']}: sslab {r['images_per_s']:.0f} img/s = {r['ratio_vs_dataloader']:.2f}x DataLoader"
                         for r in data["rows"] if "ratio_vs_dataloader" in r)
    if name == "sweep_overhead":
        return "; ".join(f"{m['mode']}: {m['overhead_per_trial_s']:.1f} s start-up per trial vs "
                         f"{m['own_work_per_trial_s']:.1f} s of work" for m in data["modes"])
    if name == "dashboard_pages":
        slowest = max(data["pages"], key=lambda p: p["warm_s"])
        return f"slowest page {slowest['page']}: {slowest['warm_s']:.2f} s warm, {slowest['cold_s']:.2f} s cold"
    if name == "epoch_prefetch":
        return (f"loop waits {data['direct']['mean_wait_s']:.2f} s per epoch for batches read epoch by epoch, "
                f"{data['ahead']['mean_wait_s']:.2f} s read ahead ({data['work']} work)")
    if name == "random_init_batchnorm":
        before, after = data["summary"]["as initialised"], data["summary"]["recomputed"]
        return "; ".join(f"{k}: {before[k][0]:.3f} as initialised, {after[k][0]:.3f} with BatchNorm statistics "
                         "recomputed" for k in ("knn_top1", "probe_res5_top1"))
    if name in ("gpu_throughput", "cpu_numerics", "store_writes", "pictures_cost", "label_free_cost"):
        return data.get("summary", "")
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(QUICK), default=list(QUICK))
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults instead of the quick sizes")
    args = parser.parse_args()
    timings = {}
    for name in args.only:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        command = [sys.executable, str(HERE / f"{name}.py"), *([] if args.full else QUICK[name])]
        code = subprocess.call(command)
        timings[name] = time.perf_counter() - start
        if code:
            print(f"{name} failed (exit {code})")
    print("\n=== summary ===")
    for name in args.only:
        print(f"{name:<16} {timings[name]:>6.0f} s  {headline(name)}")


if __name__ == "__main__":
    main()
