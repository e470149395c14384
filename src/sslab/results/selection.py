"""Choosing a configuration without labels: how well a measure ranks a study's configurations.

A label-free measure (RankMe, LiDAR, ...) is worth sweeping on when it orders configurations the
way a labelled evaluation does. Over one method's configurations (each the mean over its seeds),
this module gives

- the **agreement** of a measure with a target (kNN top-1, a probe): Spearman's ρ and Kendall's
  τ-b between the target and the measure *signed by its mode* (−measure for a ``min`` measure), so
  that +1 always means "ranks the configurations exactly as the labels do", with a percentile
  bootstrap interval over configurations;
- the **regret** of choosing by the measure: the best configuration's target minus the target of
  the configuration the measure picks (0 when it picks the best).

Pure pandas/numpy (no scipy, no torch): the dashboard and the summary both read it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from sslab.results import metrics

#: the fraction of a bootstrap distribution its interval holds
LEVEL = 0.9
DRAWS = 2000


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: the Pearson correlation of the ranks (ties share their mean rank); NaN when
    either side is constant or fewer than 3 pairs."""
    x, y = pd.Series(np.asarray(x, float)), pd.Series(np.asarray(y, float))
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return math.nan
    return float(x.rank().corr(y.rank()))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b (ties corrected, as scipy.stats.kendalltau's default); NaN when either side is
    constant or fewer than 3 pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or len(np.unique(x)) < 2 or len(np.unique(y)) < 2:
        return math.nan
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordant_minus_discordant = float(np.sum(dx * dy))
    return concordant_minus_discordant / math.sqrt(float(np.sum(dx != 0)) * float(np.sum(dy != 0)))


def bootstrap_interval(x: Sequence[float], y: Sequence[float], statistic: Callable[..., float],
                       draws: int = DRAWS, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of ``statistic(x, y)`` over ``draws`` resamples of the pairs (with
    replacement); resamples where it is undefined (NaN) are left out."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    values = [statistic(x[take], y[take]) for take in rng.integers(0, len(x), (draws, len(x)))]
    values = np.asarray([v for v in values if not math.isnan(v)])
    if len(values) < draws // 2:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def per_configuration(trials: pd.DataFrame, knobs: Sequence[str] | None, columns: Sequence[str]) -> pd.DataFrame:
    """One row per configuration (``method`` and the knob columns; every ``config/`` column when
    ``knobs`` is None) of the ``ok`` trials: the mean,
    std and count over seeds of each of ``columns`` present (``<column>``, ``<column>_std``, ``n``)."""
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    wanted = ("method", *(f"config/{k}" for k in knobs)) if knobs is not None else (
        "method", *(c for c in ok if c.startswith("config/")))
    keys = [c for c in wanted if c in ok]
    present = [c for c in columns if c in ok]
    if ok.empty or not keys or not present:
        return pd.DataFrame(columns=[*keys, *present, "n"])
    grouped = ok.groupby(keys, dropna=False)[present]
    table = grouped.mean().join(grouped.std().add_suffix("_std")).join(grouped.size().rename("n"))
    return table.reset_index()


def regret(table: pd.DataFrame, measure: str, mode: str, target: str = metrics.KNN) -> tuple[float, int]:
    """The best configuration's ``target`` minus that of the configuration ``measure`` picks (by
    its ``mode``), and the picked row's index; (NaN, -1) when either column has no value."""
    rows = table.dropna(subset=[measure, target]) if {measure, target} <= set(table) else table.iloc[0:0]
    if rows.empty:
        return math.nan, -1
    picked = rows[measure].idxmax() if mode == "max" else rows[measure].idxmin()
    return float(rows[target].max() - rows.loc[picked, target]), int(picked)


def agreement(table: pd.DataFrame, measure: str, mode: str, target: str = metrics.KNN) -> dict[str, float]:
    """Spearman's ρ and Kendall's τ between ``target`` and the signed measure over the configurations
    of ``table``, each with its bootstrap interval (``spearman_low``, ``spearman_high``, ...)."""
    rows = table.dropna(subset=[measure, target]) if {measure, target} <= set(table) else table.iloc[0:0]
    signed = rows[measure].to_numpy(float) * (1 if mode == "max" else -1)
    out: dict[str, float] = {"configurations": len(rows)}
    for name, statistic in (("spearman", spearman), ("kendall", kendall)):
        out[name] = statistic(signed, rows[target]) if len(rows) else math.nan
        low, high = bootstrap_interval(signed, rows[target], statistic) if len(rows) >= 3 else (math.nan, math.nan)
        out[f"{name}_low"], out[f"{name}_high"] = low, high
    return out


def selection_table(trials: pd.DataFrame, knobs: Sequence[str], measures: dict[str, str],
                    targets: Sequence[str] = (metrics.KNN, metrics.probe("res5"))) -> pd.DataFrame:
    """Per method, measure and target: the agreement (with intervals) and the regret of choosing by
    the measure, over the method's configurations; ``measures`` maps each measure to its mode. Rows
    only for the measures and targets the trials have."""
    table = per_configuration(trials, knobs, [*measures, *targets])
    groups = table.groupby("method") if "method" in table and not table.empty else [("", table)]
    rows = []
    for method, configurations in groups:
        configurations = configurations.reset_index(drop=True)
        for measure, mode in measures.items():
            for target in targets:
                if measure not in configurations or target not in configurations:
                    continue
                lost, picked = regret(configurations, measure, mode, target)
                rows.append({"method": method, "measure": measure, "mode": mode, "target": target,
                             **agreement(configurations, measure, mode, target), "regret": lost,
                             "seeds": int(configurations["n"].min()) if len(configurations) else 0})
    return pd.DataFrame(rows)


def label_free_rows(trials: pd.DataFrame, at_least: int = 3) -> pd.DataFrame:
    """``selection_table`` for every label-free measure with a better end that ``trials`` carry (of
    the representation, then of the embedding: ``embedding/<measure>``), per method with at least
    ``at_least`` configurations that have it (what every summary shows); empty if none."""
    names = [*metrics.label_free_columns(trials.columns),
             *(metrics.embedding(name) for name in metrics.LABEL_FREE if metrics.embedding(name) in trials)]
    measures = {name: metrics.mode_of(name) for name in names if metrics.mode_of(name)}
    rows = selection_table(trials, None, measures) if measures and not trials.empty else pd.DataFrame()
    return rows[rows["configurations"] >= at_least].reset_index(drop=True) if not rows.empty else rows
