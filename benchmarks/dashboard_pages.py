"""How long each dashboard page takes on a large store (1,000 trials × 200 epochs by default).

Writes the store with the test suite's factory, then opens every page with Streamlit's AppTest:
once with empty caches (the first visit reads and annotates the tables) and then again warm
(every later visit, and every refresh while nothing changed). Prints a table and writes JSON.

    python benchmarks/dashboard_pages.py [--trials 1000] [--epochs 200] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "dashboard"))

import store_factory  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

PAGES = ("studies", "ablation", "probes", "invariance", "training", "search", "trials")


def open_page(page: str) -> float:
    start = time.perf_counter()
    app = AppTest.from_file(str(ROOT / "src" / "sslab" / "dashboard" / "app.py"), default_timeout=600).run()
    app.switch_page(f"views/{page}.py").run()
    elapsed = time.perf_counter() - start
    if app.exception:
        raise RuntimeError(f"{page}: {app.exception[0].value}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "dashboard_pages.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        store_factory.write_large(Path(root), trials=args.trials, epochs=args.epochs)
        write_s = time.perf_counter() - start
        os.environ["SSLAB_RESULTS"] = root
        rows = []
        for page in PAGES:
            st.cache_data.clear()
            cold = open_page(page)
            warm = statistics.median(open_page(page) for _ in range(args.repeats))
            rows.append({"page": page, "cold_s": round(cold, 3), "warm_s": round(warm, 3)})

    print(f"dashboard pages on {args.trials} trials × {args.epochs} epochs (store written in {write_s:.1f} s), "
          f"AppTest run of app + page, warm = median of {args.repeats}")
    print(f"{'page':<12}{'cold s':>9}{'warm s':>9}")
    for row in rows:
        print(f"{row['page']:<12}{row['cold_s']:>9.2f}{row['warm_s']:>9.2f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "dashboard_pages", "trials": args.trials, "epochs": args.epochs,
                               "machine": platform.machine(), "cpus": os.cpu_count(), "pages": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
