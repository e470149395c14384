"""The sidebar every page shares: the results root, the studies and the trials being compared.

``app.py`` draws it once per run and leaves a :class:`Selection` in the session state; each page
takes it with :func:`current`. Loading is cached by the store files' modification times, so a page
re-reads a study exactly when the study wrote something new (and at once when it did).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from sslab.dashboard import store
from sslab.results.store import results_root


@dataclass
class Selection:
    root: str
    studies: list[store.StudyData]  # every study under the root, selected or not
    selected: list[str]
    trial_keys: list[str]  # empty: every trial of the selected studies

    @property
    def chosen(self) -> list[store.StudyData]:
        return [s for s in self.studies if s.name in self.selected]

    def table(self, name: str) -> pd.DataFrame:
        """One store table across the selected studies, narrowed to the selected trials."""
        frame = store.combine(self.chosen, name)
        if self.trial_keys and "key" in frame:
            frame = frame[frame["key"].isin(self.trial_keys)]
        return frame.reset_index(drop=True)

    def best_keys(self, trials: pd.DataFrame, limit: int) -> list[str]:
        """The ``limit`` best trials by each one's study metric (ranked within its study, then
        interleaved, so every selected study keeps its best trials on the chart)."""
        ranked = []
        for data in self.chosen:
            rows = trials[trials["study"] == data.name]
            metric = data.metric if data.metric in rows else None
            if metric:
                rows = rows.sort_values(metric, ascending=data.mode == "min", na_position="last")
            ranked.append(rows.assign(rank=range(len(rows))))
        if not ranked:
            return []
        return pd.concat(ranked).sort_values("rank", kind="stable")["key"].head(limit).tolist()

    def knobs(self) -> list[str]:
        return list(dict.fromkeys(k for s in self.chosen for k in s.knobs))


@st.cache_data(ttl=3, show_spinner=False)
def _scan(root: str) -> dict:
    return store.scan(root)


@st.cache_data(max_entries=64, show_spinner="Reading the results store…")
def _read(root: str, name: str, stamp: tuple, setting_ids: tuple[str, ...] = ()) -> store.StudyData:
    return store.read_study(root, name, stamp, setting_ids)


def read_setting(root: str, data: store.StudyData, setting_ids: tuple[str, ...]) -> store.StudyData:
    """``data`` as of another of its settings (an earlier run's), cached like the last run's."""
    if not setting_ids or list(setting_ids) == list(data.meta.get("setting_ids") or []):
        return data
    return _read(root, data.name, _scan(root).get(data.name, ()), tuple(setting_ids))


def load(root: str) -> list[store.StudyData]:
    try:
        found = _scan(root)
    except OSError as err:
        st.error(f"Cannot list the results root {root}: {err}. Check the path or the bucket's credentials.")
        return []
    return [_read(root, name, stamp) for name, stamp in found.items()]


def sidebar() -> Selection:
    """Draw the shared sidebar and remember the selection for the page about to run."""
    with st.sidebar:
        root = st.text_input("Results root", value=results_root(), key="root",
                             help="Where the studies write their stores ($SSLAB_RESULTS; a path or s3://...)")
        studies = load(root)
        readable = [s.name for s in studies if not s.trials.empty]
        selected = st.multiselect("Studies", readable, default=readable, key="studies",
                                  help="Charts overlay every selected study")
        chosen = [s for s in studies if s.name in selected]
        labels = store.combine(chosen, "trials")
        options = labels.set_index("key")["label"].to_dict() if not labels.empty else {}
        keys = st.multiselect("Compare trials (none = all)", list(options), format_func=options.get, key="trials",
                              help="Narrow every chart to these trials; they may come from several studies")
        if st.button("Reload from disk", help="Forget cached tables and read the store again"):
            st.cache_data.clear()
            st.rerun()
    selection = Selection(root, studies, selected, [k for k in keys if k in options])
    st.session_state["selection"] = selection
    return selection


def current() -> Selection:
    """The selection ``app.py`` drew for this run (drawn here if a page runs on its own)."""
    return st.session_state.get("selection") or sidebar()


def require_trials(selection: Selection, what: str = "trials") -> pd.DataFrame:
    """The selected trials, or a message that says why there are none (and stop the page)."""
    if not selection.studies:
        st.info(f"No studies under **{selection.root}** yet. Run one (`python studies/pirl_lambda.py` or "
                "`sslab run NAME`), or point the sidebar's *Results root* (or `$SSLAB_RESULTS`) at a store.")
        st.stop()
    trials = selection.table("trials")
    if trials.empty:
        st.info(f"No finished {what} in the selected studies yet: pick a study in the sidebar, "
                "or wait for the first trial to land (the Studies page shows progress).")
        st.stop()
    return trials


def require_table(selection: Selection, name: str, missing: str) -> pd.DataFrame:
    """One store table across the selection, or the ``missing`` message (and stop the page)."""
    frame = selection.table(name)
    if frame.empty:
        st.info(missing)
        st.stop()
    return frame
