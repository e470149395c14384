"""The ``sslab`` command: list, run and report studies.

    sslab studies                     the studies shipped in studies/, one line each
    sslab methods [--markdown]        every method: its paper and hyperparameters (name (symbol) = default)
    sslab run NAME [study flags]      same as python studies/NAME.py [study flags] (sslab run NAME --help)
    sslab pretrain METHOD [flags]     one configuration of one method (--set NAME=VALUE), as a study
    sslab status [NAME]               progress of a running or stopped study; without NAME, every study's state
    sslab report NAME [--format F]    the summary (table, csv or markdown) from the results store
    sslab dashboard [--port P]        the Streamlit dashboard on http://localhost:8501
    sslab --version                   the installed version
    sslab export NAME [--trial ID]    a finished trial's backbone as one file (docs/export.md)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Sequence

import sslab.studies
from sslab import reports

#: the store of ``sslab pretrain METHOD`` is ``pretrain-METHOD``
PRETRAIN = "pretrain"


def available_studies() -> dict:
    """Every module of sslab.studies (and of its family folders) that defines ``STUDY``, by module name."""
    from sslab.plan.study import Study

    found = {}
    for info in pkgutil.walk_packages(sslab.studies.__path__, "sslab.studies."):
        if info.ispkg:  # a family's folder (studies/siamese/): walk_packages goes on into it
            continue
        study = getattr(importlib.import_module(info.name), "STUDY", None)
        if isinstance(study, Study):
            found[info.name.rsplit(".", 1)[1]] = study
    return found


def _study(name: str):
    studies = available_studies()
    base, _, method = name.rpartition("-")
    if base == PRETRAIN and method in _method_names():  # sslab pretrain METHOD's store
        return pretrain_study(method)
    for name_of_study, study in studies.items():  # the store of a study chosen by another metric (--metric)
        if name.startswith(f"{name_of_study}-") and name != name_of_study:
            try:
                chosen = study.with_metric(name[len(name_of_study) + 1:])
            except ValueError:
                continue
            if chosen.name == name:
                return chosen
    if name not in studies and base in studies and len(studies[base].method_names) == 1:
        from sslab import methods

        if method in methods.names():  # the store of a study moved to another method: sslab run base --method m
            return studies[base].with_method(method)
    if name not in studies:
        raise SystemExit(f"sslab: unknown study {name!r}; known studies: {', '.join(sorted(studies)) or 'none'}")
    return studies[name]


def _method_names() -> list[str]:
    from sslab import methods

    return methods.names()


def pretrain_study(method: str):
    """``sslab pretrain METHOD``: one configuration of one method (its paper's defaults, the
    profile's, and the command line's ``--set``), run and stored as a study of its own."""
    from sslab.plan.study import Study

    return Study(name=f"{PRETRAIN}-{method}", method=method,
                 description=f"one {method} configuration: its paper's defaults, the profile's and --set")


def _is_study(name: str) -> bool:
    """Whether ``sslab status NAME`` and ``sslab report NAME`` know a study of that name."""
    try:
        _study(name)
    except SystemExit:
        return False
    return True


def version() -> str:
    """The installed distribution's version; in a source checkout that is not installed, pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version("sslab")
    except metadata.PackageNotFoundError:
        import tomllib

        try:
            pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
            return f"{pyproject['project']['version']} (source checkout, not installed)"
        except (OSError, KeyError, ValueError):
            return "unknown (not installed)"


def _studies_lines() -> list[str]:
    studies = sorted(available_studies().items())
    width = max((len(name) for name, _ in studies), default=0)
    return [f"{name:{width}s}  {study.description}" for name, study in studies]


def _run_usage(asked: bool) -> int:
    """``sslab run`` without a study: its usage and the studies (on stdout and exit 0 for ``--help``)."""
    text = "\n".join(["usage: sslab run NAME [study flags]    (sslab run NAME --help lists the study's flags)",
                      "", "studies:", *(f"  {line}" for line in _studies_lines())])
    if asked:
        print(text)
        return 0
    print(f"{text}\nsslab run: error: name a study", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="sslab", description="self-supervised representation learning studies")
    parser.add_argument("--version", action="version", version=f"sslab {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("studies", help="list the available studies")
    methods_cmd = sub.add_parser("methods", help="list the methods, their papers and hyperparameters")
    methods_cmd.add_argument("--markdown", action="store_true", help="the table of docs/methods.md")
    run_cmd = sub.add_parser("run", help="run or resume a study (its flags: sslab run NAME --help)", add_help=False)
    run_cmd.add_argument("name", nargs="?")
    pretrain = sub.add_parser("pretrain", add_help=False,
                              help="train one configuration of one method (its flags: sslab pretrain METHOD --help)")
    pretrain.add_argument("method", nargs="?")
    report = sub.add_parser("report", help="print a study's summary from the results store")
    report.add_argument("name")
    report.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    report.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    report.add_argument("--setting", default=None, metavar="ID",
                        help="summarise the trials of this setting (default: the study's last run's); csv lists every setting's")
    status = sub.add_parser("status", help="progress of a study; without a name, every study's state")
    status.add_argument("name", nargs="?")
    status.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    dashboard = sub.add_parser("dashboard", help="serve the dashboard on localhost")
    dashboard.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    dashboard.add_argument("--port", type=int, default=8501)
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default localhost only; 0.0.0.0 exposes it to the network)")
    export_cmd = sub.add_parser("export", help="write a finished trial's backbone to one file (docs/export.md)")
    export_cmd.add_argument("name")
    pick = export_cmd.add_mutually_exclusive_group()
    pick.add_argument("--trial", default=None, metavar="ID", help="this trial (default: the best of the current setting)")
    pick.add_argument("--best", default=None, metavar="METRIC", help="the best trial by METRIC (default: the study's)")
    export_cmd.add_argument("--out", default=None, metavar="FILE", help="the file to write (default ./<trial_id>.pt)")
    export_cmd.add_argument("--results", default=None, help="results root (default $SSLAB_RESULTS or ./results)")
    args, rest = parser.parse_known_args(argv)

    if args.command == "studies":
        print("\n".join(_studies_lines()))
    elif args.command == "methods":
        print(methods_table(markdown=args.markdown))
    elif args.command == "run":
        if args.name is None:
            return _run_usage(asked=bool({"-h", "--help"} & set(rest)))
        run(_study(args.name), rest, prog=f"sslab run {args.name}")
    elif args.command == "pretrain":
        if args.method not in _method_names():
            known = ", ".join(_method_names())
            if args.method is None and {"-h", "--help"} & set(rest):
                print(f"usage: sslab pretrain METHOD [--set NAME=VALUE ...] [study flags]\n\nmethods: {known}")
                return 0
            print(f"sslab pretrain: error: name a method (one of {known})", file=sys.stderr)
            return 2
        run(pretrain_study(args.method), rest, prog=f"sslab pretrain {args.method}",
            command=shlex.join(["sslab", PRETRAIN, args.method, *rest]))
    elif args.command in ("report", "status"):
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        from sslab.results.store import StoreError

        try:
            if args.command == "report":
                reports.report(_study(args.name), args.results, args.format, args.setting)
            elif args.name is None:
                reports.overview(args.results, known=_is_study)
            else:
                reports.status(_study(args.name), args.results)
        except StoreError as err:  # a damaged table: one line with the way out, not pyarrow's traceback
            raise SystemExit(f"sslab: {err}") from None
    elif args.command == "dashboard":
        return _dashboard(args.results, args.host, args.port, rest)
    elif args.command == "export":
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        from sslab.export import command as export

        return export(args.name, args.trial, args.best, args.out, args.results)
    return 0


def run(study, argv: Sequence[str] | None = None, *, command: str | None = None, prog: str | None = None):
    """A study script's entry point (``if __name__ == "__main__": run(STUDY)``) and ``sslab run``'s:
    the study's flags, then the study on Ray (``runner.run_study``); returns its trials table. A bad
    flag, setting, dataset or store is one line (exit 2), not a traceback; Ctrl-C is one line saying
    what is finished and that the same command resumes (exit 130). Only running a study imports the
    runner; declaring one, or asking for its flags (``--help``; ``prog`` names the command there), does not."""
    from sslab.results.store import StoreError

    parser = study_parser(study, prog=prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    from sslab.engine.runner import run_study

    command = command or invocation(argv)
    overrides = {k: v for k, v in {"epochs": args.epochs, "train_subset": args.subset, "dataset": args.dataset,
                                   "eval_dataset": args.eval_dataset}.items() if v is not None}
    try:
        if args.method:
            study = study.with_method(args.method)
        if args.set:
            study = study.with_settings(parse_settings(args.set))
        if args.metric:
            study = study.with_metric(args.metric)
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


def parse_settings(items: Sequence[str]) -> dict:
    """``--set NAME=VALUE`` arguments as {name: value}: each value a Python literal (0.2, 3, True,
    [1, 2]), true/false, or else the string as written."""
    import ast

    settings = {}
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE (e.g. --set temperature=0.2), got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = {"true": True, "false": False}.get(text.lower(), text)
        settings[name.strip()] = value
    return settings


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


def study_parser(study, prog: str | None = None) -> argparse.ArgumentParser:
    """A study's flags (``python studies/NAME.py --help``, ``sslab run NAME --help``); ``prog``: the
    command in its usage line (default the study's name)."""
    from sslab import methods
    from sslab.plan import cost

    parser = argparse.ArgumentParser(prog=prog or study.name, description=study.description or None)
    parser.add_argument("--profile", default=study.profile, help="local (CPU, minutes) or cifar (GPU, full CIFAR-10)")
    parser.add_argument("--dataset", default=None,
                        help="cifar10, cifar100, imagefolder:<path> or parquet:<path> (default: the profile's)")
    parser.add_argument("--eval-dataset", default=None, metavar="NAME",
                        help="a labelled dataset for kNN and the linear probes (its train split the bank, its test "
                             "split the queries), e.g. for a --dataset without labels; the label-free measures "
                             "still read --dataset's test images (docs/label-free.md)")
    if len(study.method_names) == 1:
        parser.add_argument("--method", default=None, choices=methods.names(),
                            help=f"run this study's knobs on another method (default {study.method_names[0]}); "
                                 "results go to <study>-<method>")
    else:
        parser.add_argument("--method", default=None, choices=study.method_names,
                            help="train only this one of the study's methods (into the study's results; "
                                 "a later run of the whole study finds its trials done)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="fix a hyperparameter, by name or paper symbol (--set temperature=0.2, --set τ=0.2); "
                             "repeatable; `sslab methods` lists them")
    parser.add_argument("--metric", default=None, metavar="NAME",
                        help=f"choose by this metric instead of {study.primary_metric} (e.g. rankme, lidar: no label "
                             "read for selection), into <study>-<metric>")
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
    every hyperparameter (``Config.describe()``) but the optimiser's settings a method leaves at the
    shared defaults and no study varies, as ``name (symbol) = default`` (the name is what a grid or a
    flag takes; the symbol is the paper's, left out where it is the name); and which studies vary each."""
    import inspect

    from sslab import methods
    from sslab.methods.blocks.config import MethodConfig

    shared = {d["name"]: d["default"] for d in MethodConfig.describe()}
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
        for knob in cls.Config.describe():
            default = knob["default"]
            if knob["name"] in shared and default == shared[knob["name"]] and (name, knob["name"]) not in varied:
                continue
            label = knob["name"] if knob["symbol"] == knob["name"] else f"{knob['name']} ({knob['symbol']})"
            knobs.append(f"{label} = {f'{default:g}' if isinstance(default, float) else default}")
            studies = ", ".join(f"`{s}`" for s in sorted(varied.get((name, knob["name"]), [])))
            if studies:
                knobs[-1] += f" ({studies})"
        rows.append((name, paper, "; ".join(knobs)))
    if markdown:
        return "\n".join(["| method | paper | hyperparameters: name (symbol) = default (studies that vary it) |",
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


if __name__ == "__main__":
    sys.exit(main())
