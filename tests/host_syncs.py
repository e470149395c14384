"""Counting what makes the host wait for the device, in tests that run on a CPU.

On a GPU, ``tensor.item()``, ``bool(tensor)``, ``float(tensor)``, ``tolist``, ``torch.unique``,
``nonzero`` and boolean-mask indexing all block the Python thread until the device has finished
every queued kernel, leaving the GPU idle while the next step's kernels are launched. On a CPU
they cost nothing, so a test cannot time them; it counts the calls instead:

    with count_host_syncs() as syncs:
        ...one training step...
    assert sum(syncs.values()) == 0, dict(syncs)

Calls from ``torch.optim`` are left out: optimisers read their step counters, which live on
the CPU even when training on a GPU.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter

import torch

_TENSOR_METHODS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero", "unique")
_TORCH_FUNCTIONS = ("unique", "unique_consecutive", "nonzero", "masked_select", "argwhere")


def _is_bool_mask(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


@contextlib.contextmanager
def count_host_syncs():
    """A Counter of host synchronisations by kind, filled while the block runs."""
    counts: Counter = Counter()
    patched: list[tuple[object, str, object]] = []

    def counted(owner, name, original, when=None):
        def wrapper(*args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if not caller.startswith("torch.optim") and (when is None or when(*args)):
                counts[f"{getattr(owner, '__name__', owner)}.{name}"] += 1
            return original(*args, **kwargs)
        patched.append((owner, name, original))
        setattr(owner, name, wrapper)

    for name in _TENSOR_METHODS:
        counted(torch.Tensor, name, getattr(torch.Tensor, name))
    for name in _TORCH_FUNCTIONS:
        counted(torch, name, getattr(torch, name))
    counted(torch.Tensor, "__getitem__", torch.Tensor.__getitem__, lambda self, index: _is_bool_mask(index))
    counted(torch.Tensor, "__setitem__", torch.Tensor.__setitem__, lambda self, index, value: _is_bool_mask(index))
    try:
        yield counts
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
