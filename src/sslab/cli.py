"""The ``sslab`` command: list, run and report studies.

    sslab studies                     the studies shipped in studies/, one line each
    sslab methods [--markdown]        every method: its paper and hyperparameters (symbol = default)
    sslab run NAME [study flags]      same as python studies/NAME.py [study flags]
    sslab status NAME                 progress of a running or stopped study
    sslab report NAME [--format F]    the summary (table, csv or markdown) from the results store
    sslab dashboard [--port P]        the Streamlit dashboard on http://localhost:8501
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import pkgutil
import shlex
import sys
from importlib import resources
from typing import Sequence

import sslab.studies


def available_studies() -> dict:
    """Every module of sslab.studies that defines ``STUDY``."""
    from sslab.plan.study import Study

    found = {}
    for info in pkgutil.iter_modules(sslab.studies.__path__):
        module = importlib.import_module(f"sslab.studies.{info.name}")
        study = getattr(module, "STUDY", None)
        if isinstance(study, Study):
            found[info.name] = study
    return found


def _study(name: str):
    studies = available_studies()
    if name not in studies:
        raise SystemExit(f"sslab: unknown study {name!r}; known studies: {', '.join(sorted(studies)) or 'none'}")
    return studies[name]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="sslab", description="self-supervised representation learning studies")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("studies", help="list the available studies")
    methods_cmd = sub.add_parser("methods", help="list the methods, their papers and hyperparameters")
    methods_cmd.add_argument("--markdown", action="store_true", help="the table of docs/methods.md")
    run_cmd = sub.add_parser("run", help="run or resume a study (flags as for the study script)", add_help=False)
    run_cmd.add_argument("name")
    report = sub.add_parser("report", help="print a study's summary from the results store")
    report.add_argument("name")
    report.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    report.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    report.add_argument("--setting", default=None, metavar="ID",
                        help="summarise the trials of this setting (default: the study's last run's); csv lists every setting's")
    status = sub.add_parser("status", help="progress of a running or stopped study")
    status.add_argument("name")
    status.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    dashboard = sub.add_parser("dashboard", help="serve the dashboard on localhost")
    dashboard.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    dashboard.add_argument("--port", type=int, default=8501)
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default localhost only; 0.0.0.0 exposes it to the network)")
    args, rest = parser.parse_known_args(argv)

    if args.command == "studies":
        for name, study in sorted(available_studies().items()):
            print(f"{name:24s} {study.description}")
    elif args.command == "methods":
        print(methods_table(markdown=args.markdown))
    elif args.command == "run":
        run(_study(args.name), rest)
    elif args.command in ("report", "status"):
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        from sslab.results.store import StoreError

        try:
            if args.command == "report":
                _report(_study(args.name), args.results, args.format, args.setting)
            else:
                _status(_study(args.name), args.results)
        except StoreError as err:  # a damaged table: one line with the way out, not pyarrow's traceback
            raise SystemExit(f"sslab: {err}") from None
    elif args.command == "dashboard":
        return _dashboard(args.results, args.host, args.port, rest)
    return 0


def run(study, argv: Sequence[str] | None = None, *, command: str | None = None):
    """A study script's entry point (``if __name__ == "__main__": run(STUDY)``) and ``sslab run``'s:
    the study's flags, then the study on Ray (``runner.run_study``); returns its trials table. A bad
    flag, setting, dataset or store is one line (exit 2), not a traceback; Ctrl-C is one line saying
    what is finished and that the same command resumes (exit 130). Only running a study imports the
    runner; declaring one does not."""
    from sslab.engine.runner import run_study
    from sslab.results.store import StoreError

    parser = study_parser(study)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    command = command or invocation(argv)
    overrides = {k: v for k, v in {"epochs": args.epochs, "train_subset": args.subset,
                                   "dataset": args.dataset}.items() if v is not None}
    try:
        if args.method:
            study = study.with_method(args.method)
        return run_study(
            study,
            profile=args.profile,
            seeds=args.seeds,
            root=args.results,
            data_dir=args.data_dir,
            address=args.address,
            profile_overrides=overrides,
            retry_failed=args.retry_failed,
            trials=getattr(args, "trials", None),
            time_budget_s=getattr(args, "time_budget", None),
            yes=args.yes,
            max_trials=args.max_trials,
            command=command,
        )
    except (ValueError, PermissionError, FileNotFoundError, StoreError) as err:  # a bad flag, setting, dataset or store
        parser.exit(2, f"{study.name}: error: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{study.name}: interrupted; {interrupted_note(study, args.results)}; "
                         f"the same command resumes: {command}\n")


def invocation(argv: Sequence[str]) -> str:
    """The command a study was started with, as the user would type it again: ``sslab run NAME ...``
    or ``python studies/NAME.py ...``."""
    program = sys.argv[0] if sys.argv else ""
    if os.path.basename(program) == "sslab" or (sys.argv[1:2] == ["run"] and "cli" in program):
        head = ["sslab", *sys.argv[1:3]]
    elif program.endswith(".py"):
        head = ["python", os.path.relpath(program) if os.path.isabs(program) else program]
    else:
        head = ["python", "-m", "sslab.cli", "run"]
    return shlex.join([*head, *argv])


def interrupted_note(study, root: str | None) -> str:
    """What an interrupted study has finished, from its store (the record a rerun starts from)."""
    from sslab.results.store import ResultsStore, results_root
    from sslab.results.summary import current_setting

    try:
        store = ResultsStore(results_root(root), study.name)
        meta = store.metadata()
        trials = current_setting(store.read("trials"), store.read("baselines"), meta).trials
    except Exception:  # interrupted while the store itself was being read: nothing more to say
        return "nothing of this run is lost"
    if not meta:
        return "nothing was finished yet"
    return f"{len(trials)} of {meta.get('total_trials', '?')} trial(s) of this setting are finished and recorded"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def study_parser(study) -> argparse.ArgumentParser:
    """A study's flags (``python studies/NAME.py --help``, ``sslab run NAME --help``)."""
    from sslab import methods
    from sslab.plan import cost

    parser = argparse.ArgumentParser(prog=study.name, description=study.description or None)
    parser.add_argument("--profile", default=study.profile, help="local (CPU, minutes) or cifar (GPU, full CIFAR-10)")
    parser.add_argument("--dataset", default=None,
                        help="cifar10, cifar100, imagefolder:<path> or parquet:<path> (default: the profile's)")
    if len(study.method_names) == 1:
        parser.add_argument("--method", default=None, choices=methods.names(),
                            help=f"run this study's knobs on another method (default {study.method_names[0]}); "
                                 "results go to <study>-<method>")
    else:
        parser.add_argument("--method", default=None, choices=study.method_names,
                            help="train only this one of the study's methods (into the study's results; "
                                 "a later run of the whole study finds its trials done)")
    parser.add_argument("--seeds", type=_positive_int, default=None, help=f"seeds per configuration (default {study.seeds})")
    parser.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default $SSLAB_DATA or ~/.cache/sslab/data)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--epochs", type=_positive_int, default=None,
                        help="train this many epochs (instead of the profile's epochs or step budget)")
    parser.add_argument("--subset", type=_positive_int, default=None, help="override the profile's training subset size")
    parser.add_argument("--retry-failed", action="store_true", help="run failed trials of an earlier run again")
    parser.add_argument("--yes", action="store_true",
                        help=f"run a study above {cost.CONFIRM_TRIALS} trials or {cost.CONFIRM_DEVICE_HOURS:g} "
                             "device-hours without asking")
    parser.add_argument("--max-trials", type=_positive_int, default=None, metavar="N",
                        help="run at most N of the study's unfinished trials now (the same command continues)")
    if study.search:
        parser.add_argument("--trials", type=_positive_int, default=None,
                            help=f"trial budget of the search (default {study.search.trials}, less on small profiles)")
        parser.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                            help="stop starting trials after this many seconds")
    return parser


def methods_table(markdown: bool = False) -> str:
    """One line per registered method: its paper (the first paragraph of its module's docstring) and
    every hyperparameter it declares beyond the shared optimiser fields, or redeclares with its
    own default, as ``symbol = default``; and which studies vary which of them."""
    import inspect
    from dataclasses import MISSING, fields

    from sslab import methods
    from sslab.methods.blocks.config import MethodConfig

    shared = {f.name: f.default for f in fields(MethodConfig)}
    varied: dict[tuple[str, str], list[str]] = {}
    for study_name, study in available_studies().items():
        for method in study.method_names:
            for knob in study.knobs:
                varied.setdefault((method, knob), []).append(study_name)
    rows = []
    for name in methods.names():
        cls = methods.get(name)
        paper = " ".join((inspect.getmodule(cls).__doc__ or "").strip().split("\n\n")[0].split()).rstrip(".")
        knobs = []
        for f in fields(cls.Config):
            if "range" not in f.metadata or (f.name in shared and f.default == shared[f.name]):
                continue
            default = f.default if f.default is not MISSING else None
            studies = ", ".join(f"`{s}`" for s in sorted(varied.get((name, f.name), [])))
            knobs.append(f"{f.metadata['symbol']} = {default:g}" if isinstance(default, float) and
                         not isinstance(default, bool) else f"{f.metadata['symbol']} = {default}")
            if studies:
                knobs[-1] += f" ({studies})"
        rows.append((name, paper, "; ".join(knobs)))
    if markdown:
        return "\n".join(["| method | paper | hyperparameters: symbol = default (studies that vary it) |",
                          "|---|---|---|", *(f"| `{n}` | {p} | {k} |" for n, p, k in rows)])
    return "\n".join(f"{n:14s} {p}\n{'':14s} {k}" for n, p, k in rows)


def dashboard_command(host: str = "127.0.0.1", port: int = 8501, extra: Sequence[str] = ()) -> list[str]:
    """``streamlit run`` on the installed app, listening on ``host:port`` only, without telemetry."""
    app = resources.files("sslab.dashboard") / "app.py"
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer", *extra]


def _dashboard(root: str | None, host: str, port: int, extra: Sequence[str]) -> int:
    from sslab.results.store import results_root

    if importlib.util.find_spec("streamlit") is None or importlib.util.find_spec("plotly") is None:
        raise SystemExit("sslab: the dashboard needs streamlit and plotly: pip install 'sslab[dashboard]'")
    env = {**os.environ, "SSLAB_RESULTS": results_root(root)}
    print(f"sslab dashboard: http://{'localhost' if host in ('127.0.0.1', 'localhost') else host}:{port} "
          f"reading {env['SSLAB_RESULTS']} (Ctrl-C stops it)", flush=True)
    # become the server (no child left behind): Ctrl-C and a supervisor's SIGTERM reach Streamlit itself
    command = dashboard_command(host, port, extra)
    os.execve(command[0], command, env)


def _open_store(study, root: str | None):
    from sslab.results.store import ResultsStore, results_root

    store = ResultsStore(results_root(root), study.name)
    meta = store.metadata()
    if not meta:
        raise SystemExit(f"sslab: no results for {study.name!r} under {store.location}; run it with: sslab run {study.name}")
    return store, meta


def _report(study, root: str | None, fmt: str, setting: str | None = None) -> None:
    from rich.console import Console

    from sslab.results.progress import print_summary
    from sslab.results.summary import current_setting

    store, meta = _open_store(study, root)
    every = store.read("trials")
    shown = current_setting(every, store.read("baselines"), meta, setting)
    if fmt == "csv":  # every setting's trials, each row with its setting_id and specification
        every.to_csv(sys.stdout, index=False)
        return
    trials = shown.trials
    if trials.empty:
        which = f"setting {setting}" if setting else "its current setting"
        raise SystemExit(f"sslab: {study.name!r} has no finished trial of {which} under {store.location}; "
                         f"see: sslab status {study.name}{_results_flag(root)}")
    knobs, metric, mode = _knobs_metric_mode(study, meta)
    # the findings as the study declares them now (a store written before they were declared has none)
    findings = meta.get("findings") or [f.to_dict() for f in study.findings]
    if fmt == "markdown":
        print(markdown_report(study.name, knobs, metric, mode, trials, shown.baselines, findings))
        if shown.note:
            print(f"\n{shown.note}")
    else:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 160)
        print_summary(console, study.symbols(), knobs, metric, mode, trials, shown.baselines,
                      defaults=meta.get("defaults") if meta.get("kind") == "search" else None, findings=findings)
        if shown.note:
            console.print(f"  {shown.note}")


def _results_flag(root: str | None) -> str:
    return f" --results {root}" if root else ""


def _knobs_metric_mode(study, meta: dict) -> tuple[list[str], str, str]:
    knobs = meta.get("knobs") or list(meta.get("grid") or study.knobs)
    metric, mode = meta.get("metric", study.metric), meta.get("mode", study.mode)
    return knobs, (metric[0] if isinstance(metric, list) else metric), (mode[0] if isinstance(mode, list) else mode)


def _knob_cell(value) -> str:
    """A knob's value in a table: "–" where the method has no such knob (a study of several methods)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown_report(name: str, knobs: list[str], metric: str, mode: str, trials, baselines,
                    findings: list[dict] | None = None) -> str:
    """The study's results as Markdown tables (per configuration with the gain over random init,
    the paper's findings, then totals), for notes and papers."""
    from sslab.results.progress import yes_no
    from sslab.results.summary import by_configuration, compute_line, describe, judge_all, totals

    per_config = by_configuration(trials, knobs, metric, mode, baselines)
    lines = [f"## {name}: {metric}", ""]
    several = "method" in per_config
    header = [*(["method"] if several else []), *knobs, "mean", "std", "seeds", "gap to best", "beyond spread",
              "vs random init", "beats it"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]

    for _, row in per_config.iterrows():
        cells = [str(row["method"])] if several else []
        cells += [_knob_cell(row.get(f"config/{k}")) for k in knobs]
        cells += [f"{row['mean']:.3f}", "–" if row["n"] < 2 else f"{row['std']:.3f}", str(int(row["n"])),
                  "best" if row["best"] else f"{row['gap_to_best']:+.3f}", yes_no(row["beyond_spread"]),
                  "–" if math.isnan(row["vs_baseline"]) else f"{row['vs_baseline']:+.3f}", yes_no(row["beats_baseline"])]
        lines.append("| " + " | ".join(cells) + " |")
    if not baselines.empty and metric in baselines:
        lines += ["", f"Random-init baseline: {metric} {baselines[metric].mean():.3f} over {len(baselines)} seed(s)."]
    lines += ["", *[f"- {line}" for line in describe(per_config, knobs, metric, baselines)]]
    if findings:
        lines += ["", "| the paper's finding | verdict | better | worse | why |", "|---|---|---:|---:|---|"]
        for _, row in judge_all(findings, trials, metric, mode).iterrows():
            claim = row["claim"] + (f" ({row['source']})" if row["source"] else "")
            sides = [f"{row[f'{s}_mean']:.3f} ± {row[f'{s}_std']:.3f}" if row[f"{s}_n"] > 1 else
                     (f"{row[f'{s}_mean']:.3f}" if row[f"{s}_n"] else "–") for s in ("better", "worse")]
            lines.append(f"| {claim} | {row['verdict']} | {sides[0]} | {sides[1]} | {row['why']} |")
    spent = totals(trials)
    if findings:
        lines.append("")
    lines.append(f"- compute: {spent['trials']} trial(s), {compute_line(spent)}")
    return "\n".join(lines)


def _status(study, root: str | None) -> None:
    """Progress of a running or stopped study's current setting, from the results store alone."""
    import time

    from sslab.results.lock import lock_holder
    from sslab.results.summary import compute_line, current_setting, totals

    store, meta = _open_store(study, root)
    every = store.read("trials")
    shown = current_setting(every, store.read("baselines"), meta)
    trials, epochs = shown.trials, store.read("epochs")
    total = meta.get("total_trials")
    spent = totals(trials)
    by_status = ", ".join(f"{spent[s]} {s}" for s in ("ok", "stopped", "failed") if spent.get(s)) or "none"
    print(f"{study.name}: {len(trials)} of {total if total is not None else '?'} trial(s) finished ({by_status})")
    holder = lock_holder(store.fs, store.lock_path)
    if holder:
        print(f"  being run by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}")
    epochs_total = (meta.get("profile") or {}).get("epochs")
    if not epochs.empty:
        open_ids = sorted(set(epochs["trial_id"]) - set(every.get("trial_id", [])))
        last = epochs[epochs["trial_id"].isin(open_ids)].groupby("trial_id")["epoch"].max()
        updated = store.updated("epochs")
        ago = f", last report {time.time() - updated:.0f} s ago" if updated else ""
        for trial_id, epoch in last.items():
            print(f"  unfinished: {trial_id} at epoch {int(epoch) + 1}/{epochs_total}{ago}")
    if spent["trials"]:
        print(f"  compute so far: {compute_line(spent)}")
    if shown.note:
        print(f"  {shown.note}")
    if total is not None and len(trials) < total:
        command = meta.get("command") or f"sslab run {study.name}{_results_flag(root)}"
        print(f"  to continue: {command} (finished trials are not rerun)")


if __name__ == "__main__":
    sys.exit(main())
