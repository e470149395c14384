"""A metric against one hyperparameter: mean ± std over seeds, paper default, random-init baseline."""

import streamlit as st

from sslab.dashboard import charts, selection
from sslab.results import metrics


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _spread(row) -> str:
    return f"{row['mean']:.4f}" + (f" ± {row['std']:.4f}" if row["n"] > 1 else " (one seed)")


def _best_against_default(points, best, defaults, knob) -> list[str]:
    """Per curve: its best point beside the paper default's, where the curve has the default."""
    lines = []
    for curve, rows in points.groupby("study", sort=False):
        default = defaults.get(str(curve).split(" · ")[0])
        top, at_default = rows[best.reindex(rows.index, fill_value=False)], rows[rows["value"] == default]
        if top.empty or at_default.empty:
            continue
        top, at_default = top.iloc[0], at_default.iloc[0]
        lines.append(f"**{curve}**: best {knob}={_value(top['value'])}: {_spread(top)}; paper default "
                     f"{knob}={_value(default)}: {_spread(at_default)} "
                     f"(difference {top['mean'] - at_default['mean']:+.4f})")
    return lines


st.title("Ablation curve")
chosen = selection.current()
trials = selection.require_trials(chosen)
knobs = chosen.knobs()
if not knobs:
    st.info("The selected studies vary no hyperparameter, so there is no curve to draw.")
    st.stop()

left, right = st.columns(2)
knob = left.selectbox("Hyperparameter", knobs, key="ablation_knob")
metric = right.selectbox("Metric", charts.trial_metrics(trials), format_func=charts.metric_label, key="ablation_metric")
# which end is better: a study's own declared metric keeps its mode, any other metric its own
mode = next((s.mode for s in chosen.chosen if s.metric == metric), metrics.mode_of(metric))

# only the studies that vary this knob: another study's trials all sit at its fixed value
varying = [s.name for s in chosen.chosen if knob in s.knobs]
points = charts.ablation_points(trials[trials["study"].isin(varying)], knob, metric)
if points.empty:
    st.info(f"No completed trial of the selected studies reports {metric} for {knob} yet.")
    st.stop()
curves = set(points["study"].astype(str).str.split(" · ").str[0])  # a study of several methods: one curve each
defaults = {s.name: (s.meta.get("defaults") or {}).get(knob) for s in chosen.chosen if s.name in curves}
baselines = charts.baseline_levels(chosen.table("baselines"), metric)
searches = {s.name for s in chosen.chosen if s.kind == "search"}
best = charts.best_mask(points, mode)
st.plotly_chart(charts.ablation_figure(points, knob, metric, defaults=defaults, baselines=baselines, unordered=searches,
                                       best=best), key="ablation_chart")
st.caption("Error bars: one standard deviation across seeds (n per point in the table); "
           "dotted: the paper's default; dashed: the same backbone untrained; "
           + (f"best: each curve's best point ({'higher' if mode == 'max' else 'lower'} is better)." if mode
              else f"{metric} has no better end, so no point is marked best."))
for line in _best_against_default(points, best, defaults, knob):
    st.caption(line)
st.dataframe(points.assign(best=best), hide_index=True)
