"""Stateful stream resampling (soxr): chunks of any size give the whole-signal result."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

FloatArray = npt.NDArray[np.float32]


class StreamResampler:
    """Converts (n, channels) float32 chunks from ``rate_in`` to ``rate_out`` Hz, keeping filter state.

    ``process(chunk)`` returns the output samples available so far (soxr holds back a
    filter delay); ``flush()`` returns the rest at the end of the stream. Equal rates
    pass chunks through unchanged.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int, quality: str = "HQ") -> None:
        if rate_in <= 0 or rate_out <= 0 or channels <= 0:
            raise ValueError(f"rates {rate_in} -> {rate_out} Hz, {channels} channels; all must be positive")
        self.rate_in = rate_in
        self.rate_out = rate_out
        self.channels = channels
        self.quality = quality
        self._stream: soxr.ResampleStream | None = None
        if rate_in != rate_out:
            self._stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality=quality)

    @property
    def identity(self) -> bool:
        """True when no conversion happens."""
        return self._stream is None

    def _check(self, chunk: npt.ArrayLike) -> FloatArray:
        x = np.ascontiguousarray(chunk, dtype=np.float32)
        if x.ndim == 1 and self.channels == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"chunk of shape {x.shape}; expected (n, {self.channels})")
        return x

    def process(self, chunk: npt.ArrayLike) -> FloatArray:
        """Resample one (n, channels) chunk; returns (m, channels) float32."""
        x = self._check(chunk)
        if self._stream is None:
            return x
        return np.asarray(self._stream.resample_chunk(x, last=False), dtype=np.float32).reshape(-1, self.channels)

    def flush(self) -> FloatArray:
        """End of stream: the samples still held in the filter, (m, channels)."""
        if self._stream is None:
            return np.zeros((0, self.channels), dtype=np.float32)
        empty = np.zeros((0, self.channels), dtype=np.float32)
        return np.asarray(self._stream.resample_chunk(empty, last=True), dtype=np.float32).reshape(-1, self.channels)

    def reset(self) -> None:
        """Start a new stream with the same rates."""
        if self._stream is not None:
            self._stream.clear()
