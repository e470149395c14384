"""The ``sslab`` command: list, run and report studies.

    sslab studies                     the studies shipped in studies/, one line each
    sslab run NAME [study flags]      same as python studies/NAME.py [study flags]
    sslab report NAME [--format F]    the summary table from the results store
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

import sslab.studies
from sslab.platform.study import Study


def available_studies() -> dict[str, Study]:
    """Every module of sslab.studies that defines ``STUDY``."""
    found = {}
    for info in pkgutil.iter_modules(sslab.studies.__path__):
        module = importlib.import_module(f"sslab.studies.{info.name}")
        study = getattr(module, "STUDY", None)
        if isinstance(study, Study):
            found[info.name] = study
    return found


def _study(name: str) -> Study:
    studies = available_studies()
    if name not in studies:
        raise SystemExit(f"sslab: unknown study {name!r}; known studies: {', '.join(sorted(studies)) or 'none'}")
    return studies[name]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="sslab", description="self-supervised representation learning studies")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("studies", help="list the available studies")
    run = sub.add_parser("run", help="run or resume a study (flags as for the study script)", add_help=False)
    run.add_argument("name")
    report = sub.add_parser("report", help="print a study's summary from the results store")
    report.add_argument("name")
    report.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    report.add_argument("--format", choices=("table", "csv"), default="table")
    args, rest = parser.parse_known_args(argv)

    if args.command == "studies":
        for name, study in sorted(available_studies().items()):
            print(f"{name:24s} {study.description}")
    elif args.command == "run":
        _study(args.name).main(rest)
    elif args.command == "report":
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        _report(_study(args.name), args.results, args.format)
    return 0


def _report(study: Study, root: str | None, fmt: str) -> None:
    from rich.console import Console

    from sslab.platform.progress import summary_table
    from sslab.platform.results import ResultsStore, results_root

    store = ResultsStore(results_root(root), study.name)
    trials = store.read("trials")
    if trials.empty:
        raise SystemExit(f"sslab: no results for {study.name!r} under {store.location}; run it with: sslab run {study.name}")
    if fmt == "csv":
        trials.to_csv(sys.stdout, index=False)
    else:
        Console().print(summary_table(study.method, study.grid, trials, store.read("baselines")))


if __name__ == "__main__":
    sys.exit(main())
