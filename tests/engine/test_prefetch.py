"""EpochBatches: the same batches in the same order as iterating each epoch directly, the next
epoch started before this one is consumed, errors raised in the loop's thread, and a clean stop."""

import threading
import time

import pytest

from sslab.engine.prefetch import EpochBatches


def _epochs(n_batches: int):
    started: list[int] = []

    def batches(epoch: int):
        started.append(epoch)
        return [(epoch, b) for b in range(n_batches)]

    return batches, started


def _wait_for(condition, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_every_epoch_yields_its_own_batches_in_order():
    batches, _ = _epochs(5)
    with EpochBatches(batches, range(3), depth=2) as ahead:
        got = [list(ahead.next_epoch()) for _ in range(3)]
    assert got == [batches(e) for e in range(3)]


def test_the_next_epoch_starts_before_this_one_is_consumed():
    batches, started = _epochs(3)
    with EpochBatches(batches, range(2), depth=2) as ahead:
        epoch0 = ahead.next_epoch()
        assert next(epoch0) == (0, 0) and next(epoch0) == (0, 1)
        # one batch of epoch 0 is still unread, yet epoch 1's iterator has been asked for
        assert _wait_for(lambda: started == [0, 1])
        assert list(epoch0) == [(0, 2)]
        assert list(ahead.next_epoch()) == [(1, 0), (1, 1), (1, 2)]


def test_an_error_while_fetching_is_raised_in_the_loop_after_the_batches_before_it():
    def batches(epoch: int):
        yield "first"
        raise OSError(f"corrupt block in epoch {epoch}")

    with EpochBatches(batches, range(2), depth=4) as ahead:
        epoch0 = ahead.next_epoch()
        assert next(epoch0) == "first"
        with pytest.raises(OSError, match="corrupt block in epoch 0"):
            next(epoch0)


def test_close_stops_a_reader_blocked_on_a_full_queue():
    batches, _ = _epochs(100)
    ahead = EpochBatches(batches, range(100), depth=1)
    assert next(ahead.next_epoch()) == (0, 0)  # the reader is now blocked, the queue full
    ahead.close()
    assert not any(t.name == "sslab-epoch-batches" for t in threading.enumerate())


def test_reading_past_the_last_epoch_is_an_error_not_a_hang():
    batches, _ = _epochs(2)
    with EpochBatches(batches, range(1), depth=2) as ahead:
        assert list(ahead.next_epoch()) == [(0, 0), (0, 1)]
        with pytest.raises(RuntimeError, match="every epoch was read"):
            list(ahead.next_epoch())


def test_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="depth = 0"):
        EpochBatches(lambda epoch: [], range(1), depth=0)
