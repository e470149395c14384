"""The numbers and the chart of the *Label-free vs kNN* page: how well each label-free measure a
study's trials carry (``metrics.LABEL_FREE``: RankMe, α-ReQ, LiDAR, alignment, uniformity, of the
representation and, as ``embedding/<measure>``, of the method's embedding) ranks the trials the
way kNN top-1 (or a probe) does.

Per measure, over the study's ``ok`` trials (one point each): Spearman's ρ and Kendall's τ-b of the
measure, signed by its better end (negated where lower is better), against the target, so that +1
always means "orders the trials as the labels do", as the summary's table says it
(``results.selection``); α-ReQ, with no better end, as it is. And the **regret** of choosing by the measure: the best trial's target minus the
target of the trial the measure picks (its better end). The statistics are the results wing's
(``results.selection``: pure pandas, no scipy); a data function and a figure apart, as in ``charts``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sslab.dashboard import charts
from sslab.results import metrics
from sslab.results import selection as choosing

BETTER = {"max": "higher is better", "min": "lower is better", None: "neither end is better"}


def measures_of(trials: pd.DataFrame) -> list[str]:
    """The label-free measures some ``ok`` trial has a value of (``charts.label_free_metrics``' order)."""
    if trials.empty or "status" not in trials:
        return []
    ok = trials[trials["status"] == "ok"]
    return [m for m in charts.label_free_metrics(ok.columns) if ok[m].notna().any()]


def pairs(trials: pd.DataFrame, measure: str, target: str) -> pd.DataFrame:
    """The ``ok`` trials with a value of both ``measure`` and ``target`` (a fresh 0..n−1 index)."""
    if measure not in trials or target not in trials:
        return pd.DataFrame(columns=["key", "label", "method", "configuration", measure, target])
    ok = trials[(trials["status"] == "ok") & trials[measure].notna() & trials[target].notna()]
    kept = [c for c in ("key", "label", "method", "configuration") if c in ok]
    return ok[[*kept, measure, target]].astype({measure: float, target: float}).reset_index(drop=True)


def agreement_rows(trials: pd.DataFrame, target: str = metrics.KNN) -> pd.DataFrame:
    """One row per label-free measure: its better end, the trials compared, ρ and τ against
    ``target``, the trial it picks with that trial's target, the best target and the regret
    (NaN for a measure with no better end, α-ReQ)."""
    rows = []
    for measure in measures_of(trials):
        both = pairs(trials, measure, target)
        mode = metrics.mode_of(measure)
        lost, picked = choosing.regret(both, measure, mode, target) if mode else (math.nan, -1)
        signed = both[measure] * (-1 if mode == "min" else 1)
        rows.append({
            "measure": measure, "better": BETTER[mode], "trials": len(both),
            # on the ranks: τ-b is unchanged by them, and an infinite value (a collapsed spectrum) ranks last
            "spearman": choosing.spearman(signed.rank(), both[target].rank()),
            "kendall": choosing.kendall(signed.rank(), both[target].rank()),
            "picks": str(both.at[picked, "label"]).split(" · ", 1)[-1] if picked >= 0 and "label" in both else "",
            f"picked {target}": both.at[picked, target] if picked >= 0 else math.nan,
            f"best {target}": both[target].max() if len(both) else math.nan,
            "regret": lost, "description": _description(measure),
        })
    return pd.DataFrame(rows, columns=["measure", "better", "trials", "spearman", "kendall", "picks",
                                       f"picked {target}", f"best {target}", "regret", "description"])


def _description(measure: str) -> str:
    name = metrics.embedding_measure(measure)
    return metrics.LABEL_FREE[name].description + " (of the embedding)" if name else metrics.LABEL_FREE[measure].description


def earlier_settings(meta: dict) -> dict[str, tuple[str, ...]]:
    """The settings of the study's earlier runs (``study.json``'s ``settings`` that are not the last
    run's ``setting_ids``), grouped by the command that ran them: a readable name → setting ids."""
    current = set(meta.get("setting_ids") or [])
    runs: dict[str, list[str]] = {}
    for setting_id, info in (meta.get("settings") or {}).items():
        if setting_id in current:
            continue
        info = info or {}
        profile = (info.get("profile") or {}).get("name", "?")
        name = f"{info.get('command') or 'a run'} (profile {profile}, first run {info.get('first_run', '?')})"
        runs.setdefault(name, []).append(setting_id)
    return {name: tuple(ids) for name, ids in runs.items()}


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.{digits}f}"


def agreement_figure(trials: pd.DataFrame, measure: str, target: str, row: dict, by: str = "method") -> go.Figure:
    """One point per trial (``measure`` across, ``target`` up), coloured by ``method`` or
    ``configuration``; the trial the measure picks is ringed, the best trial starred, and ρ, τ and
    the regret (``row``: one of ``agreement_rows``) are written on the chart."""
    both = pairs(trials, measure, target)
    finite = both[np.isfinite(both[measure])]
    column = "configuration" if by == "configuration" else "method"
    groups = (finite[column].astype(str).str.split(" · ", n=1).str[-1] if column in finite
              else pd.Series("trials", index=finite.index))
    fig = go.Figure()
    legend = groups.nunique() <= charts.MAX_LINES
    for group, rows in finite.groupby(groups, sort=True):
        fig.add_trace(go.Scatter(x=rows[measure], y=rows[target], mode="markers", name=str(group), showlegend=legend,
                                 marker=dict(size=10, opacity=0.85), text=rows.get("label"),
                                 hovertemplate=f"%{{text}}<br>{measure} %{{x:.4g}}<br>{target} %{{y:.4f}}<extra></extra>"))
    mode = metrics.mode_of(measure)
    if mode and len(both):
        _, picked = choosing.regret(both, measure, mode, target)
        _mark(fig, finite, picked, measure, target, f"picked by {measure}", "circle-open", 22)
    if len(both):
        _mark(fig, finite, both[target].idxmax(), measure, target, f"best {target}", "star-open", 18)
    note = f"Spearman ρ = {_fmt(row['spearman'])} · Kendall τ = {_fmt(row['kendall'])} · {len(both)} trials"
    note += (f"<br>choosing by {measure} ({BETTER[mode]}): regret {row['regret']:.4f} {target}" if mode
             else f"<br>{measure}: {BETTER[mode]}, so it picks no trial ({measure}_gap does)")
    if len(finite) < len(both):
        note += f"<br>{len(both) - len(finite)} trial(s) at ±∞ (a collapsed spectrum) ranked but not drawn"
    charts._layout(fig, f"{measure} against {target}", f"{measure} ({BETTER[mode]})", target)
    # the numbers between the title and the plot, the legend below it: neither hides a point
    fig.add_annotation(text=note, xref="paper", yref="paper", x=0, y=1.02, xanchor="left", yanchor="bottom",
                       showarrow=False, align="left", font=dict(size=12))
    lines = note.count("<br>") + 1
    fig.update_layout(title=dict(y=0.99, yanchor="top"), margin=dict(t=60 + 18 * lines),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig


def _mark(fig: go.Figure, finite: pd.DataFrame, index: int, measure: str, target: str, name: str, symbol: str,
          size: int) -> None:
    if index in finite.index:
        point = finite.loc[[index]]
        fig.add_trace(go.Scatter(x=point[measure], y=point[target], mode="markers", name=name, hoverinfo="skip",
                                 marker=dict(symbol=symbol, size=size, color="black", line=dict(width=2))))
