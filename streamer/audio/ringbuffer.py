"""Lock-light ring buffer between the audio callback (producer) and the processing thread.

The producer only copies into preallocated memory and never waits: when the ring is
full the incoming samples are dropped and counted. The consumer waits on an event for
new audio and receives copies. A lock guards only the index updates (a few integer
operations), never a copy of audio, so the callback cannot be held up by the consumer.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class RingBuffer:
    """Float32 ring of shape (capacity_frames, channels); one producer, one consumer."""

    def __init__(self, capacity_frames: int, channels: int) -> None:
        if capacity_frames <= 0 or channels <= 0:
            raise ValueError(f"ring of {capacity_frames} frames x {channels} channels; both must be positive")
        self.capacity = capacity_frames
        self.channels = channels
        self._data = np.zeros((capacity_frames, channels), dtype=np.float32)
        self._write = 0  # total frames ever written (monotonic)
        self._read = 0  # total frames ever read (monotonic)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = False
        self.dropped_frames = 0
        self.overflow_events = 0

    @property
    def available(self) -> int:
        """Frames waiting to be read."""
        with self._lock:
            return self._write - self._read

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, block: npt.NDArray[np.floating]) -> int:
        """Copy (n, channels) frames in without blocking; returns the number stored (the rest is dropped)."""
        n = block.shape[0]
        with self._lock:
            free = self.capacity - (self._write - self._read)
            start = self._write
        stored = min(n, free)
        if stored < n:
            self.dropped_frames += n - stored
            self.overflow_events += 1
        if stored:
            pos = start % self.capacity
            first = min(stored, self.capacity - pos)
            self._data[pos : pos + first] = block[:first]
            if stored > first:
                self._data[: stored - first] = block[first:stored]
            with self._lock:
                self._write += stored
            self._ready.set()
        return stored

    def close(self) -> None:
        """Mark the end of the stream; a waiting reader wakes up."""
        self._closed = True
        self._ready.set()

    def read(self, max_frames: int, timeout: float | None = None) -> FloatArray:
        """Up to ``max_frames`` frames as a new (n, channels) array; waits up to ``timeout`` s for data.

        Returns an empty array when nothing arrived in time or the ring is closed and empty.
        """
        if self.available == 0 and not self._closed:
            self._ready.wait(timeout)
        with self._lock:
            start = self._read
            n = min(max_frames, self._write - self._read)
            if n == self._write - self._read and not self._closed:
                self._ready.clear()
        out = np.empty((n, self.channels), dtype=np.float32)
        if n:
            pos = start % self.capacity
            first = min(n, self.capacity - pos)
            out[:first] = self._data[pos : pos + first]
            if n > first:
                out[first:] = self._data[: n - first]
            with self._lock:
                self._read += n
        return out
