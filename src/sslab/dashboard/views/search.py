"""Optuna searches: optimisation history, hyperparameter importance, parallel coordinates."""

import streamlit as st

from sslab.dashboard import charts, selection

st.title("Search")
chosen = selection.current()
selection.require_trials(chosen)
candidates = [s for s in chosen.chosen if s.knobs and not s.trials.empty]
searches = [s for s in candidates if s.kind == "search"] or candidates
if not searches:
    st.info("None of the selected studies varies a hyperparameter.")
    st.stop()
names = [s.name for s in searches]
study = searches[names.index(st.selectbox("Study", names, key="search_study"))]
trials = study.trials
if chosen.trial_keys:
    trials = trials[trials["key"].isin(chosen.trial_keys)]
if study.kind == "search":
    st.caption(f"The Optuna study itself: `{study.location}/optuna.journal` "
               "(`optuna.load_study(study_name=None, storage=JournalStorage(JournalFileBackend(path)))`).")

history = charts.search_history(trials, study.metric, study.mode)
st.plotly_chart(charts.history_figure(history, study.metric), key="search_history")
left, right = st.columns(2)
with left:
    importance = charts.param_importance(trials, study.knobs, study.metric, study.mode)
    if importance.empty:
        st.info("Importance needs at least three completed trials that differ in a hyperparameter.")
    else:
        st.plotly_chart(charts.importance_figure(importance), key="search_importance")
with right:
    st.plotly_chart(charts.parallel_figure(trials, study.knobs, study.metric),
                    key="search_parallel")
