"""What the Neighbours and Embedding map pages show: each chosen trial's (and its random-init
baseline's) pictures, read from the results store for those trials only (``results/pictures.py``),
and drawn as a grid of thumbnails or as one map per trial.

The store holds, per trial and per baseline, the nearest training images of a fixed set of test
queries and a t-SNE map of test features, both computed where the features were
(``evaluation/pictures.py``); and once per dataset its thumbnails. Nothing here computes a
feature: no Ray, no torch.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
import streamlit as st

from sslab.results import pictures as stored
from sslab.results.store import ResultsStore, StoreError

#: trials a page shows at once (each a row of thumbnails or a map)
MAX_TRIALS = 6
#: on-screen side of a thumbnail, px (stored at most 32 px: drawn enlarged, pixel for pixel)
THUMBNAIL_PX = 64
#: why a page has nothing to show: the store's pictures came with sslab's final evaluation from a given release on
NONE_RECORDED = ("No trial in the selection recorded its {what} (the store's {table}/ folder): a trial records "
                 "them at its final evaluation when that has labels, and trials recorded before sslab did have "
                 "none; run a study's trials again into a new results root to see them.")


@dataclass(frozen=True)
class Subject:
    """A row of the neighbours grid or one map: a finished trial, or a random-init baseline."""

    study: str
    #: the pictures' key in the store (a trial id, or ``pictures.baseline_id``)
    key: str
    label: str
    #: the thumbnails' key of its data (``pictures.dataset_key``); None when its row lacks the data fields
    dataset: str | None
    #: class names by label, where the row names them (``data/train_classes``, or the evaluation dataset's: up
    #: to 20 classes)
    classes: tuple[str, ...] | None
    wall_s: float = math.nan
    baseline: bool = False


def _classes(row: pd.Series) -> tuple[str, ...] | None:
    """The class names of the data the pictures show (the labelled evaluation dataset's, where a run has one)."""
    for column in ("data/eval_train_classes", "data/train_classes"):
        names = row.get(column)
        if names is not None and not isinstance(names, (float, str)) and len(names):
            return tuple(str(n) for n in names)
    return None


def subjects(trials: pd.DataFrame, *, baselines: bool = True) -> list[Subject]:
    """The finished trials of ``trials`` (rows of the dashboard's trials table), each followed, with
    ``baselines``, by the random-init baseline of its baseline setting and seed (once each)."""
    out, seen = [], set()
    for _, row in trials.iterrows():
        if row.get("status") != "ok":
            continue
        data, classes = stored.dataset_key(row), _classes(row)
        out.append(Subject(str(row["study"]), str(row["trial_id"]), str(row["label"]), data, classes,
                           float(row.get("wall_s", math.nan))))
        setting, seed = row.get("baseline_setting"), row.get("seed")
        if baselines and isinstance(setting, str) and pd.notna(seed):
            key = stored.baseline_id(setting, int(seed))
            if (row["study"], key) not in seen:
                seen.add((row["study"], key))
                out.append(Subject(str(row["study"]), key, f"{row['study']} · random init seed {int(seed)}", data,
                                   classes, baseline=True))
    return out


@st.cache_data(max_entries=64, show_spinner="Reading the pictures…")
def _read(root: str, study: str, table: str, keys: tuple[str, ...], updated: float | None) -> pd.DataFrame:
    """``keys``' rows of one picture table of one study; ``updated`` (the study's last write) keys the cache."""
    return stored.read(ResultsStore(root, study), table, keys)


def read(selection, table: str, chosen: list[Subject]) -> tuple[pd.DataFrame, str | None]:
    """The rows of ``table`` (neighbours or embedding) of the chosen subjects, each with its ``study``
    and ``key``; and a problem to say (an unreadable file), or None."""
    frames, problems = [], []
    updated = {s.name: s.updated for s in selection.studies}
    for study in dict.fromkeys(s.study for s in chosen):
        keys = tuple(s.key for s in chosen if s.study == study)
        try:
            frame = _read(selection.root, study, table, keys, updated.get(study))
        except (StoreError, OSError) as err:
            problems.append(str(err))
            continue
        if not frame.empty:
            frames.append(frame.assign(study=study, key=frame["trial_id"]))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), "; ".join(problems) or None


def thumbnails(selection, study: str, dataset: str | None) -> tuple[dict[tuple[str, int], bytes], str | None]:
    """A dataset's thumbnails by (split, index), and why there are none (a sentence), or None."""
    if dataset is None:
        return {}, "the trials' rows do not name their data's content hashes, so their thumbnails cannot be found"
    updated = {s.name: s.updated for s in selection.studies}.get(study)
    try:
        frame = _read(selection.root, study, stored.THUMBNAILS, (dataset,), updated)
    except (StoreError, OSError) as err:
        return {}, str(err)
    if frame.empty:
        return {}, (f"the store has no thumbnails of this dataset ({stored.THUMBNAILS}/{dataset}.parquet): the study's "
                    "driver writes them before its trials, from sslab's release that records pictures on")
    return {(str(s), int(i)): bytes(p) for s, i, p in zip(frame["split"], frame["index"], frame["png"])}, None


def class_name(label: int, classes: tuple[str, ...] | None) -> str:
    return classes[label] if classes and 0 <= label < len(classes) else f"class {label}"


def same_class_share(neighbours: pd.DataFrame) -> pd.Series:
    """Per key, the share of all its queries' neighbours that are of the query's class."""
    if neighbours.empty:
        return pd.Series(dtype=float)
    return (neighbours["label"] == neighbours["query_label"]).groupby(neighbours["key"]).mean()


def _img(png: bytes | None, title: str, border: str) -> str:
    if png is None:
        return (f'<div title="{html.escape(title)}" style="width:{THUMBNAIL_PX}px;height:{THUMBNAIL_PX}px;'
                f'border:3px solid {border};background:#eee"></div>')
    data = base64.b64encode(png).decode()
    return (f'<img src="data:image/png;base64,{data}" title="{html.escape(title)}" width="{THUMBNAIL_PX}" '
            f'height="{THUMBNAIL_PX}" style="image-rendering:pixelated;object-fit:contain;border:3px solid {border}">')


def neighbours_grid(query: int, rows: list[tuple[Subject, pd.DataFrame]], thumbs: dict[tuple[str, int], bytes]) -> str:
    """An HTML table: the query's thumbnail, then per subject its top-k training images, most similar
    first, each framed green when of the query's class (grey otherwise) with its cosine similarity."""
    first = next((frame for _, frame in rows if not frame.empty), pd.DataFrame())
    classes = next((s.classes for s, _ in rows if s.classes), None)
    query_label = int(first["query_label"].iloc[0]) if not first.empty else -1
    cell = 'style="padding:4px;text-align:center;font-size:0.8em;vertical-align:top"'
    head = (f'<tr><td {cell}><b>query</b><br>test image {query}<br>{html.escape(class_name(query_label, classes))}</td>'
            f'<td {cell}>{_img(thumbs.get(("test", query)), f"test image {query}", "#1f77b4")}</td></tr>')
    body = []
    for subject, frame in rows:
        cells = []
        for _, n in frame.sort_values("rank").iterrows():
            same = int(n["label"]) == int(n["query_label"])
            name = class_name(int(n["label"]), classes)
            title = f"training image {int(n['neighbour'])} ({name}), cosine similarity {n['similarity']:.3f}"
            cells.append(f'<td {cell}>{_img(thumbs.get(("train", int(n["neighbour"]))), title, "#2ca02c" if same else "#bbb")}'
                         f'<br>{n["similarity"]:.2f}</td>')
        if not cells:
            cells = [f'<td {cell} colspan="8">no neighbours recorded</td>']
        style = "font-style:italic" if subject.baseline else "font-weight:600"
        body.append(f'<tr><td {cell}><span style="{style}">{html.escape(subject.label)}</span></td>{"".join(cells)}</tr>')
    return f'<table style="border-collapse:collapse">{head}{"".join(body)}</table>'


def palette(count: int) -> list[str]:
    """``count`` distinct colours, one per class: plotly's qualitative sets, else the Turbo scale."""
    for colours in (plotly.colors.qualitative.Plotly, plotly.colors.qualitative.Dark24, plotly.colors.qualitative.Alphabet):
        if count <= len(colours):
            return list(colours[:count])
    return plotly.colors.sample_colorscale("Turbo", [i / max(1, count - 1) for i in range(count)])


def embedding_figure(points: pd.DataFrame, classes: tuple[str, ...] | None, title: str,
                     num_classes: int | None = None) -> go.Figure:
    """One trial's map: a scatter per class (its colour fixed by the label, the same on every map),
    legend by class name; hovering a point names its test image."""
    labels = sorted(int(v) for v in points["label"].unique())
    count = max(num_classes or 0, (max(labels) + 1) if labels else 0, len(classes or ()))
    colours = palette(count)
    fig = go.Figure()
    for label in labels:
        mine = points[points["label"] == label]
        name = class_name(label, classes)
        fig.add_trace(go.Scatter(x=mine["x"], y=mine["y"], mode="markers", name=name,
                                 marker=dict(size=5, color=colours[label], opacity=0.8),
                                 customdata=mine["index"],
                                 hovertemplate=f"{html.escape(name)}<br>test image %{{customdata}}<extra></extra>"))
    fig.update_layout(title=title, height=430, margin=dict(l=10, r=10, t=40, b=10), legend_title_text="class",
                      xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None))
    return fig


def cost_note(subject: Subject, points: pd.DataFrame) -> str | None:
    """The pictures' cost in the trial, said: seconds, and their share of its wall time."""
    if "pictures_s" not in points or points["pictures_s"].isna().all():
        return None
    seconds = float(points["pictures_s"].iloc[0])
    if subject.baseline or not math.isfinite(subject.wall_s) or subject.wall_s <= 0:
        return f"pictures computed in {seconds:.1f} s"
    return f"pictures computed in {seconds:.1f} s of the trial's {subject.wall_s:.0f} s ({seconds / subject.wall_s:.1%})"


def choose(selection, trials: pd.DataFrame, key: str, default: int = 2) -> pd.DataFrame:
    """The finished trials the page shows: picked by the reader (at most ``MAX_TRIALS``), the best
    ``default`` of the selection at first."""
    ok = trials[trials["status"] == "ok"]
    options = ok.set_index("key")["label"].to_dict()
    best = selection.best_keys(ok, default)
    picked = st.multiselect("Trials", list(options), default=best, format_func=options.get, key=key,
                            max_selections=MAX_TRIALS, help="Each chosen trial is shown beside its random-init baseline")
    return ok[ok["key"].isin(picked)].set_index("key").loc[picked].reset_index() if picked else ok.iloc[0:0]


def frame_of(table: pd.DataFrame, subject: Subject) -> pd.DataFrame:
    if table.empty:
        return table
    return table[(table["study"] == subject.study) & (table["key"] == subject.key)]


def info(what: str, table: str) -> str:
    return NONE_RECORDED.format(what=what, table=table)


def page_rows(selection, trials: pd.DataFrame, table: str, key: str, what: str) -> tuple[list[Subject], pd.DataFrame]:
    """What the Neighbours and Embedding map pages start with: the trials picked (``key``), with or
    without their random-init baselines, and their rows of ``table``; the page stops with one line
    when there is nothing to show (no trial picked, or none of them recorded ``what``)."""
    picked = choose(selection, trials, f"{key}_trials")
    if picked.empty:
        st.info("Pick one or more finished trials above.")
        st.stop()
    chosen = subjects(picked, baselines=st.toggle("Random-init baseline", value=True, key=f"{key}_baseline"))
    rows, problem = read(selection, table, chosen)
    if problem:
        st.warning(problem)
    if rows.empty:
        st.info(info(what, table))
        st.stop()
    return chosen, rows
