"""The streaming engine: one processing thread from a source to per-channel pipelines and sinks.

The worker thread reads blocks from the source, resamples all channels at once with a
stateful resampler to the model's rate, feeds each :class:`ChannelPipeline` its column,
writes every :class:`HopResult` to the sinks and publishes a fresh immutable
:class:`DashboardState` after each block that completed a hop. The main thread only
reads :attr:`Engine.state`, calls :meth:`Engine.stop` (e.g. on Ctrl-C) and
:meth:`Engine.finish`, which re-raises a worker error and writes the end records.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from emostream.audio.resample import StreamResampler
from emostream.audio.sources import Source
from emostream.engine.events import DashboardState, HopResult, SessionSummary
from emostream.engine.pipeline import ChannelPipeline
from emostream.errors import AudioInputError, ConfigError

LATENCY_HISTORY = 10000
SNAPSHOT_INTERVAL_S = 0.1  # dashboard snapshots at most this often (the dashboard redraws ~8 times a second)


class Sink(Protocol):
    """Receives hop results as they happen and the session summary at the end."""

    def hop(self, result: HopResult) -> None: ...

    def end(self, summary: SessionSummary) -> None: ...


class Engine:
    """Runs ``pipelines`` (each reading source channel ``pipeline.channel``) on ``source``.

    ``max_audio_s`` ends the session after that much audio (None = until end of input).
    ``on_hops`` (optional) is called in the worker with each block's hop results (for
    extensions such as alert rules) before the state is published.
    """

    def __init__(
        self,
        source: Source,
        pipelines: Sequence[ChannelPipeline],
        sinks: Sequence[Sink] = (),
        *,
        model_name: str,
        max_audio_s: float | None = None,
        timeline_seconds: float = 60.0,
        on_hops: Callable[[list[HopResult]], None] | None = None,
    ) -> None:
        if not pipelines:
            raise ConfigError("no channel to analyse; at least one pipeline is needed")
        bad = [p.channel for p in pipelines if not 0 <= p.channel < source.channels]
        if bad:
            raise AudioInputError(
                f"{source.name} has {source.channels} channel(s); channel(s) {bad} requested. "
                "Check --channels or the channel settings"
            )
        rates = {p.feature_cfg.sample_rate_hz for p in pipelines}
        if len(rates) != 1:
            raise ConfigError(f"the pipelines expect different sample rates {sorted(rates)}; use one model rate")
        self.source = source
        self.pipelines = list(pipelines)
        self.sinks = list(sinks)
        self.model_name = model_name
        self.labels = tuple(pipelines[0].labels)
        self.rate_hz = rates.pop()
        self.max_audio_s = max_audio_s
        self.timeline_seconds = timeline_seconds
        self.on_hops = on_hops
        self._resampler = StreamResampler(source.rate_hz, self.rate_hz, source.channels)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emostream-engine", daemon=True)
        self._error: BaseException | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self._snapshot_at = 0.0
        self._audio_s = 0.0
        self._busy_s = 0.0
        self._hops = 0
        self._started = 0.0
        self.exit_reason = "end of input"
        self.messages: list[str] = []
        self.state = self._snapshot("starting")

    # ------------------------------------------------------------ control (main thread)

    def start(self) -> None:
        """Start the source and the processing thread."""
        self._started = time.monotonic()
        self.source.start()
        self._thread.start()

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the worker to stop after the current block."""
        if not self._stop.is_set():
            self.exit_reason = reason
            self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the worker to end; True when it has."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def run(self) -> SessionSummary:
        """Start, wait for the end (Ctrl-C stops cleanly and re-raises) and finish."""
        self.start()
        try:
            while not self.wait(0.1):
                pass
        except KeyboardInterrupt:
            self.stop("interrupted")
            self.wait(5.0)
            self.finish()
            raise
        return self.finish()

    def finish(self) -> SessionSummary:
        """After the worker ended: write end records, then re-raise a worker error."""
        self.wait(5.0)
        summary = self.summary()
        for sink in self.sinks:
            sink.end(summary)
        if self._error is not None:
            raise self._error
        return summary

    # ------------------------------------------------------------ worker thread

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # re-raised in the main thread by finish()
            self._error = exc
            self.exit_reason = f"error: {exc}"
        finally:
            try:
                self.source.stop()
            finally:
                self.state = self._snapshot("stopped")
                self._done.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            block = self.source.read(timeout=0.1)
            if block is None:
                self._process(self._resampler.flush(), 0, final=True)
                return
            if block.shape[0] == 0:
                continue
            frames = block.shape[0]
            if self.max_audio_s is not None:
                frames = min(frames, max(0, round((self.max_audio_s - self._audio_s) * self.source.rate_hz)))
                block = block[:frames]
            self._process(self._resampler.process(block), frames)
            if self.max_audio_s is not None and self._audio_s >= self.max_audio_s - 1e-9:
                self.stop("duration reached")

    def _process(self, audio: np.ndarray, input_frames: int, final: bool = False) -> None:
        started = time.perf_counter()
        hops: list[HopResult] = []
        for pipeline in self.pipelines:
            hops += pipeline.process(audio[:, pipeline.channel])
            if final:
                hops += pipeline.flush()
        hops.sort(key=lambda hop: (hop.t_end, hop.channel))  # time order across channels, whatever the block size
        self._busy_s += time.perf_counter() - started
        self._audio_s += input_frames / self.source.rate_hz
        for hop in hops:
            self._latencies.append(hop.latency_ms)
            for sink in self.sinks:
                sink.hop(hop)
        self._hops += len(hops)
        if hops and self.on_hops is not None:
            self.on_hops(hops)
        now = time.perf_counter()
        if now - self._snapshot_at >= SNAPSHOT_INTERVAL_S:
            # the dashboard redraws a few times a second: a snapshot (and its latency
            # percentiles) per block or per hop would be wasted work
            self.state = self._snapshot("listening")
            self._snapshot_at = now

    # ------------------------------------------------------------ reporting

    def _latency(self, q: float) -> float | None:
        return None if not self._latencies else round(float(np.percentile(np.fromiter(self._latencies, float), q)), 3)

    @property
    def realtime_factor(self) -> float | None:
        """Processing time / audio time (below 1 = faster than real time)."""
        return None if self._audio_s <= 0 else round(self._busy_s / self._audio_s, 4)

    def _snapshot(self, status: str) -> DashboardState:
        return DashboardState(
            labels=self.labels,
            source=self.source.name,
            input_rate_hz=self.source.rate_hz,
            model_name=self.model_name,
            elapsed_s=self._audio_s,
            channels=tuple(p.view() for p in self.pipelines),
            latency_p50_ms=self._latency(50),
            latency_p99_ms=self._latency(99),
            realtime_factor=self.realtime_factor,
            dropped_samples=self.source.dropped_samples,
            overflow_count=self.source.overflow_count,
            status=status,
            timeline_seconds=self.timeline_seconds,
            messages=tuple(self.messages + self.source.warnings),
        )

    def summary(self) -> SessionSummary:
        """Totals of the session so far."""
        return SessionSummary(
            source=self.source.name,
            duration_s=self._audio_s,
            hops=self._hops,
            channels=tuple(p.summary() for p in self.pipelines),
            dropped_samples=self.source.dropped_samples,
            overflow_count=self.source.overflow_count,
            latency_p50_ms=self._latency(50),
            latency_p99_ms=self._latency(99),
            realtime_factor=self.realtime_factor,
            exit_reason=self.exit_reason,
        )
