"""One trial of a study, run exactly as a user runs it, for the benchmarks that measure what a part
of a trial costs against its whole wall time (``pictures_cost.py``, ``label_free_cost.py``).

``run_one_trial`` runs ``python <study> --results ROOT --profile P --seeds 1 --max-trials 1 --yes``
through Ray (a Ray of its own) and returns the store it wrote with the machine's load average
before and after; ``write`` prints and saves a benchmark's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Run:
    command: list[str]
    store: object  # sslab.results.store.ResultsStore
    study_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    def header(self, profile: str) -> dict:
        """The fields every such benchmark's JSON starts with: the command and how busy the machine was."""
        return {"command": " ".join(self.command), "profile": profile, "cpus": os.cpu_count(),
                "study_s": round(self.study_s, 1),
                "load_average_before": [round(v, 2) for v in self.load_before],
                "load_average_after": [round(v, 2) for v in self.load_after]}


def parser(description: str, name: str) -> argparse.ArgumentParser:
    """The flags every such benchmark takes; ``name`` names its JSON under benchmarks/results/."""
    out = argparse.ArgumentParser(description=description)
    out.add_argument("--study", default=str(HERE.parent / "studies" / "pirl_lambda.py"))
    out.add_argument("--profile", default="local")
    out.add_argument("--root", default=None, help="the results root (default: a new temporary folder)")
    out.add_argument("--method", default=None, help="the study's --method (one method of a comparison)")
    out.add_argument("--json", default=str(HERE / "results" / f"{name}.json"))
    return out


def run_one_trial(args: argparse.Namespace, prefix: str) -> Run:
    from sslab.results.store import ResultsStore

    root = args.root or tempfile.mkdtemp(prefix=prefix)
    load_before = os.getloadavg()
    command = [sys.executable, args.study, "--results", root, "--profile", args.profile, "--seeds", "1",
               "--max-trials", "1", "--yes", *(["--method", args.method] if args.method else [])]
    print("$", " ".join(command), flush=True)
    # a Ray of its own: one another process started on this machine would otherwise be joined
    env = {**os.environ, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="r1", dir="/tmp")}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    study_s, load_after = time.perf_counter() - start, os.getloadavg()
    (name,) = [p.name for p in Path(root).iterdir() if (p / "study.json").exists()]
    return Run(command, ResultsStore(root, name), study_s, load_before, load_after)


def write(result: dict, path: str) -> None:
    print(json.dumps(result, indent=2))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
