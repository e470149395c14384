"""Every study under the results root: state, progress, best configuration, compute spent."""

import time

import pandas as pd
import streamlit as st

from sslab.dashboard import selection, store

st.title("Studies")
chosen = selection.current()


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _rows(studies: list[store.StudyData]) -> pd.DataFrame:
    now = time.time()
    rows = []
    for data in studies:
        status = store.status_of(data, now)
        rows.append({
            "study": status.name, "kind": status.kind, "method": status.method, "state": status.state,
            "trials": f"{status.done}/{status.total if status.total is not None else '?'}",
            **{s: status.counts.get(s, 0) for s in ("ok", "stopped", "failed", "running")},
            "best configuration": status.best, f"best {data.metric}": status.best_value,
            "spread": status.best_spread,
            "device h": status.device_s / 3600, "wall h": status.wall_s / 3600, "images": status.images_seen,
            "CPU steal": 100 * status.cpu_steal,
            "last write": _ago(now - status.updated if status.updated else None),
            "description": data.meta.get("description", ""),
        })
    return pd.DataFrame(rows)


@st.fragment(run_every=10 if st.session_state.get("auto_refresh", True) else None)
def overview() -> None:
    studies = selection.load(chosen.root)
    if not studies:
        st.info(f"No studies under **{chosen.root}** yet. Run one (`python studies/pirl_lambda.py` or "
                "`sslab run NAME`), or point the sidebar's *Results root* (or `$SSLAB_RESULTS`) at a store.")
        return
    table = _rows(studies)
    finished = int(table[["ok", "stopped", "failed"]].to_numpy().sum())
    left, middle, right = st.columns(3)
    left.metric("Studies", len(studies))
    middle.metric("Trials finished", finished)
    right.metric("Device hours", f"{table['device h'].sum():.2f}")
    st.dataframe(table, hide_index=True,
                 column_config={"device h": st.column_config.NumberColumn(format="%.3f"),
                                "wall h": st.column_config.NumberColumn(format="%.3f"),
                                "CPU steal": st.column_config.NumberColumn(
                                    format="%.0f %%", help="share of the machine's CPU time its hypervisor gave "
                                    "elsewhere while the trials ran: their times are slower than the code")})
    for data in studies:
        if data.problem:
            st.warning(f"**{data.name}**: {data.problem}")
        if data.setting_note:
            st.info(f"**{data.name}**: {data.setting_note}")
        elif data.trials.empty:
            st.info(f"**{data.name}**: no trial has finished yet "
                    f"(0 of {data.total if data.total is not None else '?'}); charts appear when the first lands.")
        if data.setting_note:
            st.info(f"**{data.name}**: {data.setting_note}")
    verdicts = [found for data in studies if not (found := store.findings_of(data)).empty]
    if verdicts:
        st.subheader("The papers' findings")
        st.caption("Reproduced or contradicted when the difference exceeds both sides' spread over seeds; "
                   "one seed establishes nothing.")
        findings = pd.concat(verdicts, ignore_index=True)
        st.dataframe(findings[["study", "claim", "verdict", "better_mean", "better_std", "worse_mean", "worse_std",
                               "why", "source"]],
                     hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                                                     ("better_mean", "better_std", "worse_mean", "worse_std")})
    interrupted = table.loc[table["state"] == "interrupted", "study"].tolist()
    if interrupted:
        st.caption("Interrupted studies resume where they stopped: " + ", ".join(f"`sslab run {n}`" for n in interrupted))


st.toggle("Refresh every 10 s", value=True, key="auto_refresh",
          help="Re-read the root while studies run (only changed files are read again)")
overview()
