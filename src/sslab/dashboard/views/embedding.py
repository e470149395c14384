"""A 2-D map (t-SNE) of each chosen trial's test features, one map per trial, points coloured by
class, beside the random-init backbone's: computed where the features were, read from the store."""

import streamlit as st

from sslab.dashboard import pictures, selection

st.title("Embedding map")
chosen = selection.current()
trials = selection.require_trials(chosen)
subjects, points = pictures.page_rows(chosen, trials, pictures.stored.EMBEDDING, "embedding", "embedding map")

num_classes = int(points["label"].max()) + 1
columns = st.columns(2)
drawn = [(s, pictures.frame_of(points, s)) for s in subjects]
drawn = [(s, frame) for s, frame in drawn if not frame.empty]
for i, (subject, frame) in enumerate(drawn):
    with columns[i % 2]:
        st.plotly_chart(pictures.embedding_figure(frame, subject.classes, subject.label, num_classes),
                        key=f"embedding_{i}")
        note = pictures.cost_note(subject, frame)
        if note:
            st.caption(f"{len(frame)} test images; {note}")
unmapped = [s.label for s in subjects if all(s is not d for d, _ in drawn)]
if unmapped:
    st.caption("No map recorded for: " + "; ".join(unmapped))
st.caption("t-SNE of L2-normalised pooled res5 features (PCA to 50 dimensions first), the same test images and "
           "seed for every trial: distances between clusters and the axes mean little, the grouping does.")
