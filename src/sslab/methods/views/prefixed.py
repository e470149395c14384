"""A view whose output keys carry a prefix, so that several methods' views share one batch.

A method made of other methods (``multitask``: one backbone, several pretext tasks) declares
every task's views at once; two tasks could produce the same key (``image``, ``view_0``).
``Prefixed(view, "rotation.")`` produces exactly what ``view`` produces, from the same draws
of the generator, under the keys ``rotation.<key>``; the composing method strips the prefix
again before handing a task its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sslab.methods.views.base import Normalization, View, check


@dataclass(frozen=True)
class Prefixed:
    """``view`` with ``prefix`` in front of its name and of every output key; its arrays unchanged.

    The prefix is taken as given (``"rotation."``: the composing method chooses the separator).
    Evaluation (``train=False``) is the wrapped view's own evaluation form.
    """

    view: View
    prefix: str

    def __post_init__(self) -> None:
        check(isinstance(self.view, View), "view", self.view, "a view (keys, empty, apply)")
        check(isinstance(self.prefix, str) and self.prefix != "", "prefix", self.prefix, "a non-empty string")

    @property
    def name(self) -> str:
        return self.prefix + self.view.name

    def keys(self) -> tuple[str, ...]:
        return tuple(self.prefix + key for key in self.view.keys())

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return self._prefix(self.view.empty(n))

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        return self._prefix(self.view.apply(images, rng, train=train, stats=stats))

    def _prefix(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.prefix + key: value for key, value in arrays.items()}
