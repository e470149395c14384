"""The next epoch's first batches, fetched while this epoch ends.

Ray Data starts an epoch's pipeline only when the loop asks for its first batch, and a local
shuffle buffer of R rows yields nothing before R rows of views exist. On the ``local`` profile
(5,000 images, R = 4,096) every epoch so began with the trainer idle while most of the epoch's
views were computed. ``EpochBatches`` iterates the epochs one after the other in a background
thread, at most ``depth`` batches ahead of the loop: when an epoch's last batches are queued it
starts the next epoch's pipeline, which fills its buffer while the loop trains on those batches,
evaluates and checkpoints. Each epoch's iterator is built exactly as without it, so the batches
and their order are the same (benchmarks/epoch_prefetch.py measures what it saves).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_END_OF_EPOCH = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class EpochBatches:
    """``batches(epoch)`` for each epoch of ``epochs`` in turn, read ahead by one thread.

    ``next_epoch()`` yields the next epoch's batches in order; an error raised while fetching
    them is raised there, in the loop's thread. ``close()`` (or leaving the ``with`` block) stops
    the thread, e.g. when the loop ends early on a NaN loss.
    """

    def __init__(self, batches: Callable[[int], Iterable[Any]], epochs: Iterable[int], depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth = {depth}: read at least 1 batch ahead (or iterate the epochs directly)")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(batches, list(epochs)),
                                        name="sslab-epoch-batches", daemon=True)
        self._thread.start()

    def _produce(self, batches: Callable[[int], Iterable[Any]], epochs: list[int]) -> None:
        try:
            for epoch in epochs:
                for batch in batches(epoch):
                    if not self._put(batch):
                        return
                if not self._put(_END_OF_EPOCH):
                    return
        except BaseException as err:  # raised in the loop's thread by next_epoch
            self._put(_Failed(err))

    def _put(self, item: Any) -> bool:
        """Queue ``item`` unless closed first; False when closed."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next_epoch(self) -> Iterator[Any]:
        while True:
            item = self._get()
            if item is _END_OF_EPOCH:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def _get(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("EpochBatches: every epoch was read already (or the reader was closed)") from None

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> "EpochBatches":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
