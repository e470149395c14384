"""sslab: self-supervised representation learning research at scale.

Wings (``tests/test_imports.py`` keeps the arrows one way; docs/architecture.md says why):

- ``sslab.methods``: the methods, pure PyTorch (the method contract is ``methods/base.py``)
- ``sslab.data``: datasets by name, their sources, decoding, cache and subsets (no Ray)
- ``sslab.results``: the results store, metric names, summaries and trial rows (no Ray, no torch)
- ``sslab.plan``: what to run: a study's declaration, trial specifications, profiles, cost
- ``sslab.engine``: the Ray glue: placement, runner, trials, Tune callbacks, the Train loop
- ``sslab.cli``: the ``sslab`` command and every study script's entry point
- ``sslab.studies``: the study scripts (``studies/`` at the repository root)
- ``sslab.dashboard``: the Streamlit dashboard, reading a results store only
"""
