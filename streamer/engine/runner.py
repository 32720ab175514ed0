"""The streaming engine: one processing thread from a source through a session to its observers.

The worker thread reads blocks from the source, feeds them to a
:class:`~emostream.engine.session.Session` and hands every event it returns to each
observer in order (JSON lines, alert delivery, the change printer, ...). A few times a
second it publishes a fresh immutable :class:`DashboardState`. The main thread only reads
:attr:`Engine.state`, calls :meth:`Engine.stop` (e.g. on Ctrl-C) and :meth:`Engine.finish`,
which re-raises a worker error and gives every observer the session summary.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from emostream.audio.sources import Source
from emostream.engine.events import DashboardState, Event, HopResult, Observer, SessionSummary
from emostream.engine.session import Session

LATENCY_HISTORY = 10000
SNAPSHOT_INTERVAL_S = 0.1  # dashboard snapshots at most this often (the dashboard redraws ~8 times a second)


class Engine:
    """Runs ``session`` on the audio of ``source``; ``max_audio_s`` ends it after that much audio.

    ``snapshots=False``: :attr:`state` is set at the start and the end only, not a few times a
    second (nothing shows it: no dashboard); each snapshot measures every channel's level and
    sorts the latency history.
    """

    def __init__(
        self,
        source: Source,
        session: Session,
        observers: Sequence[Observer] = (),
        *,
        max_audio_s: float | None = None,
        snapshots: bool = True,
    ) -> None:
        self.source = source
        self.snapshots = snapshots
        self.session = session
        self.observers = list(observers)
        self.labels = session.plan.labels
        self.max_audio_s = max_audio_s
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emostream-engine", daemon=True)
        self._error: BaseException | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self._snapshot_at = 0.0
        self._busy_s = 0.0
        self._hops = 0
        self.exit_reason = "end of input"
        self.messages: list[str] = []
        self._delivery: dict[str, int] | None = None
        self.final_summary: SessionSummary | None = None
        self.state = self._snapshot("starting")

    # ------------------------------------------------------------ control (main thread)

    def start(self) -> None:
        """Start the source and the processing thread."""
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
        """After the worker ended: give every observer the summary, then re-raise a worker error.

        Observers with a ``settle()`` method (alert delivery) settle first; what it returns
        goes into the summary (``alert_delivery``), so the ``end`` record and the printed
        summary carry the final counts.
        """
        self.wait(5.0)
        for observer in self.observers:
            settle = getattr(observer, "settle", None)
            if settle is not None:
                self._delivery = settle()
        summary = self.summary()
        self.final_summary = summary
        for observer in self.observers:
            observer.on_end(summary)
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
        rate = self.source.rate_hz
        while not self._stop.is_set():
            block = self.source.read(timeout=0.1)
            if block is None:
                self._timed(self.session.flush)
                return
            if block.shape[0] == 0:
                continue
            if self.max_audio_s is not None:
                left = max(0, round(self.max_audio_s * rate) - self.session.input_frames)
                block = block[:left]
            self._timed(lambda b=block: self.session.feed(b))  # type: ignore[misc]
            if self.max_audio_s is not None and self.session.input_frames >= round(self.max_audio_s * rate):
                self.stop("duration reached")

    def _timed(self, step: Callable[[], list[Event]]) -> None:
        started = time.perf_counter()
        events = step()
        self._busy_s += time.perf_counter() - started
        for event in events:
            if isinstance(event, HopResult):
                self._hops += 1
                self._latencies.append(event.latency_ms)
            for observer in self.observers:
                observer.on_event(event)
        if not self.snapshots:
            return
        now = time.perf_counter()
        if now - self._snapshot_at >= SNAPSHOT_INTERVAL_S:
            # the dashboard redraws a few times a second: a snapshot (and its latency
            # percentiles) per block or per hop would be wasted work
            self.state = self._snapshot("listening")
            self._snapshot_at = now

    # ------------------------------------------------------------ reporting

    def _latency_percentiles(self) -> tuple[float | None, float | None]:
        """p50 and p99 of the recent hop latencies, ms (None before any hop): one sort for both."""
        if not self._latencies:
            return None, None
        ordered = np.sort(np.fromiter(self._latencies, float, count=len(self._latencies)))
        return _percentile(ordered, 50.0), _percentile(ordered, 99.0)

    @property
    def realtime_factor(self) -> float | None:
        """Processing time / audio time (below 1 = faster than real time)."""
        audio_s = self.session.audio_s
        return None if audio_s <= 0 else round(self._busy_s / audio_s, 4)

    def _snapshot(self, status: str) -> DashboardState:
        p50, p99 = self._latency_percentiles()
        return DashboardState(
            labels=self.labels,
            source=self.source.name,
            input_rate_hz=self.source.rate_hz,
            model_name=self.session.plan.model_name,
            elapsed_s=self.session.audio_s,
            channels=self.session.views(),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            realtime_factor=self.realtime_factor,
            dropped_samples=self.source.dropped_samples,
            overflow_count=self.source.overflow_count,
            status=status,
            timeline_seconds=self.session.plan.config.output.timeline_seconds,
            hop_s=self.session.plan.timing.hop_s,
            messages=tuple(self.messages + self.source.warnings + self.session.warnings + self._observer_messages()),
        )

    def _observer_messages(self) -> list[str]:
        """Problems the observers report (e.g. failed alert deliveries): shown in the dashboard, never printed."""
        return [m for o in self.observers for m in getattr(o, "messages", ())]

    def summary(self) -> SessionSummary:
        """Totals of the session so far."""
        p50, p99 = self._latency_percentiles()
        return SessionSummary(
            source=self.source.name,
            duration_s=self.session.audio_s,
            hops=self._hops,
            channels=tuple(s.summary() for s in self.session.stats),
            dropped_samples=self.source.dropped_samples,
            overflow_count=self.source.overflow_count,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            realtime_factor=self.realtime_factor,
            exit_reason=self.exit_reason,
            session_id=self.session.session_id,
            alert_delivery=self._delivery,
        )


def _percentile(ordered: npt.NDArray[np.float64], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, interpolated linearly as ``np.percentile`` does by default,
    rounded to 3 decimals (``np.percentile`` itself imports ``numpy.ma`` on its first call: 8 ms at start-up)."""
    position = q / 100.0 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    below, above = float(ordered[low]), float(ordered[high])
    value = below + (above - below) * fraction if fraction < 0.5 else above - (above - below) * (1.0 - fraction)
    return round(value, 3)
