"""PIRL's NCE step against the memory bank: sslab's implementation vs a per-sample loop.

One step = draw N negatives per image, similarities of f(v_I) to its positive m_I and to its
negatives, the NCE loss (eq. 3-4), backward to the embeddings, and the bank's EMA write.
Three implementations, on the same embeddings and the same drawn indices:

- ``per-sample``: the straightforward loop, one image at a time (gather its N rows, dot, loss);
- ``gather``: the batched textbook form, a B x N x d gather of the negatives and an einsum
  (what VISSL's NCE memory bank and sslab before this benchmark did);
- ``sslab``: ``MemoryBank.similarities``, which scores the batch against the whole bank with
  one matrix product and picks the N columns per row when the bank is smaller than N x d
  (always, at the paper's N), otherwise gathers.

Each (implementation, N) runs in its own process so its peak resident memory is its own. The
losses must agree (relative difference < 1e-5) or the benchmark fails.

    python benchmarks/memory_bank.py [--negatives 4096 16384 32000] [--batch 256] [--bank 50000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

IMPLEMENTATIONS = ("per-sample", "gather", "sslab")


def _step(impl: str, bank, emb, idx, neg_idx, tau: float, log_z: float):
    import torch
    import torch.nn.functional as F

    from sslab.methods.losses import nce_loss

    emb = emb.detach().requires_grad_(True)
    if impl == "per-sample":
        log_noise = math.log(neg_idx.shape[1] / bank.num_samples)
        total = emb.new_zeros(())
        for b in range(len(emb)):
            pos = emb[b] @ bank.bank[idx[b]]
            neg = bank.bank[neg_idx[b]] @ emb[b]
            total = total + F.softplus(log_noise - (pos / tau - log_z)) + F.softplus(neg / tau - log_z - log_noise).sum()
        loss = total / len(emb)
    elif impl == "gather":
        pos = (emb * bank.bank[idx]).sum(dim=1)
        neg = torch.einsum("bd,bnd->bn", emb, bank.bank[neg_idx])
        loss = nce_loss(pos, neg, tau, bank.num_samples, log_z)
    else:
        pos, neg = bank.similarities(emb, idx), bank.similarities(emb, neg_idx)
        loss = nce_loss(pos, neg, tau, bank.num_samples, log_z)
    loss.backward()
    bank.update(idx, emb.detach(), 0.5)
    return float(loss), emb.grad


def measure(impl: str, negatives: int, batch: int, bank_size: int, dim: int, repeats: int, threads: int) -> dict:
    """Runs in a child process: seconds per step (median of ``repeats``) and peak RSS growth."""
    import torch
    import torch.nn.functional as F

    from sslab.methods.blocks.memory_bank import MemoryBank

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bank = MemoryBank(bank_size, dim)
    emb = F.normalize(torch.randn(batch, dim), dim=1)
    idx = torch.randperm(bank_size)[:batch]
    neg_idx = bank.sample_negatives(batch, negatives)
    start_bank = bank.bank.clone()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, first = [], None
    for _ in range(repeats):
        bank.bank.copy_(start_bank)  # every repeat starts from the same bank
        start = time.perf_counter()
        loss, grad = _step(impl, bank, emb, idx, neg_idx, 0.07, 10.0)
        times.append(time.perf_counter() - start)
        first = first or (loss, grad.norm().item())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times.sort()
    return {"impl": impl, "negatives": negatives, "seconds": times[len(times) // 2], "loss": first[0],
            "grad_norm": first[1], "peak_mib": max(0, peak - base_rss) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--negatives", type=int, nargs="+", default=[4096, 16384, 32000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--bank", type=int, default=50_000, help="memory-bank rows (CIFAR-10's train set)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-per-sample-above", type=int, default=None,
                        help="skip the per-sample loop for larger N (it is the slow one)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "memory_bank.json"))
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        impl, n = args.child[0], int(args.child[1])
        print(json.dumps(measure(impl, n, args.batch, args.bank, args.dim, args.repeats, args.threads)))
        return

    rows = []
    for n in args.negatives:
        for impl in IMPLEMENTATIONS:
            if impl == "per-sample" and args.skip_per_sample_above and n > args.skip_per_sample_above:
                continue
            command = [sys.executable, __file__, "--child", impl, str(n), "--batch", str(args.batch), "--bank",
                       str(args.bank), "--dim", str(args.dim), "--repeats", str(args.repeats), "--threads", str(args.threads)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        same_n = {r["impl"]: r for r in rows if r["negatives"] == n}
        for impl, row in same_n.items():
            reference = same_n.get("per-sample") or same_n["gather"]
            if abs(row["loss"] - reference["loss"]) > 1e-5 * abs(reference["loss"]):
                raise SystemExit(f"N={n}: {impl} loss {row['loss']} differs from {reference['impl']} {reference['loss']}")
            base = same_n.get("per-sample") or same_n["gather"]
            row["speedup_vs_per_sample" if "per-sample" in same_n else "speedup_vs_gather"] = base["seconds"] / row["seconds"]

    print(f"PIRL NCE step (negatives, loss, backward, bank write): batch {args.batch}, bank {args.bank} x {args.dim}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'N':>6} {'implementation':<12} {'ms/step':>9} {'peak MiB':>9} {'speed-up':>9} {'loss':>10}")
    for row in rows:
        speedup = row.get("speedup_vs_per_sample", row.get("speedup_vs_gather", math.nan))
        print(f"{row['negatives']:>6} {row['impl']:<12} {row['seconds'] * 1e3:>9.1f} {row['peak_mib']:>9.0f} "
              f"{speedup:>8.1f}x {row['loss']:>10.4f}")
    print("losses agree across implementations (relative difference < 1e-5)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "memory_bank", "batch": args.batch, "bank": args.bank, "dim": args.dim,
                               "threads": args.threads, "machine": platform.machine(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
