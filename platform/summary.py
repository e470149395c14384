"""What a study found: per-configuration mean, spread and count over seeds, and what it cost.

Pure pandas over the results store's ``trials`` table, shared by the printed
summary, ``sslab report`` and ``sslab status``. A difference between two
configurations is called out only when it exceeds their spread across seeds:
``|mean_a − mean_b| > std_a + std_b`` (both with at least two seeds), a
deliberately plain rule a reader can check by eye.
"""

from __future__ import annotations

import math

import pandas as pd

#: per-trial cost columns, summed in the study's totals
COST_COLUMNS = ("wall_s", "device_s", "images_seen")


def knob_columns(trials: pd.DataFrame, knobs: list[str]) -> list[str]:
    """The columns that tell configurations apart: ``method`` when the trials span several
    methods, then ``config/<knob>`` per knob."""
    several = "method" in trials and trials["method"].nunique() > 1
    return (["method"] if several else []) + [f"config/{k}" for k in knobs if f"config/{k}" in trials]


def by_configuration(trials: pd.DataFrame, knobs: list[str], metric: str, mode: str = "max") -> pd.DataFrame:
    """One row per configuration of the ``ok`` trials: mean, std and count of ``metric`` over seeds,
    the gap to the best configuration and whether that gap exceeds the two configurations' spread."""
    columns = knob_columns(trials, knobs)
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    if ok.empty or metric not in ok or not columns:
        return pd.DataFrame(columns=[*columns, "mean", "std", "n", "gap_to_best", "beyond_spread"])
    table = (
        ok.groupby(columns, dropna=False)[metric]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
        .sort_values(columns)
        .reset_index(drop=True)
    )
    best = table.loc[table["mean"].idxmax() if mode == "max" else table["mean"].idxmin()]
    table["gap_to_best"] = table["mean"] - best["mean"]
    table["beyond_spread"] = [
        _beyond_spread(row["mean"], row["std"], row["n"], best["mean"], best["std"], best["n"])
        for _, row in table.iterrows()
    ]
    table["best"] = table.index == best.name
    return table


def _beyond_spread(mean_a, std_a, n_a, mean_b, std_b, n_b) -> bool | None:
    """True/False when both have ≥ 2 seeds; None when the spread is unknown (one seed)."""
    if n_a < 2 or n_b < 2 or math.isnan(std_a) or math.isnan(std_b):
        return None
    return bool(abs(mean_a - mean_b) > std_a + std_b)


def totals(trials: pd.DataFrame) -> dict[str, float]:
    """The study's compute: trial counts by status and the summed cost columns."""
    out: dict[str, float] = {"trials": len(trials)}
    if "status" in trials:
        for status, count in trials["status"].value_counts().items():
            out[str(status)] = int(count)
    for column in COST_COLUMNS:
        if column in trials:
            out[column] = float(trials[column].fillna(0).sum())
    return out


def describe(table: pd.DataFrame, knobs: list[str], metric: str) -> list[str]:
    """Plain sentences about the best configuration and which others it beats beyond the spread."""
    if table.empty:
        return [f"no finished trial reports {metric} yet"]
    best = table[table["best"]].iloc[0]
    name = ", ".join(([str(best["method"])] if "method" in table else [])
                     + [f"{k}={best[f'config/{k}']:g}" if isinstance(best[f"config/{k}"], float)
                        else f"{k}={best[f'config/{k}']}" for k in knobs if f"config/{k}" in table])
    lines = [f"best: {name}: {metric} {best['mean']:.3f} ± {_std(best['std'])} over {int(best['n'])} seed(s)"]
    known = table[table["beyond_spread"].notna() & ~table["best"]]
    if known.empty:
        lines.append("differences vs the best are not testable with one seed per configuration (use --seeds 3)")
    else:
        beyond = int(known["beyond_spread"].astype(bool).sum())
        lines.append(f"{beyond} of {len(known)} other configuration(s) trail the best by more than their spread")
    return lines


def _std(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"
