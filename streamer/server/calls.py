"""Live calls: one analysis (a :class:`~emostream.engine.session.Session`) per call, run by the server.

A :class:`Call` takes the call's audio as it arrives (:meth:`Call.push`, never waits) and
hands it, in order, to the call's analysis in the worker pool (:mod:`emostream.server.pool`)
without a task of its own: audio that is due is sent from :meth:`Call.push` (the pool's
``feed_soon`` does not wait) and a callback of each request's future takes its reply, the
replies published in the order the requests were sent (a worker process answers a call's
requests in order, so several may be under way; threads take them one at a time). The
worker sends each hop and alert back as its record and that record's JSON, so the event
loop only routes them. Audio is handed over when the next hop can come out of it: each reply
of the analysis says how much input that hop needs (its window's end, with the resampler's
blocks counted in), or after ``MAX_BATCH_S``: one request per hop instead of one per 20 ms
message, and no hop waits for a batch. Until the reply of the request that should bring
the hop is back, nothing more is sent; should that request not bring it (the estimate
before the first reply), every message goes at once until the hop comes out.
What arrived while a batch was analysed goes into the next one, so a call that falls
behind catches up in larger batches; audio that would take the waiting
audio beyond ``max_backlog_s`` is dropped and counted (a single message is always taken).
Each hop and alert becomes a record (the ``--jsonl`` record plus ``call_id``) on the
:class:`~emostream.server.events.EventHub`; alert events also go to the alert delivery.
When the call ends its summary (the format of ``emostream calls``) is published as
``call_end`` and written to ``[server] summary_dir``.

:class:`CallRegistry` opens and ends calls: the ``max_calls`` limit, unique call ids, the
idle watchdog and the drain at shutdown.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emostream.alerts.delivery import AlertDelivery
from emostream.audio.resample import input_frames_for_output
from emostream.engine.plan import SessionPlan
from emostream.server.analysis import CallSpec, Chunk, Published, PublishedEvent, publishable
from emostream.server.closing import (
    CALL_ID_IN_USE,
    GOING_AWAY,
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_DATA,
    TRY_AGAIN_LATER,
    RejectError,
)
from emostream.server.config import ServerConfig
from emostream.server.events import EventHub
from emostream.server.fields import check_id
from emostream.server.gate import warn_if_out_of_files
from emostream.server.logs import LogLimiter
from emostream.server.metrics import ServerMetrics, end_reason_label
from emostream.server.pool import AnalysisError, AnalysisPool, NoWorkerError, WorkerLostError
from emostream.server.recent import RecentRecords
from emostream.server.summaries import write_summary

log = logging.getLogger("emostream.server")

WATCH_INTERVAL_S = 0.5
MAX_BATCH_S = 1.0  # audio analysed at the latest after this much has waited, hop or not
MAX_IN_FLIGHT = 8  # analysis requests of one call under way at once (worker processes keep their order)
FD_CHECK_ROUNDS = 4  # file descriptors checked (and held-back log lines reported) every 4 watchdog rounds (2 s)

StopFn = Callable[[int, str], None]


def check_call_id(call_id: str) -> str:
    """``call_id`` if it is usable as a file name (:data:`~emostream.server.fields.ID_PATTERN`), else 1007."""
    return check_id(call_id, "call_id")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Request:
    """One analysis request under way: its task, the arrivals of its chunks, its frames."""

    task: asyncio.Future[Published]  # the pool's future (:meth:`AnalysisPool.feed_soon`): no task of its own
    arrivals: list[tuple[int, float]]
    frames: int


class Call:
    """One live call; see the module docstring. Created by :meth:`CallRegistry.open`."""

    def __init__(self, spec: CallSpec, channels: list[dict[str, Any]], registry: CallRegistry, stop: StopFn) -> None:
        self.spec = spec
        self.call_id = spec.call_id
        self.channels = channels
        self._registry = registry
        self.stop = stop  # closes the call's connection (code, reason); the handler then ends the call
        self.started_at = now_iso()
        self.last_message = time.monotonic()
        self._analysed = {int(c["channel"]): bool(c["analysed"]) for c in channels}
        # the last hop per channel, active alerts, recent timeline (/api/calls, the /events snapshot)
        self.recent = RecentRecords((int(c["channel"]) for c in channels), registry.plan.timing.hop_s)
        self.dropped_frames = 0
        self.answered_frames = 0  # frames whose analysis came back (what a summary without the worker can claim)
        self.hops = 0
        self.error: str | None = None
        self._chunks: list[Chunk] = []
        self._arrivals: list[tuple[int, float]] = []  # (input frames once this chunk is in, arrival time)
        self._pending_frames = 0  # frames in _chunks, not sent to the analysis yet
        self._unanalysed_frames = 0  # pending + sent and not answered yet (the backlog)
        self._queued_frames = 0  # frames taken (analysed or waiting) since the start
        self._max_waiting = max(1, round(registry.server.max_backlog_s * spec.rate_hz))
        timing = registry.plan.timing
        self._next_due = round(timing.window_times_s(0)[1] * spec.rate_hz)  # input frames the next hop needs
        self._max_batch = round(MAX_BATCH_S * spec.rate_hz)
        self._inflight: collections.deque[Request] = collections.deque()
        self._depth = MAX_IN_FLIGHT if registry.pool.ordered else 1
        self._closing = False
        self._drained: asyncio.Future[None] | None = None  # finish() waits on it for the requests under way
        self._bug: Exception | None = None  # an unexpected error while publishing: finish() raises it

    # ------------------------------------------------------------ event loop side

    def end_connection(self, code: int, reason: str) -> None:
        """Close the call's connection (once); its handler then ends the call."""
        if not self._closing:
            self._closing = True
            self.stop(code, reason)

    @property
    def closing(self) -> bool:
        """Whether the call is ending (no more audio is taken)."""
        return self._closing

    def touch(self, now: float | None = None) -> None:
        """A message arrived (the idle watchdog's clock; ``now``: ``time.monotonic()`` if the caller has it)."""
        self.last_message = time.monotonic() if now is None else now

    def push(self, chunk: Chunk, n: int, now: float | None = None) -> bool:
        """Queue ``n`` frames of audio as received (the analysis decodes it) without waiting; False if dropped.

        ``now``: the arrival time (``time.monotonic()``) if the caller has it.
        """
        if n == 0 or self._closing:
            return True
        rate = self.spec.rate_hz
        if self._unanalysed_frames and self._unanalysed_frames + n > self._max_waiting:
            self.dropped_frames += n
            self._registry.metrics.dropped_audio.inc(n / rate)
            self._registry.logs.limited(  # at most a few lines per call and 10 s of wall-clock time
                f"dropped:{self.call_id}",
                "call %s: analysis %.1f s behind; %.2f s of audio dropped so far",
                self.call_id,
                self._unanalysed_frames / rate,
                self.dropped_frames / rate,
            )
            return False
        self._chunks.append(chunk)
        self._queued_frames += n
        self._arrivals.append((self._queued_frames, time.monotonic() if now is None else now))
        self._pending_frames += n
        self._unanalysed_frames += n
        if self._due():
            self._send()
        return True

    def _due(self) -> bool:
        """Whether the waiting audio should be analysed now: it brings the next hop, is large, or the call ends.

        Audio past the next hop's point waits while a request that reaches that point is under way:
        its reply moves the point on (or, if it brought no hop, the waiting audio goes then).
        """
        if not self._chunks:
            return False
        if self._closing or self._pending_frames >= self._max_batch:
            return True
        sent = self._queued_frames - self._pending_frames
        return self._queued_frames >= self._next_due and (sent < self._next_due or not self._inflight)

    def _send(self) -> None:
        """Send the due audio to the analysis while fewer than ``_depth`` requests are under way (never waits).

        Called when audio arrives, when a reply comes back and when the call ends: no task per
        call or request (each wake-up of a task was a few turns of the event loop per request).
        """
        inflight = self._inflight
        while self.error is None and len(inflight) < self._depth and self._due():
            chunks, arrivals, frames = self._chunks, self._arrivals, self._pending_frames
            self._chunks, self._arrivals, self._pending_frames = [], [], 0
            future = self._registry.pool.feed_soon(self.call_id, chunks)
            inflight.append(Request(future, arrivals, frames))
            future.add_done_callback(self._on_reply)

    def _on_reply(self, _: asyncio.Future[Published]) -> None:
        """A request came back: publish the answered requests' events in the order sent, send what is due."""
        inflight = self._inflight
        try:
            while inflight and inflight[0].task.done():
                request = inflight.popleft()
                if request.task.cancelled():
                    continue
                error = request.task.exception()
                if isinstance(error, AnalysisError):  # refused samples (non-finite, implausible), a lost worker
                    self._fail(error)
                    for other in inflight:
                        other.task.cancel()
                    inflight.clear()
                    break
                if error is not None:
                    raise error
                events, next_hop_frames = request.task.result()
                self._unanalysed_frames -= request.frames
                self.answered_frames += request.frames
                self._publish(events, request.arrivals)
                self._next_due = max(self._next_due, next_hop_frames)  # until then, audio is only collected
            self._send()
        except Exception as exc:  # a bug: the call ends with it when finish() raises it, as an awaited task would
            if self._bug is None:
                self._bug = exc
            for other in inflight:
                other.task.cancel()
            inflight.clear()
        if self._drained is not None and not inflight and not self._drained.done():
            self._drained.set_result(None)

    def _fail(self, error: AnalysisError) -> None:
        message = str(error)
        self.error = message
        if isinstance(error, WorkerLostError):  # the server's failure, not the caller's audio
            log.error("call %s: ended: %s", self.call_id, message)
            self.end_connection(INTERNAL_ERROR, message)
            return
        self._registry.logs.limited("audio_refused", "call %s: audio refused: %s", self.call_id, message)
        self._registry.metrics.rejected.labels("bad_audio").inc()
        self.end_connection(INVALID_DATA, message)

    def _publish(self, events: Sequence[PublishedEvent], arrivals: Sequence[tuple[int, float]] = ()) -> None:
        """Hand the events (records and their JSON made by the analysis) to the recent records, metrics and hub."""
        registry = self._registry
        metrics, hub, call_id = registry.metrics, registry.hub, self.call_id
        now = time.monotonic()
        ends: list[int] | None = None
        for record, text, is_speech, t_end, alert in events:
            if alert is None:  # a hop
                self.recent.hop(record, is_speech=is_speech)
                self.hops += 1
                registry.hop_counter(self._analysed.get(record["channel"], False)).inc()
                if arrivals:
                    # the chunk that completed this hop: the first whose end reaches the input the hop's window
                    # needs, the resampler's block included (soxr gives 8 kHz audio out in 104 ms blocks)
                    if ends is None:
                        ends = [frames for frames, _ in arrivals]
                    model_rate = registry.plan.sample_rate_hz
                    done = input_frames_for_output(self.spec.rate_hz, model_rate, round(t_end * model_rate))
                    i = min(bisect.bisect_left(ends, done), len(arrivals) - 1)
                    metrics.hop_latency.observe(now - arrivals[i][1])
            else:
                self.recent.alert(record)
                metrics.alerts.labels(alert.state).inc()
                if registry.delivery is not None:
                    registry.delivery.on_event(alert)
            hub.publish_text(call_id, text)

    # ------------------------------------------------------------ records

    def info(self, *, history: bool = False) -> dict[str, Any]:
        """The call's ``<call info>`` (docs/server.md): ids, channels, last hop per channel, active alerts.

        ``history``: also the recent timeline (the ``/events`` snapshot; :mod:`emostream.server.recent`).
        """
        return {
            "call_id": self.call_id,
            "source": self.spec.source,
            "started_at": self.started_at,
            "channels": [dict(c) for c in self.channels],
            **self.recent.fields(history=history),
        }

    async def finish(self, reason: str) -> dict[str, Any]:
        """End the call: analyse what waits, flush, summarise; returns the summary (the ``call_end`` payload)."""
        self._closing = True
        self._send()  # what waits goes now (or, with requests under way, when their replies come)
        if self._inflight:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._bug is not None:
            raise self._bug
        extra = {
            "source": self.spec.source,
            "started_at": self.started_at,
            "ended_at": now_iso(),
            "end_reason": reason if self.error is None else f"error: {self.error}",
            "dropped_audio_s": round(self.dropped_frames / self.spec.rate_hz, 3),
        }
        try:
            events, summary = await self._registry.pool.finish(self.call_id, extra, self.error is None)
        except AnalysisError as exc:  # the worker is gone: what is known without it
            log.error("call %s: no summary from the analysis (%s)", self.call_id, exc)
            extra["end_reason"] = f"error: {exc}"
            duration_s = round(self.answered_frames / self.spec.rate_hz, 3)  # what was analysed before the loss
            return {
                "call": self.call_id,
                "input": self.spec.identity,
                "duration_s": duration_s,
                "channels": [],
                **extra,
            }
        self._publish(publishable(events, self.call_id))
        return summary


class CallRegistry:
    """The open calls of one server and what they share: the plan, the analysis pool, the hub, metrics."""

    def __init__(
        self,
        plan: SessionPlan,
        server: ServerConfig,
        *,
        hub: EventHub,
        metrics: ServerMetrics,
        pool: AnalysisPool,
        delivery: AlertDelivery | None = None,
        logs: LogLimiter | None = None,
    ) -> None:
        self.plan = plan
        self.logs = logs if logs is not None else LogLimiter(log)
        self.server = server
        self.hub = hub
        self.metrics = metrics
        self.pool = pool
        self.delivery = delivery
        self.calls: dict[str, Call] = {}
        self.accepting = True
        self._opening: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._hops = {True: metrics.hops.labels("true"), False: metrics.hops.labels("false")}
        self._summary_dir = None if server.summary_dir is None else Path(server.summary_dir)
        self._watchdog: asyncio.Task[None] | None = None
        self._alerts_lost = 0

    def hop_counter(self, analysed: bool) -> Any:
        """The hops counter of analysed (or metered-only) channels."""
        return self._hops[analysed]

    def __len__(self) -> int:
        return len(self.calls) + len(self._opening)

    def start(self) -> None:
        """Start the idle watchdog (in the running loop)."""
        self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="idle-watchdog")

    async def open(self, spec: CallSpec, stop: StopFn) -> Call:
        """A new call; :class:`RejectError` when shutting down (1001), at max_calls (1013), for an id in use (4409)."""
        if not self.accepting:
            raise RejectError(GOING_AWAY, "shutting_down", "server shutting down; no new calls")
        if len(self) >= self.server.max_calls:
            raise RejectError(
                TRY_AGAIN_LATER,
                "too_many_calls",
                f"too many calls: {len(self)} open, [server] max_calls = {self.server.max_calls}",
            )
        check_call_id(spec.call_id)
        if spec.call_id in self.calls or spec.call_id in self._opening:
            raise RejectError(CALL_ID_IN_USE, "call_id_in_use", f"call_id {spec.call_id!r} is already open")
        self._opening.add(spec.call_id)
        self._idle.clear()
        try:
            channels = await self.pool.open(spec)
        except NoWorkerError as exc:
            raise RejectError(TRY_AGAIN_LATER, "no_analysis_worker", str(exc)) from exc
        except AnalysisError as exc:
            raise RejectError(INVALID_DATA, "bad_settings", str(exc)) from exc
        finally:
            self._opening.discard(spec.call_id)
            if not len(self):
                self._idle.set()
        call = Call(spec, channels, self, stop)
        self.calls[spec.call_id] = call
        self._idle.clear()
        self.metrics.calls.labels(spec.source).inc()
        self.metrics.active_calls.set(len(self.calls))
        log.info(
            "call %s started (%s, %d Hz, %d channel(s): %s)",
            spec.call_id,
            spec.source,
            spec.rate_hz,
            spec.channels,
            ", ".join(f"{c['role']}{'' if c['analysed'] else ' (not analysed)'}" for c in channels),
        )
        self.hub.publish(spec.call_id, {"type": "call_start", **call.info(), "labels": list(self.plan.labels)})
        return call

    async def end(self, call: Call, reason: str) -> dict[str, Any]:
        """End ``call``: its summary is published (``call_end``) and written to ``summary_dir`` if set."""
        try:
            return await self._end(call, reason)
        finally:
            if not len(self):
                self._idle.set()  # only now: the drain at shutdown waits for every call_end to be out

    async def _end(self, call: Call, reason: str) -> dict[str, Any]:
        try:
            summary = await call.finish(reason)
        finally:
            self.calls.pop(call.call_id, None)
            self.metrics.active_calls.set(len(self.calls))
            self.metrics.calls_ended.labels(end_reason_label(reason)).inc()
        self.metrics.audio.inc(summary["duration_s"])
        if self._summary_dir is not None:
            folder = self._summary_dir
            try:
                path = await asyncio.get_running_loop().run_in_executor(
                    None, write_summary, folder, call.call_id, summary
                )
                self.metrics.summaries.inc()
                if path.name != f"{call.call_id}.json":
                    log.info("call %s: an earlier call had this id; summary written to %s", call.call_id, path.name)
            except OSError as exc:
                self.metrics.summary_failures.inc()
                self.logs.log(
                    "summary_failed",
                    logging.ERROR,
                    "call %s: summary not written to %s: %s",
                    call.call_id,
                    folder,
                    exc.strerror or exc,
                )
        self.hub.publish(call.call_id, {"type": "call_end", "call_id": call.call_id, "summary": summary})
        log.info(
            "call %s ended (%s): %.1f s of audio, %d hops, %.2f s dropped",
            call.call_id,
            summary["end_reason"],
            summary["duration_s"],
            call.hops,
            call.dropped_frames / call.spec.rate_hz,
        )
        return summary

    def infos(self, *, history: bool = False) -> list[dict[str, Any]]:
        """``<call info>`` of every open call (with its recent ``history``: the ``/events`` snapshot)."""
        return [c.info(history=history) for c in self.calls.values()]

    def _check_alert_delivery(self) -> None:
        """A warning (rate-limited) when alerts failed or were dropped since the last check."""
        if self.delivery is None:
            return
        stats = self.delivery.dispatcher.stats
        lost = stats.failed + stats.dropped
        if lost > self._alerts_lost:
            self._alerts_lost = lost
            last = stats.errors[-1] if stats.errors else "queue full"
            self.logs.limited(
                "alert_delivery",
                "alert delivery: %d failed, %d dropped, %d delivered so far; last problem: %s",
                stats.failed,
                stats.dropped,
                stats.delivered,
                last,
            )

    async def _watch(self) -> None:
        timeout = self.server.idle_timeout_s
        rounds = 0
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            rounds += 1
            if rounds % FD_CHECK_ROUNDS == 0:
                warn_if_out_of_files(self.logs)
                self._check_alert_delivery()
                self.logs.flush()
            for call in list(self.calls.values()):
                if now - call.last_message > timeout and not call.closing:
                    self.logs.limited("idle_timeout", "call %s: no message for %g s; ending it", call.call_id, timeout)
                    self.metrics.rejected.labels("idle_timeout").inc()
                    call.end_connection(IDLE_TIMEOUT, f"idle timeout: no message for {timeout:g} s")

    async def drain(self, timeout_s: float) -> None:
        """Shutdown: accept no call, close every call's connection (1001) and wait for their summaries."""
        self.accepting = False
        for call in list(self.calls.values()):
            call.end_connection(GOING_AWAY, "server shutting down")
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.error("shutdown: %d call(s) not summarised within %.1f s", len(self), timeout_s)
        if self._watchdog is not None:
            self._watchdog.cancel()
