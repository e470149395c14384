"""A test image and its nearest training images under each chosen trial's representation, beside
the random-init backbone's: what the features call alike (cosine similarity of pooled res5, the
kNN's own). Computed at each trial's final evaluation; thumbnails from the store."""

import streamlit as st

from sslab.dashboard import pictures, selection

st.title("Neighbours")
chosen = selection.current()
trials = selection.require_trials(chosen)
subjects, neighbours = pictures.page_rows(chosen, trials, pictures.stored.NEIGHBOURS, "neighbours", "nearest neighbours")

first = next(s for s in subjects if s.key in set(neighbours["key"]))
others = [s.label for s in subjects if s.dataset != first.dataset]
if others:  # other data, other queries: one dataset at a time
    st.caption(f"Showing the trials evaluated on {first.label}'s data; not: {'; '.join(others)}.")
    subjects = [s for s in subjects if s.dataset == first.dataset]
    neighbours = neighbours[neighbours["key"].isin({s.key for s in subjects})]
queries = list(dict.fromkeys(int(q) for q in neighbours["query"]))
thumbs, missing = pictures.thumbnails(chosen, first.study, first.dataset)
labels = neighbours.drop_duplicates("query").set_index("query")["query_label"].astype(int).to_dict()
query = st.selectbox("Query (a test image, the same for every trial of a dataset)", queries, key="neighbours_query",
                     format_func=lambda q: f"test image {q} ({pictures.class_name(labels.get(q, -1), first.classes)})")
if missing:
    st.info(f"No thumbnails to show: {missing}.")
rows = [(s, frame[frame["query"] == query]) for s, frame in ((s, pictures.frame_of(neighbours, s)) for s in subjects)]
st.markdown(pictures.neighbours_grid(query, rows, thumbs), unsafe_allow_html=True)
st.caption("Green frame: of the query's class. Under each image: its cosine similarity to the query. "
           "Queries and training images are the evaluation's subsets as loaded, the same for every trial.")
share = pictures.same_class_share(neighbours)
st.dataframe({"trial": [s.label for s in subjects],
              "neighbours of the query's class (all queries)": [share.get(s.key) for s in subjects]},
             hide_index=True)
