"""The names of the metrics a trial reports, defined once.

The results store's columns, the printed summary, ``sslab report`` and the dashboard all
read these names from here. Pure Python (no Ray, no torch), so the dashboard can import it.
"""

from __future__ import annotations

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
    """Whether ``name`` is a final-evaluation metric (kNN, a probe, invariance)."""
    return name in (KNN, INVARIANCE) or probe_tap(name) is not None
