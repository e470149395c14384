"""Tests of ``sslab.methods``, laid out as the source: ``blocks/``, ``views/``, ``contrastive/``,
``siamese/``, ``pretext/``, ``losses/``, and the contract tests over every registered method here.

Loading this conftest puts ``tests/methods`` on ``sys.path`` (pytest's prepend import mode), so
every test below imports the shared helpers by name: ``method_testing`` (batches of views, step
contexts, a method on a small backbone, gradients, training steps) and ``global_batch`` (two
data-parallel workers against one on the global batch).
"""
