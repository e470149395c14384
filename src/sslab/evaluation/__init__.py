"""Measures of a frozen representation, in PyTorch (no Ray): kNN, linear probes per layer,
invariance (``evaluate``), and the label-free measures (``label_free``: RankMe, α-ReQ, LiDAR,
alignment and uniformity). The engine calls them at the end of a trial and per epoch."""
