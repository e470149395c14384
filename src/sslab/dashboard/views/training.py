"""Loss and per-epoch metrics per trial; trials stopped early or failed are marked."""

import streamlit as st

from sslab.dashboard import charts, selection

st.title("Training curves")
chosen = selection.current()
trials = selection.require_trials(chosen)
epochs = selection.require_table(chosen, "epochs", "No per-epoch rows (the store's epochs table) in the selection yet.")

metrics = charts.epoch_metrics(epochs)
left, right = st.columns(2)
metric = left.selectbox("Metric", metrics, index=metrics.index("loss") if "loss" in metrics else 0, key="training_metric")
limit = right.slider("Most trials drawn", 1, 100, charts.MAX_LINES, key="training_limit")
if epochs["key"].nunique() > limit:
    drawn = trials[trials["key"].isin(set(epochs["key"].unique()))]  # a set: isin on 200k categories is slow
    epochs = epochs[epochs["key"].isin(chosen.best_keys(drawn, limit))]
    st.caption(f"Showing {limit} trials (the best first); pick trials in the sidebar to compare others.")
st.plotly_chart(charts.training_figure(epochs, metric), key="training_chart")
