"""What a running study shows: one progress bar, one line per finished trial, a summary table."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sslab.results import metrics as names
from sslab.results.cpu_steal import steal_note


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value: Any, digits: int = 3, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if signed and isinstance(value, float):
        return f"{value:+.{digits}f}"
    if isinstance(value, float) and value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits}g}"  # e.g. a learning rate or a temperature of 0.005
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def yes_no(value: Any) -> str:
    """A verdict that may be unknown (None or NaN: one seed): yes, no or –."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else ("yes" if value else "no")


def _fixed(value: Any) -> str:
    """A metric or its spread: always three decimals (0.007, not 0.00701)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


class Progress:
    def __init__(self, study, profile, *, quiet: bool = False):
        self.study = study
        self.profile = profile
        self.console = Console(quiet=quiet, highlight=False)
        if not self.console.is_terminal:  # logs and pipes get the whole table, not an 80-column cut
            self.console.width = max(self.console.width, 160)
        self._bar: RichProgress | None = None

    def start(self, *, total: int, already_done: int, to_run: int, estimate) -> None:
        """Say what this run will do (before any of it), then show the trials' progress bar."""
        profile = self.profile
        self.console.print(
            f"[bold]{self.study.name}[/]: {', '.join(self.study.methods_to_train(profile.name))} on {profile.dataset}"
            f"{f' (up to {profile.train_subset:,} train images)' if profile.train_subset else ''}, profile {profile.name}, "
            f"{total} trial(s), {already_done} already in the results store"
        )
        if to_run:
            self.console.print(f"  to run now: {estimate}")
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._bar.add_task("trials", total=total, completed=already_done)
        self._bar.start()

    def note(self, message: str) -> None:
        self.console.print(f"  {message}")

    def trial_started(self, key: str) -> None:
        self._bar.update(self._task, description=f"{key}: starting")

    def trial_epoch(self, key: str, result: dict[str, Any]) -> None:
        epoch = int(result.get("epoch", 0)) + 1
        parts = [f"{key}: epoch {epoch}/{self.profile.epochs}", f"loss {_fmt(result.get('loss'))}"]
        if names.KNN in result:
            parts.append(f"kNN {_fmt(result[names.KNN])}")
        if self.study.primary_metric != names.KNN and self.study.primary_metric in result:  # e.g. a label-free one
            parts.append(f"{self.study.primary_metric} {_fmt(result[self.study.primary_metric])}")
        self._bar.update(self._task, description="  ".join(parts))

    def trial_finished(self, key: str, row: dict[str, Any]) -> None:
        self._bar.advance(self._task)
        metric = self.study.primary_metric
        chosen = f"{metric} {_fmt(row.get(metric))}  " if metric != names.KNN and metric in row else ""
        # a study that chooses without labels reads none: no kNN to show (an --eval-dataset's, if any)
        knn = f"kNN {_fmt(row.get(names.KNN))}  " if self.study.reads_labels or names.KNN in row else ""
        if row["status"] == "ok":
            self.console.print(
                f"  [green]✓[/] {key}  {chosen}{knn}"
                f"invariance {_fmt(row.get(names.INVARIANCE))}  {row['wall_s']:.0f}s"
                f"{steal_note(row.get('cpu_steal', math.nan))}"
            )
        elif row["status"] == "stopped":
            shown = [(metric, row.get(metric)), ("kNN", row.get(names.MONITOR_KNN))]
            last = next((f" (per-epoch {name} {_fmt(value)})" for name, value in shown if _finite(value)), "")
            self.console.print(f"  [yellow]–[/] {key}  {row['error']}{last}")
        else:
            self.console.print(f"  [red]✗[/] {key}  {row['status']}: {row['error']}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def summary(self, trials: pd.DataFrame, baselines: pd.DataFrame, note: str | None = None) -> None:
        """The summary of this run's setting (``summary.current_setting``), and ``note`` on the others."""
        self.close()
        if note:
            self.note(note)
        defaults = self.study.configurations()[0][1] if self.study.search else None
        print_summary(self.console, self.study.symbols(), self.study.knobs, self.study.primary_metric,
                      self.study.primary_mode, trials, baselines, defaults=defaults,
                      findings=[f.to_dict() for f in self.study.findings])


def print_summary(console: Console, symbols: dict[str, str], knobs: list[str], metric: str, mode: str,
                  trials: pd.DataFrame, baselines: pd.DataFrame, *, defaults: dict[str, Any] | None = None,
                  findings: list[dict] | None = None) -> None:
    """Every trial; mean ± std per configuration with its gain over the random-init baseline; the
    best; the verdict on each of the paper's findings; the compute spent."""
    from sslab.results.summary import by_configuration, compute_line, describe, judge_all, ranked_by, totals

    console.print(summary_table(symbols, knobs, trials, baselines, sort_by=metric if defaults else None))
    ranking, ranking_mode = ranked_by(trials, metric, mode)  # RankMe for data without labels
    per_config = by_configuration(trials, knobs, ranking, ranking_mode, baselines)
    if not per_config.empty:
        console.print(configuration_table(symbols, knobs, ranking, per_config))
    for line in describe(per_config, knobs, ranking, baselines):
        console.print(f"  {line}")
    if findings and not trials.empty:
        console.print(findings_table(judge_all(findings, trials, metric, mode)))
    label_free = label_free_table(trials)
    if label_free is not None:
        console.print(label_free)
    if defaults is not None and not trials.empty:
        console.print(f"  {_against_defaults(trials, knobs, metric, mode, defaults)}")
    spent = totals(trials)
    if spent["trials"]:
        by_status = ", ".join(f"{spent[s]} {s}" for s in ("ok", "stopped", "failed") if spent.get(s))
        console.print(f"  compute: {spent['trials']} trial(s) ({by_status}); {compute_line(spent)}")


def label_free_table(trials: pd.DataFrame) -> Table | None:
    """How far this study could have chosen without labels: per method with at least 3
    configurations, each label-free measure's rank agreement with kNN and the res5 probe
    (``selection.selection_table``: +1 = the labels' order) and the regret of choosing by it;
    None when the trials carry no label-free measure."""
    from sslab.results import selection

    rows = selection.label_free_rows(trials)
    if rows.empty:
        return None
    table = Table(title="choosing without labels: rank agreement with the labels (+1: the same order, "
                        f"{selection.LEVEL:.0%} bootstrap interval) and the regret of choosing by each measure")
    for column in ("method", "measure", "target", "configs", "seeds", "Spearman ρ", "Kendall τ", "regret"):
        table.add_column(column, justify="left" if column in ("method", "measure", "target") else "right")
    for _, row in rows.iterrows():
        table.add_row(str(row["method"]), str(row["measure"]), str(row["target"]), str(row["configurations"]),
                      str(row["seeds"]), *(_with_interval(row, name) for name in ("spearman", "kendall")),
                      _fixed(row["regret"]))
    return table


def _with_interval(row: pd.Series, name: str) -> str:
    return f"{_fixed(row[name])} [{_fixed(row[f'{name}_low'])}, {_fixed(row[f'{name}_high'])}]"


def findings_table(verdicts: pd.DataFrame) -> Table:
    """The paper's findings this study tests, each marked reproduced, contradicted or not established."""
    table = Table(title="the paper's findings")
    for column in ("finding", "verdict", "better", "worse", "why"):
        table.add_column(column, justify="left" if column in ("finding", "why") else "right")
    style = {"reproduced": "green", "contradicted": "red"}
    for _, row in verdicts.iterrows():
        table.add_row(
            row["claim"] + (f" ({row['source']})" if row["source"] else ""),
            f"[{style[row['verdict']]}]{row['verdict']}[/]" if row["verdict"] in style else row["verdict"],
            f"{_fixed(row['better_mean'])} ± {_fixed(row['better_std'])}",
            f"{_fixed(row['worse_mean'])} ± {_fixed(row['worse_std'])}",
            row["why"],
        )
    return table


def _against_defaults(trials: pd.DataFrame, knobs: list[str], metric: str, mode: str, defaults: dict[str, Any]) -> str:
    ok = trials[(trials["status"] == "ok") & trials[metric].notna()] if metric in trials else trials.iloc[0:0]
    match = pd.Series(True, index=ok.index)
    for knob in knobs:
        match &= ok[f"config/{knob}"] == defaults[knob]
    if ok.empty or not match.any():
        return "paper defaults: not finished yet"
    default_value = ok.loc[match, metric].mean()
    best = ok.loc[ok[metric].idxmax() if mode == "max" else ok[metric].idxmin()]
    setting = ", ".join(f"{k}={_fmt(best[f'config/{k}'], 3)}" for k in knobs)
    return (f"paper defaults: {metric} {default_value:.3f}; best trial: {setting}: {best[metric]:.3f} "
            f"({best[metric] - default_value:+.3f})")


def configuration_table(symbols: dict[str, str], knobs: list[str], metric: str, per_config: pd.DataFrame) -> Table:
    table = Table(title=f"{metric} per configuration: mean ± std over seeds")
    several = "method" in per_config
    if several:
        table.add_column("method")
    for name in knobs:
        table.add_column(symbols.get(name, name), justify="right")
    for column in ("mean", "std", "seeds", "gap to best", "beyond spread", "vs random init", "beats it"):
        table.add_column(column, justify="right")
    for _, row in per_config.iterrows():
        table.add_row(
            *([row["method"]] if several else []),
            *[_fmt(row[f"config/{n}"], 3) for n in knobs],
            _fmt(row["mean"]), _fixed(row["std"]), str(int(row["n"])),
            "best" if row["best"] else _fmt(row["gap_to_best"]),
            yes_no(row["beyond_spread"]),
            _fmt(row.get("vs_baseline"), signed=True),
            yes_no(row.get("beats_baseline")),
        )
    return table


def summary_table(symbols: dict[str, str], knobs: list[str], trials: pd.DataFrame, baselines: pd.DataFrame,
                  *, sort_by: str | None = None) -> Table:
    """(method,) λ (or whichever knobs), seed, kNN, probe per tap, invariance, the label-free measures
    of the representation that any row has, wall time; then the baseline."""
    taps = [t for t in names.TAPS if names.probe(t) in trials or names.probe(t) in baselines]
    label_free = [m for m in names.label_free_columns([*trials.columns, *baselines.columns])
                  if m != "alpha_req_gap" and any(m in t and t[m].notna().any() for t in (trials, baselines))]
    methods_seen = sorted(trials["method"].dropna().unique()) if "method" in trials else []
    several = len(methods_seen) > 1
    table = Table(title=f"{', '.join(methods_seen) or 'results'}: {len(trials)} trial(s)")
    if several:
        table.add_column("method")
    for name in knobs:
        table.add_column(symbols.get(name, name), justify="right")
    short = {"rankme": "RankMe", "alpha_req": "α-ReQ", "lidar": "LiDAR", "alignment": "align", "uniformity": "unif"}
    for column in (["seed", "status", "kNN"] + [f"probe {t}" for t in taps] + ["invariance"]
                   + [short.get(m, m) for m in label_free] + ["wall s"]):
        table.add_column(column, justify="right")
    if not trials.empty:
        if sort_by and sort_by in trials:
            ordered = trials.sort_values(sort_by, ascending=False, na_position="last")
        else:
            ordered = trials.sort_values((["method"] if several else [])
                                         + [f"config/{n}" for n in knobs if f"config/{n}" in trials] + ["seed"])
        for _, row in ordered.iterrows():
            table.add_row(
                *([row["method"]] if several else []),
                *[_fmt(row.get(f"config/{n}"), 3) for n in knobs],
                str(row["seed"]),
                row["status"],
                _fmt(row.get(names.KNN)),
                *[_fmt(row.get(names.probe(t))) for t in taps],
                _fmt(row.get(names.INVARIANCE)),
                *[_fmt(row.get(m)) for m in label_free],
                _fmt(row.get("wall_s"), 0),
            )
    for _, row in baselines.iterrows():
        lead = len(knobs) + several  # the method and knob columns; "random init" in the first of them
        table.add_row(
            *(["random init"] + [""] * (lead - 1) if lead else []),
            str(row["seed"]),
            "baseline",
            _fmt(row.get(names.KNN)),
            *[_fmt(row.get(names.probe(t))) for t in taps],
            "–",
            *[_fmt(row.get(m)) for m in label_free],
            _fmt(row.get("wall_s"), 0),
        )
    return table
