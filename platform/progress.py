"""What a running study shows: one progress bar, one line per finished trial, a summary table."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sslab import methods
from sslab.methods.backbone import TAPS


def _symbols(method: str) -> dict[str, str]:
    """Hyperparameter name → paper symbol (λ, τ, ...) from the method's Config metadata."""
    return {f.name: f.metadata.get("symbol", f.name) for f in fields(methods.get(method).Config)}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


class Progress:
    def __init__(self, study, profile, *, total: int, already_done: int, quiet: bool = False):
        self.study = study
        self.profile = profile
        self.console = Console(quiet=quiet, highlight=False)
        if not self.console.is_terminal:  # logs and pipes get the whole table, not an 80-column cut
            self.console.width = max(self.console.width, 160)
        self.console.print(
            f"[bold]{study.name}[/]: {study.method} on {profile.dataset}"
            f"{f' ({profile.train_subset} train images)' if profile.train_subset else ''}, profile {profile.name}, "
            f"{total} trial(s), {already_done} already in the results store"
        )
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
        if "knn_top1" in result:
            parts.append(f"kNN {_fmt(result['knn_top1'])}")
        self._bar.update(self._task, description="  ".join(parts))

    def trial_finished(self, key: str, row: dict[str, Any]) -> None:
        self._bar.advance(self._task)
        if row["status"] == "ok":
            self.console.print(
                f"  [green]✓[/] {key}  kNN {_fmt(row.get('knn_top1'))}  "
                f"invariance {_fmt(row.get('invariance_l2_mean'))}  {row['wall_s']:.0f}s"
            )
        else:
            self.console.print(f"  [red]✗[/] {key}  {row['status']}: {row['error']}")

    def summary(self, trials: pd.DataFrame, baselines: pd.DataFrame) -> None:
        self._bar.stop()
        self.console.print(summary_table(self.study.method, self.study.grid, trials, baselines))


def summary_table(method: str, grid: dict[str, list], trials: pd.DataFrame, baselines: pd.DataFrame) -> Table:
    """λ (or whichever knobs), seed, kNN, probe per tap, invariance, wall time; then the baseline."""
    symbols = _symbols(method)
    taps = [t for t in TAPS if f"probe_{t}_top1" in trials or f"probe_{t}_top1" in baselines]
    table = Table(title=f"{method}: results ({len(trials)} trial(s))")
    for name in grid:
        table.add_column(symbols.get(name, name), justify="right")
    for column in ["seed", "status", "kNN"] + [f"probe {t}" for t in taps] + ["invariance", "wall s"]:
        table.add_column(column, justify="right")
    if not trials.empty:
        order = [f"config/{n}" for n in grid if f"config/{n}" in trials] + ["seed"]
        for _, row in trials.sort_values(order).iterrows():
            table.add_row(
                *[_fmt(row.get(f"config/{n}"), 2) for n in grid],
                str(row["seed"]),
                row["status"],
                _fmt(row.get("knn_top1")),
                *[_fmt(row.get(f"probe_{t}_top1")) for t in taps],
                _fmt(row.get("invariance_l2_mean")),
                _fmt(row.get("wall_s"), 0),
            )
    for _, row in baselines.iterrows():
        table.add_row(
            *(["random init"] + [""] * (len(grid) - 1)),
            str(row["seed"]),
            "baseline",
            _fmt(row.get("knn_top1")),
            *[_fmt(row.get(f"probe_{t}_top1")) for t in taps],
            "–",
            _fmt(row.get("wall_s"), 0),
        )
    return table
