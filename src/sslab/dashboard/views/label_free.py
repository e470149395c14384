"""Label-free measures against kNN: would choosing a configuration by RankMe, α-ReQ, LiDAR,
alignment or uniformity, without labels, pick what kNN picks? One scatter per measure over a
study's trials, with the rank correlations and the regret of choosing by the measure."""

import streamlit as st

from sslab.dashboard import agreement, selection
from sslab.results import metrics

st.title("Label-free vs kNN")
chosen = selection.current()
selection.require_trials(chosen)
studies = [s for s in chosen.chosen if not s.trials.empty]
names = [s.name for s in studies]
first = next((i for i, s in enumerate(studies) if agreement.measures_of(s.trials)), 0)
study = studies[names.index(st.selectbox("Study", names, index=first, key="label_free_study"))]

runs = agreement.earlier_settings(study.meta)
if runs:
    last = "the last run's setting"
    run = st.selectbox("Setting", [last, *runs], key=f"label_free_setting_{study.name}",
                       help="The study's trials of one setting at a time; earlier runs by the command that ran them")
    if run != last:
        study = selection.read_setting(chosen.root, study, runs[run])
if study.setting_note:
    st.caption(study.setting_note)

trials = study.trials
if chosen.trial_keys:
    trials = trials[trials["key"].isin(chosen.trial_keys)]
measures = agreement.measures_of(trials)
if not measures:
    st.info(f"**{study.name}** has no label-free measure ({', '.join(metrics.LABEL_FREE)}) in its finished trials: "
            "they were evaluated by an sslab that did not measure them yet. Rerun the study with the current sslab "
            f"(`sslab run {study.name}`) to record them; its finished trials are not retrained, so rerun into a "
            "fresh `--results` root to measure those.")
    st.stop()

left, right = st.columns(2)
res5 = metrics.probe("res5")
targets = [metrics.KNN] + ([res5] if res5 in trials and trials[res5].notna().any() else [])
target = left.radio("Against", targets, horizontal=True, key="label_free_target",
                    help="The labelled evaluation the measures are compared with")
by = right.radio("Colour by", ["method", "configuration"], horizontal=True, key="label_free_by")

table = agreement.agreement_rows(trials, target)
columns = st.columns(2)
for i, row in enumerate(table.to_dict("records")):
    with columns[i % 2]:
        st.plotly_chart(agreement.agreement_figure(trials, row["measure"], target, row, by),
                        key=f"label_free_{row['measure']}")
st.caption(f"One point per finished trial. ρ, τ: Spearman's and Kendall's (τ-b) rank correlations of the measure "
           f"with {target} over these trials, the measure negated where lower is better, so +1 means it orders "
           f"the trials exactly as {target} does (as in the summary's table). ○: the trial the measure picks (its better end); "
           f"☆: the best {target}. Regret: the best {target} minus the picked trial's.")
st.dataframe(table, hide_index=True,
             column_config={c: st.column_config.NumberColumn(format="%.4f") for c in
                            ("spearman", "kendall", f"picked {target}", f"best {target}", "regret")})
