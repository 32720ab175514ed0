"""Stateful stream resampling (soxr): chunks of any size give the whole-signal result.

soxr works in blocks: its output grows by a block of about ``period * rate_out / rate_in``
samples each time the input total reaches ``first + k * period`` frames (8 kHz to 16 kHz, HQ:
1660 output samples every 830 input frames from 927 on), whatever the chunks were. So the
output lags the input by up to one block (100 ms of audio at 8 kHz), and
:meth:`StreamResampler.input_needed` can tell how much input a given output total takes:
the live server sends a call's audio to the analysis when its next hop can come out.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, kw_only=True)
class BlockSchedule:
    """When soxr emits output: at input totals ``first_frames + k * period_frames`` (k = 0, 1, ...)."""

    first_frames: int
    period_frames: int


def _output_after(rate_in: int, rate_out: int, quality: str, frames: int) -> int:
    """Output samples a fresh stream gives for ``frames`` input frames (the same for any chunking)."""
    stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality=quality)
    return len(stream.resample_chunk(np.zeros((frames, 1), dtype=np.float32), last=False))


def _first_frames_above(rate_in: int, rate_out: int, quality: str, level: int, low: int) -> int:
    """The smallest input total above ``low`` whose output exceeds ``level`` samples (bisection)."""
    high = max(2 * low, 1024)
    while _output_after(rate_in, rate_out, quality, high) <= level:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        if _output_after(rate_in, rate_out, quality, middle) > level:
            high = middle
        else:
            low = middle
    return high


@functools.lru_cache(maxsize=16)
def block_schedule(rate_in: int, rate_out: int, quality: str = "HQ") -> BlockSchedule:
    """soxr's block schedule for these rates, found once by bisection on fresh streams (a few ms)."""
    first = _first_frames_above(rate_in, rate_out, quality, 0, 0)
    second = _first_frames_above(rate_in, rate_out, quality, _output_after(rate_in, rate_out, quality, first), first)
    return BlockSchedule(first_frames=first, period_frames=second - first)


def input_frames_for_output(rate_in: int, rate_out: int, frames_out: int, quality: str = "HQ") -> int:
    """The input total (frames from the start of a stream) after which soxr has given ``frames_out`` samples.

    Exact for integer rate ratios (8 or 16 kHz to 16 kHz); for others the blocks vary by a sample
    and the answer may be one block early (never late). Equal rates: ``frames_out``.
    """
    if rate_in == rate_out or frames_out <= 0:
        return max(0, frames_out)
    schedule = block_schedule(rate_in, rate_out, quality)
    per_block = schedule.period_frames * rate_out / rate_in
    slack = 0 if per_block.is_integer() else 1  # blocks of 489 or 490 samples: the count may be a sample ahead
    blocks = max(1, math.ceil((frames_out - slack) / per_block))
    return schedule.first_frames + (blocks - 1) * schedule.period_frames


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
        self.frames_in = 0  # input frames given since the start (or reset)
        self.frames_out = 0  # output frames returned since then
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
        self.frames_in += x.shape[0]
        if self._stream is not None:
            x = np.asarray(self._stream.resample_chunk(x, last=False), dtype=np.float32).reshape(-1, self.channels)
        self.frames_out += x.shape[0]
        return x

    def input_needed(self, frames_out: int) -> int:
        """The input total (frames since the start) after which the output total is at least ``frames_out``.

        Exact for integer rate ratios; for others the block sizes vary by a sample, and the answer
        may be one block early (never late by more than that sample's block).
        """
        if frames_out <= self.frames_out:
            return self.frames_in
        if self._stream is None:
            return self.frames_in + frames_out - self.frames_out
        schedule = block_schedule(self.rate_in, self.rate_out, self.quality)
        period = schedule.period_frames
        per_block = period * self.rate_out / self.rate_in
        blocks = math.ceil((frames_out - self.frames_out) / per_block)
        done = max(0, (self.frames_in - schedule.first_frames) // period + 1)  # blocks already emitted
        return schedule.first_frames + (done + blocks - 1) * period

    def flush(self) -> FloatArray:
        """End of stream: the samples still held in the filter, (m, channels)."""
        if self._stream is None:
            return np.zeros((0, self.channels), dtype=np.float32)
        empty = np.zeros((0, self.channels), dtype=np.float32)
        tail = np.asarray(self._stream.resample_chunk(empty, last=True), dtype=np.float32).reshape(-1, self.channels)
        self.frames_out += tail.shape[0]
        return tail

    def reset(self) -> None:
        """Start a new stream with the same rates."""
        self.frames_in = 0
        self.frames_out = 0
        if self._stream is not None:
            self._stream.clear()
