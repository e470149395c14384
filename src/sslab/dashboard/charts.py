"""The dashboard's charts: each one a pure function from store tables to (data, plotly figure).

The data a chart draws is computed apart from the drawing, so tests check the numbers (one point
per configuration, the right mean and spread) without a browser, and the page only lays out.
Every table carries the ``study``, ``key`` and ``label`` columns that ``store`` adds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sslab.results import metrics

#: metrics a trial row may carry, in the order a reader looks for them
TRIAL_METRICS = (metrics.KNN, metrics.INVARIANCE, metrics.LOSS)
FINISHED = ("ok", "failed", "stopped")
MAX_LINES = 20


def probe_taps(frame: pd.DataFrame) -> list[str]:
    """The probed taps, shallowest first (conv1, res2, ..., res5 for a ResNet)."""
    return [metrics.probe_tap(c) for c in metrics.probe_columns(frame.columns)]


def trial_metrics(trials: pd.DataFrame) -> list[str]:
    """kNN, the probes, the label-free measures the trials carry, invariance and the loss."""
    present = [m for m in TRIAL_METRICS if m in trials]
    label_free = [m for m in label_free_metrics(trials.columns) if trials[m].notna().any()]
    return present[:1] + [metrics.probe(t) for t in probe_taps(trials)] + label_free + present[1:]


def label_free_metrics(columns) -> list[str]:
    """The label-free measures among ``columns``: the representation's in ``LABEL_FREE``'s order,
    then the embedding's (``embedding/<measure>``)."""
    present = set(columns)
    return metrics.label_free_columns(present) + [metrics.embedding(m) for m in metrics.LABEL_FREE
                                                  if metrics.embedding(m) in present]


def metric_label(metric: str) -> str:
    """A metric as a chooser shows it: a label-free measure with its description and better end."""
    name = metrics.embedding_measure(metric) or metric
    if name not in metrics.LABEL_FREE:
        return metric
    better = {"max": "higher is better", "min": "lower is better"}.get(metrics.mode_of(metric), "neither end is better")
    of = " of the embedding" if name != metric else ""
    return f"{metric} — {metrics.LABEL_FREE[name].description}{of} ({better})"


def best_mask(points: pd.DataFrame, mode: str | None) -> pd.Series:
    """True at each curve's best mean (``ablation_points``' rows) by ``mode``; all False without one."""
    if mode not in ("max", "min") or points.empty:
        return pd.Series(False, index=points.index)
    best = points.groupby("study", sort=False)["mean"].transform("max" if mode == "max" else "min")
    return points["mean"].eq(best) & points["mean"].notna()


def is_log_scale(values: pd.Series) -> bool:
    """Knobs spanning a factor 10 or more (N, P, τ) read better on a log axis."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(values) and values.min() > 0 and values.max() / values.min() >= 10)


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    """Shared look; long legend entries (trial labels) go below the plot so it keeps its width."""
    names = [t.name for t in fig.data if t.name and t.showlegend is not False]
    below = any(len(n) > 40 for n in names)
    legend = dict(font=dict(size=11), **(dict(orientation="h", yanchor="top", y=-0.15, x=0) if below else {}))
    height = 480 + (20 * len(names) if below else 0)
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", height=height,
                      legend=legend, margin=dict(t=60, l=10, r=10))
    return fig


# -------------------------------------------------------------------- ablation curve
def ablation_points(trials: pd.DataFrame, knob: str, metric: str) -> pd.DataFrame:
    """Mean, std and seed count of ``metric`` per study and value of ``knob`` (``ok`` trials only)."""
    column = f"config/{knob}"
    columns = ["study", "value", "mean", "std", "n"]
    if trials.empty or column not in trials or metric not in trials:
        return pd.DataFrame(columns=columns)
    ok = trials[(trials["status"] == "ok") & trials[metric].notna() & trials[column].notna()]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    if "method" in ok:  # a study comparing methods draws one curve per method
        several = ok.groupby("study")["method"].transform("nunique") > 1
        ok = ok.assign(study=ok["study"].astype(str).where(~several, ok["study"].astype(str) + " · " + ok["method"].astype(str)))
    points = (ok.groupby(["study", column])[metric].agg(mean="mean", std="std", n="count")
              .reset_index().rename(columns={column: "value"}))
    return points.sort_values(["study", "value"]).reset_index(drop=True)[columns]


def baseline_levels(baselines: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The untrained backbone's ``metric`` per backbone: mean over the seeds measured."""
    if baselines.empty or metric not in baselines:
        return pd.DataFrame(columns=["backbone", "mean", "n"])
    unique = baselines.drop_duplicates(["backbone", "seed"])
    return unique.groupby("backbone")[metric].agg(mean="mean", n="count").reset_index()


def ablation_figure(points: pd.DataFrame, knob: str, metric: str, *, defaults: dict[str, float] | None = None,
                    baselines: pd.DataFrame | None = None, unordered: set[str] = frozenset(),
                    best: pd.Series | None = None) -> go.Figure:
    """One curve per study; the studies in ``unordered`` (searches, whose other knobs vary from point
    to point) are drawn as points only, since a line between them would suggest a curve. ``best``
    (``best_mask``) points at each curve's best point (an arrow: a marker of its own would also
    change the curve's legend symbol)."""
    fig = go.Figure()
    for study, group in points.groupby("study", sort=False):
        spread = group["std"].fillna(0)
        fig.add_trace(go.Scatter(
            x=group["value"], y=group["mean"], name=str(study), mode="markers" if study in unordered else "lines+markers",
            error_y=dict(type="data", array=spread, visible=True),
            customdata=np.stack([group["std"], group["n"]], axis=-1),
            hovertemplate=f"{knob}=%{{x}}<br>{metric} %{{y:.4f}} ± %{{customdata[0]:.4f}} (n=%{{customdata[1]}})<extra>%{{fullData.name}}</extra>",
        ))
    for value in sorted({v for v in (defaults or {}).values() if v is not None}):
        fig.add_vline(x=value, line_dash="dot", line_color="gray", annotation_text="paper default",
                      annotation_position="top")
    for _, row in (baselines if baselines is not None else pd.DataFrame()).iterrows():
        fig.add_hline(y=row["mean"], line_dash="dash", line_color="firebrick",
                      annotation_text=f"random init ({row['backbone']})", annotation_position="bottom right")
    log = not points.empty and is_log_scale(points["value"])
    top = points[best.reindex(points.index, fill_value=False)] if best is not None else points.iloc[0:0]
    for _, row in top.iterrows():  # a log axis places annotations in log10 units
        fig.add_annotation(x=math.log10(row["value"]) if log else row["value"], y=row["mean"], text="best",
                           showarrow=True, arrowhead=2, ax=0, ay=-32)
    if log:
        fig.update_xaxes(type="log")
    return _layout(fig, f"{metric} against {knob}: mean ± std over seeds", knob, metric)


# ---------------------------------------------------------------------- layer probes
#: how the probe and invariance pages group trials: one line per method (within its study), per
#: configuration (the method and its knob values, pooled over seeds) or per trial
GROUPINGS = ("method", "configuration", "trial")


def _group(frame: pd.DataFrame, by: str) -> pd.Series:
    if by not in GROUPINGS:
        raise ValueError(f"group by {by!r}: choose one of {GROUPINGS}")
    if by == "method":
        return frame["study"].astype(str) + " · " + frame["method"].astype(str)
    return frame["configuration" if by == "configuration" else "label"].astype(str)


def probe_profile(trials: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Probe accuracy per tap (mean, std and count over the group's trials), one group per ``method``
    (within its study), per ``configuration`` (pooled over seeds) or per ``trial``."""
    taps = probe_taps(trials)
    columns = ["group", "tap", "mean", "std", "n"]
    if trials.empty or not taps:
        return pd.DataFrame(columns=columns)
    ok = trials[trials["status"] == "ok"]
    long = ok.assign(group=_group(ok, by)).melt(id_vars="group", value_vars=[metrics.probe(t) for t in taps],
                                       var_name="tap", value_name="accuracy").dropna(subset=["accuracy"])
    long["tap"] = long["tap"].map(metrics.probe_tap)
    profile = long.groupby(["group", "tap"], sort=False)["accuracy"].agg(mean="mean", std="std", n="count").reset_index()
    profile["tap"] = pd.Categorical(profile["tap"], categories=taps, ordered=True)
    return profile.sort_values(["group", "tap"]).reset_index(drop=True)[columns]


def baseline_profile(baselines: pd.DataFrame) -> pd.DataFrame:
    taps = probe_taps(baselines)
    if baselines.empty or not taps:
        return pd.DataFrame(columns=["group", "tap", "mean", "std", "n"])
    unique = baselines.drop_duplicates(["backbone", "seed"]).assign(method="random init", study=baselines["backbone"])
    return probe_profile(unique.assign(status="ok"), "method")


def probe_figure(profile: pd.DataFrame, baseline: pd.DataFrame | None = None) -> go.Figure:
    fig = go.Figure()
    for group, rows in profile.groupby("group", sort=False, observed=True):
        fig.add_trace(go.Scatter(x=rows["tap"].astype(str), y=rows["mean"], name=str(group), mode="lines+markers",
                                 error_y=dict(type="data", array=rows["std"].fillna(0), visible=True)))
    for group, rows in (baseline if baseline is not None else pd.DataFrame(columns=["group"])).groupby("group", sort=False, observed=True):
        fig.add_trace(go.Scatter(x=rows["tap"].astype(str), y=rows["mean"], name=str(group), mode="lines+markers",
                                 line=dict(dash="dash", color="gray")))
    return _layout(fig, "Linear probe top-1 per layer (frozen backbone)", "layer", "probe top-1")


# ------------------------------------------------------------------------ invariance
def invariance_groups(invariance: pd.DataFrame, trials: pd.DataFrame, by: str = "trial") -> pd.DataFrame:
    """The l2 distances between an image's representation and its transformed version's (PIRL's
    f(v_I) and g(v_I^t)), each tagged with its group (``GROUPINGS``)."""
    if invariance.empty or trials.empty:
        return pd.DataFrame(columns=["group", "distance"])
    frame = invariance.merge(trials[["key", "method"]], on="key", how="inner")
    return pd.DataFrame({"group": _group(frame, by).to_numpy(), "distance": frame["distance"].to_numpy()})


def invariance_figure(groups: pd.DataFrame, kind: str = "ecdf") -> go.Figure:
    fig = go.Figure()
    for group, rows in groups.groupby("group", sort=False):
        distances = np.sort(rows["distance"].to_numpy())
        if kind == "ecdf":
            fig.add_trace(go.Scatter(x=distances, y=np.arange(1, len(distances) + 1) / len(distances),
                                     name=str(group), mode="lines", line_shape="hv"))
        else:
            fig.add_trace(go.Histogram(x=distances, name=str(group), histnorm="probability density", opacity=0.55))
    if kind != "ecdf":
        fig.update_layout(barmode="overlay")
    y = "fraction of images ≤ distance" if kind == "ecdf" else "density"
    return _layout(fig, "Invariance: ‖f(v_I) − g(v_I^t)‖₂ per image (smaller is more invariant)", "l2 distance", y)


# -------------------------------------------------------------------- training curves
#: the per-epoch share of CPU time stolen from the machine (src/sslab/results/cpu_steal.py)
STEAL = "epoch_cpu_steal"


def epoch_metrics(epochs: pd.DataFrame) -> list[str]:
    skip = {"study", "trial_id", "key", "label", "status", "epoch", "restarts"}
    return [c for c in epochs.columns if c not in skip and pd.api.types.is_numeric_dtype(epochs[c])
            and epochs[c].notna().any()]


def training_figure(epochs: pd.DataFrame, metric: str) -> go.Figure:
    """One line per trial; a trial stopped early ends in an ✕, a failed one in a red ✕. Where the
    epochs recorded it, each point's hover says the CPU steal of its epoch, so that a slow epoch
    on a busy shared machine is not read as a slow method."""
    fig = go.Figure()
    for key, rows in epochs.dropna(subset=[metric]).groupby("key", sort=False):
        rows = rows.sort_values("epoch")
        status = rows["status"].iloc[-1]
        name = rows["label"].iloc[-1] + ("" if status == "ok" else f" ({status})")
        steal = rows[STEAL] if STEAL in rows and metric != STEAL and rows[STEAL].notna().any() else None
        fig.add_trace(go.Scatter(
            x=rows["epoch"], y=rows[metric], name=name, mode="lines+markers", marker=dict(size=4),
            customdata=None if steal is None else steal.to_numpy(),
            hovertemplate=None if steal is None else
            f"epoch %{{x}}<br>{metric} %{{y}}<br>CPU steal %{{customdata:.0%}}<extra>{name}</extra>"))
        if status in ("stopped", "failed"):
            fig.add_trace(go.Scatter(x=rows["epoch"].iloc[-1:], y=rows[metric].iloc[-1:], mode="markers",
                                       marker=dict(symbol="x", size=13, color="firebrick" if status == "failed" else "black"),
                                       name=f"{status} early", legendgroup=status, showlegend=False,
                                       hovertemplate=f"{status} after epoch %{{x}}<extra>{name}</extra>"))
    last = int(epochs["epoch"].max()) if len(epochs) else 0
    fig.update_xaxes(dtick=max(1, math.ceil(last / 10)))  # whole epochs only
    return _layout(fig, f"{metric} per epoch (✕ = stopped early, red ✕ = failed)", "epoch", metric)


# ---------------------------------------------------------------------------- search
def search_value(trials: pd.DataFrame, metric: str) -> pd.Series:
    """The value the searcher saw: the final metric, or the last per-epoch one for a stopped trial."""
    value = trials[metric] if metric in trials else pd.Series(math.nan, index=trials.index)
    monitor = f"monitor_{metric}"
    if monitor in trials:
        value = value.where(value.notna(), trials[monitor])
    return value.astype(float)


def search_history(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """Optuna's optimisation history from the store: every trial in finishing order, its value,
    and the best value of a completed (``ok``) trial so far."""
    done = trials[trials["status"].isin(FINISHED)].sort_values("finished_at" if "finished_at" in trials else "trial_id")
    history = pd.DataFrame({"number": range(len(done)), "label": done["label"].to_numpy(),
                            "status": done["status"].to_numpy(), "value": search_value(done, metric).to_numpy()})
    ok_values = history["value"].where(history["status"] == "ok")
    best = ok_values.cummax() if mode == "max" else ok_values.cummin()
    history["best_so_far"] = best.ffill()
    return history


def history_figure(history: pd.DataFrame, metric: str) -> go.Figure:
    fig = go.Figure()
    for status, symbol in (("ok", "circle"), ("stopped", "x"), ("failed", "x-open")):
        rows = history[history["status"] == status]
        if len(rows):
            fig.add_trace(go.Scatter(x=rows["number"], y=rows["value"], mode="markers", name=status,
                                     marker=dict(symbol=symbol, size=9), text=rows["label"],
                                     hovertemplate="%{text}<br>%{y:.4f}<extra>" + status + "</extra>"))
    fig.add_trace(go.Scatter(x=history["number"], y=history["best_so_far"], mode="lines", name="best so far",
                             line_shape="hv"))
    return _layout(fig, "Optimisation history (stopped trials at their last per-epoch value)", "trial", metric)


def param_importance(trials: pd.DataFrame, knobs: list[str], metric: str, mode: str = "max") -> pd.Series:
    """Optuna's PED-ANOVA importances (Watanabe et al., 2023: which knobs set the top trials apart
    from the rest) of each knob for ``metric`` over the completed trials, each knob's range taken
    from the values tried. The top set is the best 10% of trials, but at least three of them, so a
    small search still has a region to explain. Empty when fewer than three trials completed."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    if metric not in trials:
        return pd.Series(dtype=float)
    ok = trials[(trials["status"] == "ok") & trials[metric].notna()]
    distributions = {k: _distribution(ok[f"config/{k}"]) for k in knobs if f"config/{k}" in ok}
    distributions = {k: d for k, d in distributions.items() if d is not None}
    if len(ok) < 3 or not distributions:
        return pd.Series(dtype=float)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in ok.iterrows():
        params = {k: _param(row[f"config/{k}"], d) for k, d in distributions.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(row[metric])))
    quantile = min(0.5, max(0.1, 3 / len(ok)))
    importances = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(target_quantile=quantile))
    return pd.Series(importances, dtype=float).sort_values()


def _distribution(values: pd.Series):
    from optuna.distributions import FloatDistribution, IntDistribution

    numeric = pd.to_numeric(values, errors="coerce").dropna()
    if numeric.empty or numeric.min() == numeric.max():
        return None
    log = is_log_scale(numeric)
    if (numeric == numeric.round()).all():
        return IntDistribution(int(numeric.min()), int(numeric.max()), log=log)
    return FloatDistribution(float(numeric.min()), float(numeric.max()), log=log)


def _param(value, distribution):
    return int(value) if type(distribution).__name__ == "IntDistribution" else float(value)


def importance_figure(importance: pd.Series) -> go.Figure:
    fig = go.Figure(go.Bar(x=importance.to_numpy(), y=importance.index, orientation="h"))
    return _layout(fig, "Hyperparameter importance (PED-ANOVA over completed trials)", "importance", "")


def parallel_figure(trials: pd.DataFrame, knobs: list[str], metric: str) -> go.Figure:
    """Parallel coordinates of every finished trial: each knob (log10 where it spans decades), then the metric."""
    done = trials[trials["status"].isin(("ok", "stopped"))]
    value = search_value(done, metric)
    dimensions = []
    for knob in knobs:
        column = pd.to_numeric(done.get(f"config/{knob}"), errors="coerce")
        if column is None or column.isna().all():
            continue
        log = is_log_scale(column)
        dimensions.append(dict(label=f"log10 {knob}" if log else knob, values=np.log10(column) if log else column))
    dimensions.append(dict(label=metric, values=value))
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=dict(color=value, colorscale="Viridis", showscale=True)))
    return _layout(fig, "Parallel coordinates (colour: " + metric + ")", "", "")
