"""Ring buffer: order across wrap-around, overflow counting, a producer that never blocks."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from emostream.audio.ringbuffer import RingBuffer


def ramp(start: int, n: int, channels: int = 2) -> np.ndarray:
    values = np.arange(start, start + n, dtype=np.float32)
    return np.stack([values, -values], axis=1)[:, :channels]


def test_wrap_around_keeps_order() -> None:
    ring = RingBuffer(10, 2)
    assert ring.write(ramp(0, 7)) == 7
    np.testing.assert_array_equal(ring.read(5), ramp(0, 5))
    assert ring.write(ramp(7, 8)) == 8  # wraps past the end of the array
    out = ring.read(100)
    np.testing.assert_array_equal(out, ramp(5, 10))
    assert ring.dropped_frames == 0 and ring.overflow_events == 0


def test_full_ring_drops_and_counts_the_incoming_samples() -> None:
    ring = RingBuffer(8, 1)
    assert ring.write(ramp(0, 6, 1)) == 6
    assert ring.write(ramp(6, 5, 1)) == 2  # 3 dropped
    assert ring.write(ramp(11, 4, 1)) == 0  # 4 dropped
    assert ring.dropped_frames == 7 and ring.overflow_events == 2
    np.testing.assert_array_equal(ring.read(100), ramp(0, 8, 1))  # the oldest audio is kept intact


def test_read_returns_a_copy_and_empty_after_timeout() -> None:
    ring = RingBuffer(4, 1)
    ring.write(ramp(0, 2, 1))
    out = ring.read(4)
    ring.write(ramp(50, 4, 1))
    np.testing.assert_array_equal(out, ramp(0, 2, 1))
    ring.read(4)
    assert ring.read(4, timeout=0.01).shape == (0, 1)


def test_close_wakes_a_waiting_reader() -> None:
    ring = RingBuffer(4, 1)
    result: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: result.append(ring.read(4, timeout=30)))
    reader.start()
    ring.close()
    reader.join(10)
    assert not reader.is_alive() and result[0].shape == (0, 1)


@pytest.mark.parametrize("capacity", [64, 1000])
def test_threaded_producer_never_blocks_and_nothing_is_lost_or_reordered(capacity: int) -> None:
    ring = RingBuffer(capacity, 2)
    total, block = 50_000, 37
    received: list[np.ndarray] = []

    def consume() -> None:
        while True:
            received.append(ring.read(53, timeout=0.01))
            if ring.closed and ring.available == 0:
                break

    consumer = threading.Thread(target=consume)
    consumer.start()
    stored = sum(ring.write(ramp(i, min(block, total - i))) for i in range(0, total, block))
    ring.close()
    consumer.join(60)
    assert not consumer.is_alive()
    out = np.concatenate(received)
    assert stored + ring.dropped_frames == total
    assert len(out) == stored
    # what arrived is increasing (dropped blocks leave gaps, never reorderings or duplicates)
    assert np.all(np.diff(out[:, 0]) > 0)
    np.testing.assert_array_equal(out[:, 1], -out[:, 0])
