"""The names of the metrics a trial reports, defined once.

The results store's columns, the printed summary, ``sslab report`` and the dashboard all
read these names from here. Pure Python (no Ray, no torch), so the dashboard can import it.
"""

from __future__ import annotations

from typing import NamedTuple

#: weighted kNN top-1 of the frozen backbone's pooled res5 features (final evaluation)
KNN = "knn_top1"
#: the cheap per-epoch kNN kept for trials stopped before their last epoch (ASHA, time budget)
MONITOR_KNN = "monitor_knn_top1"
#: mean l2 distance between the representations of an image and of its transformed version
INVARIANCE = "invariance_l2_mean"
#: the training loss (mean over the last epoch's steps)
LOSS = "loss"
#: feature taps of the layer-wise linear probes, shallowest first (the backbone's taps)
TAPS = ("conv1", "res2", "res3", "res4", "res5")

_PROBE_PREFIX, _PROBE_SUFFIX = "probe_", "_top1"


def probe(tap: str) -> str:
    """The column of the linear probe at ``tap``: ``probe_<tap>_top1``."""
    return f"{_PROBE_PREFIX}{tap}{_PROBE_SUFFIX}"


def probe_tap(column: str) -> str | None:
    """The tap of a probe column (``probe_res4_top1`` → ``res4``), or None for other columns."""
    if column.startswith(_PROBE_PREFIX) and column.endswith(_PROBE_SUFFIX):
        return column[len(_PROBE_PREFIX):-len(_PROBE_SUFFIX)]
    return None


def probe_columns(columns) -> list[str]:
    """The probe columns among ``columns``, in tap order (unknown taps last, as found)."""
    found = [c for c in columns if probe_tap(c) is not None]
    order = {probe(t): i for i, t in enumerate(TAPS)}
    return sorted(found, key=lambda c: order.get(c, len(TAPS)))


def is_evaluation(name: str) -> bool:
    """Whether ``name`` is an evaluation metric (kNN, a probe, invariance, a label-free measure of
    the representation or of the embedding): what a finished trial's row keeps of its last result."""
    return name in (KNN, INVARIANCE) or probe_tap(name) is not None or is_label_free(name)


class LabelFree(NamedTuple):
    """How to read a label-free measure: which end is better (``"max"``, ``"min"``, or None
    where neither is) and what it measures, in one line."""

    mode: str | None
    description: str


#: the label-free measures of the frozen representation (``sslab.evaluation.label_free``), kept as
#: trial columns of these names (their per-epoch values in the epochs table). Plain data, so the
#: dashboard reads the names and directions without importing torch.
LABEL_FREE: dict[str, LabelFree] = {
    "rankme": LabelFree("max", "RankMe: effective rank of the feature matrix (exp entropy of its singular values)"),
    "alpha_req": LabelFree(None, "α-ReQ: power-law decay α of the feature covariance's eigenspectrum; "
                                 "best in a band around 1, not at either end"),
    "alpha_req_gap": LabelFree("min", "|α − 1|: distance of α-ReQ's eigenspectrum decay from 1"),
    "lidar": LabelFree("max", "LiDAR: effective rank of the LDA matrix with instances as classes and views as samples"),
    "alignment": LabelFree("min", "mean distance between the normalised features of positive pairs (Wang & Isola)"),
    "uniformity": LabelFree("min", "log mean exp(−t‖f(x) − f(y)‖²) over all pairs of normalised features (Wang & Isola)"),
}


def label_free_columns(columns) -> list[str]:
    """The label-free measures among ``columns``, in ``LABEL_FREE``'s order."""
    present = set(columns)
    return [name for name in LABEL_FREE if name in present]


def mode_of(name: str) -> str | None:
    """Which end of metric ``name`` is better: ``"max"`` for kNN and the probes, ``"min"`` for the
    loss, a label-free measure's own mode; None where neither end is (invariance, α-ReQ, unknown)."""
    measure = embedding_measure(name) or name
    if measure in LABEL_FREE:
        return LABEL_FREE[measure].mode
    if name in (KNN, MONITOR_KNN) or probe_tap(name) is not None:
        return "max"
    return "min" if name == LOSS else None


#: the seconds an evaluation spent on its label-free measures (their views drawn, forward passes and
#: measures; the test features are kNN's where it reads the same images), in each epoch's row:
#: what docs/label-free.md#cost sums
LABEL_FREE_SECONDS = "label_free_s"

#: the label-free measures of a method's embedding (``Method.embedding``: the projection its loss
#: sees) are kept beside the representation's as ``embedding/<measure>`` (``embedding/rankme``, ...)
EMBEDDING_PREFIX = "embedding/"


def embedding(measure: str) -> str:
    """The column of a label-free measure of the method's embedding: ``embedding/<measure>``."""
    return f"{EMBEDDING_PREFIX}{measure}"


def embedding_measure(name: str) -> str | None:
    """The measure an embedding column holds (``embedding/rankme`` → ``rankme``), or None for other columns."""
    measure = name[len(EMBEDDING_PREFIX):] if name.startswith(EMBEDDING_PREFIX) else None
    return measure if measure in LABEL_FREE else None


def is_label_free(name: str) -> bool:
    """Whether ``name`` is a label-free measure, of the representation or of the embedding: computed
    without reading a label, so a study choosing by it reads none."""
    return name in LABEL_FREE or embedding_measure(name) is not None


def needs_labels(name: str) -> bool:
    """Whether metric ``name`` reads labels: kNN (the final one and the per-epoch monitor) and the
    linear probes. A study none of whose metrics does chooses without labels (``Study.reads_labels``)."""
    return name in (KNN, MONITOR_KNN) or probe_tap(name) is not None


def study_metrics(meta) -> list[tuple[str, str]]:
    """A study's metrics with their modes as ``study.json`` records them (a name or a list of names,
    a mode or a list of modes); kNN and ``"max"`` where it records none. The first is the one the
    study chooses by."""
    names = meta.get("metric") or KNN
    names = names if isinstance(names, list) else [names]
    modes = meta.get("mode") or "max"
    return list(zip(names, modes if isinstance(modes, list) else [modes] * len(names)))


def chosen_by(study: str, metric: str) -> str:
    """The store of ``study`` chosen by another ``metric`` (``--metric``): ``<study>-<metric>``."""
    return f"{study}-{metric.replace('/', '_')}"


def chosen_from(store: str, metric: str) -> str | None:
    """The study whose store ``store`` is when chosen by ``metric`` (``chosen_by``'s inverse), or None."""
    suffix = chosen_by("", metric)
    return store[: -len(suffix)] if store.endswith(suffix) and len(store) > len(suffix) else None
