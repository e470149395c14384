"""Every trial of the selection in one filterable table, with a CSV download."""

import streamlit as st

from sslab.dashboard import selection

st.title("Trials")
chosen = selection.current()
trials = selection.require_trials(chosen)

left, right = st.columns([1, 2])
statuses = sorted(trials["status"].dropna().unique())
keep = left.multiselect("Status", statuses, default=statuses, key="trials_status")
text = right.text_input("Trial contains", key="trials_text", placeholder="e.g. loss_weight=0.5")
shown = trials[trials["status"].isin(keep)]
if text:
    shown = shown[shown["label"].str.contains(text, regex=False) | shown["trial_id"].str.contains(text, regex=False)]
columns = [c for c in shown.columns if c not in ("key",)]
st.caption(f"{len(shown)} of {len(trials)} trials")
st.dataframe(shown[columns], hide_index=True)
st.download_button("Download CSV", shown[columns].to_csv(index=False).encode(), file_name="trials.csv",
                   mime="text/csv", key="trials_csv")
