"""Optuna searches: optimisation history, hyperparameter importance, parallel coordinates."""

import streamlit as st

from sslab.dashboard import charts, selection
from sslab.results import metrics

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

# the study's own metric first; then every metric with a better end the trials carry (label-free ones too)
options = list(dict.fromkeys([study.metric, *(m for m in charts.trial_metrics(trials) if metrics.mode_of(m))]))
metric = st.selectbox("Metric", options, format_func=charts.metric_label, key="search_metric",
                      help="What the history's best-so-far line and the importances are computed on")
mode = study.mode if metric == study.metric else metrics.mode_of(metric)
if mode == "min":
    st.caption(f"Lower {metric} is better: the best so far is the lowest.")

history = charts.search_history(trials, metric, mode)
st.plotly_chart(charts.history_figure(history, metric), key="search_history")
left, right = st.columns(2)
with left:
    importance = charts.param_importance(trials, study.knobs, metric, mode)
    if importance.empty:
        st.info("Importance needs at least three completed trials that differ in a hyperparameter.")
    else:
        st.plotly_chart(charts.importance_figure(importance), key="search_importance")
with right:
    st.plotly_chart(charts.parallel_figure(trials, study.knobs, metric),
                    key="search_parallel")
