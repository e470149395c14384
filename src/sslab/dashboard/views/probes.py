"""Linear-probe accuracy per tap (conv1, res2..res5): where each representation peaks."""

import streamlit as st

from sslab.dashboard import charts, selection

st.title("Layer probes")
chosen = selection.current()
trials = selection.require_trials(chosen)
if not charts.probe_taps(trials):
    st.info("No trial in the selection has linear-probe results (probe_<tap>_top1) yet.")
    st.stop()

left, right = st.columns(2)
by = left.radio("One line per", list(charts.GROUPINGS), horizontal=True, key="probes_by")
baseline = right.toggle("Random-init baseline", value=True, key="probes_baseline")
ok = trials[trials["status"] == "ok"]
if by == "trial" and len(ok) > charts.MAX_LINES:
    ok = ok[ok["key"].isin(chosen.best_keys(ok, charts.MAX_LINES))]
    st.caption(f"Showing the {charts.MAX_LINES} best trials; pick trials in the sidebar to compare others.")
profile = charts.probe_profile(ok, by)
base = charts.baseline_profile(chosen.table("baselines")) if baseline else None
st.plotly_chart(charts.probe_figure(profile, base), key="probes_chart")
st.dataframe(profile.pivot_table(index="group", columns="tap", values="mean", observed=True))
