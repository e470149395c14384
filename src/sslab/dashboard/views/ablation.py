"""A metric against one hyperparameter: mean ± std over seeds, paper default, random-init baseline."""

import streamlit as st

from sslab.dashboard import charts, selection

st.title("Ablation curve")
chosen = selection.current()
trials = selection.require_trials(chosen)
knobs = chosen.knobs()
if not knobs:
    st.info("The selected studies vary no hyperparameter, so there is no curve to draw.")
    st.stop()

left, right = st.columns(2)
knob = left.selectbox("Hyperparameter", knobs, key="ablation_knob")
metric = right.selectbox("Metric", charts.trial_metrics(trials), key="ablation_metric")

# only the studies that vary this knob: another study's trials all sit at its fixed value
varying = [s.name for s in chosen.chosen if knob in s.knobs]
points = charts.ablation_points(trials[trials["study"].isin(varying)], knob, metric)
if points.empty:
    st.info(f"No completed trial of the selected studies reports {metric} for {knob} yet.")
    st.stop()
defaults = {s.name: (s.meta.get("defaults") or {}).get(knob) for s in chosen.chosen if s.name in set(points["study"])}
baselines = charts.baseline_levels(chosen.table("baselines"), metric)
searches = {s.name for s in chosen.chosen if s.kind == "search"}
st.plotly_chart(charts.ablation_figure(points, knob, metric, defaults=defaults, baselines=baselines, unordered=searches),
                key="ablation_chart")
st.caption("Error bars: one standard deviation across seeds (n per point in the table); "
           "dotted: the paper's default; dashed: the same backbone untrained.")
st.dataframe(points, hide_index=True)
