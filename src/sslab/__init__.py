"""sslab: self-supervised representation learning research at scale.

Wings (``tests/test_imports.py`` keeps the arrows one way; docs/architecture.md says why):

- ``sslab.methods``: the methods, pure PyTorch (the method contract is ``methods/base.py``)
- ``sslab.data``: datasets by name, their sources, decoding, cache and subsets (no Ray)
- ``sslab.results``: the results store, metric names, summaries and trial rows (no Ray, no torch)
- ``sslab.plan``: what to run: a study's declaration, trial specifications, profiles, cost
- ``sslab.evaluation``: measures of a frozen representation (kNN, probes, invariance, label-free), no Ray
- ``sslab.engine``: the Ray glue: placement, runner, trials, Tune callbacks, the Train loop
- ``sslab.cli``: the ``sslab`` command and every study script's entry point
- ``sslab.studies``: the study scripts (``studies/`` at the repository root)
- ``sslab.dashboard``: the Streamlit dashboard, reading a results store only
- ``sslab.export``: a finished trial's backbone as one file (``sslab export``), and back

``sslab.load_backbone(path, device="cpu")`` reads a file ``sslab export`` wrote and returns the
backbone in eval mode: ``model.features(images)`` takes float images in [0, 1] (N x 3 x H x W),
normalises them with the training split's statistics and returns the pooled ``res5``
representation the trial's kNN evaluation read (docs/export.md). It imports neither Ray nor the
results store, and ``import sslab`` imports nothing until it is asked for.
"""


def __getattr__(name: str):
    if name == "load_backbone":  # lazily: ``import sslab`` stays free of torch
        from sslab.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'sslab' has no attribute {name!r}")
