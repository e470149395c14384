"""Invariance (PIRL sec. 5.2): distances between the representations of an image and of its
transformed version, per trial, configuration or method."""

import streamlit as st

from sslab.dashboard import charts, selection

st.title("Invariance")
chosen = selection.current()
trials = selection.require_trials(chosen)
invariance = selection.require_table(chosen, "invariance", "No trial in the selection recorded invariance samples (the store's invariance table).")

left, right = st.columns(2)
by = left.radio("One curve per", ["trial", "configuration", "method"], horizontal=True, key="invariance_by")
kind = right.radio("Show", ["ecdf", "histogram"], horizontal=True, key="invariance_kind")
if by == "trial" and invariance["key"].nunique() > charts.MAX_LINES:
    invariance = invariance[invariance["key"].isin(chosen.best_keys(trials, charts.MAX_LINES))]
    st.caption(f"Showing the {charts.MAX_LINES} best trials; pick trials in the sidebar to compare others.")
groups = charts.invariance_groups(invariance, trials, by)
st.plotly_chart(charts.invariance_figure(groups, kind), key="invariance_chart")
st.dataframe(groups.groupby("group")["distance"].describe()[["count", "mean", "50%", "std"]])
