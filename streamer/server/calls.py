"""Live calls: one :class:`~emostream.engine.session.Session` per call, run by the server.

A :class:`Call` is fed (n, channels) float32 blocks from the event loop (:meth:`Call.push`,
never waits) and analyses them in order on one of the registry's analysis threads, one
batch at a time (the Session has one owner at any moment: the call's consumer task hands
it to a thread and waits). What waited while a batch was analysed goes into the next one,
so a call that falls behind catches up in larger batches; audio that would take the
waiting audio beyond ``max_backlog_s`` is dropped and counted (a single message is always
taken). Each hop and alert becomes a record (the ``--jsonl`` record plus ``call_id``) on
the :class:`~emostream.server.events.EventHub`; alert events also go to the alert delivery.
When the call ends its summary (the format of ``emostream calls``) is published as
``call_end`` and written to ``[server] summary_dir``.

:class:`CallRegistry` opens and ends calls: the ``max_calls`` limit, unique call ids, the
idle watchdog and the drain at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.alerts.delivery import AlertDelivery
from emostream.alerts.rules import AlertEvent
from emostream.apps.calls.analysis import ChannelRun, call_summary
from emostream.apps.calls.reports import write_json_atomic
from emostream.engine.events import Event, HopResult
from emostream.engine.plan import SessionPlan
from emostream.engine.session import Session
from emostream.errors import EmoStreamError
from emostream.server.closing import (
    CALL_ID_IN_USE,
    GOING_AWAY,
    IDLE_TIMEOUT,
    INVALID_DATA,
    TRY_AGAIN_LATER,
    RejectError,
)
from emostream.server.config import ServerConfig
from emostream.server.events import EventHub
from emostream.server.metrics import ServerMetrics

log = logging.getLogger("emostream.server")

CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
WATCH_INTERVAL_S = 0.5

StopFn = Callable[[int, str], None]


def check_call_id(call_id: str) -> str:
    """``call_id`` if it is usable as a file name (letters, digits, ``.``, ``_``, ``-``; 1 to 128), else 1007."""
    if not CALL_ID.match(call_id):
        raise RejectError(
            INVALID_DATA,
            "malformed_message",
            f"call_id {call_id[:40]!r}: expected 1-128 letters, digits, '.', '_' or '-'",
        )
    return call_id


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class CallSpec:
    """What a call is: its id, source (``twilio``/``ingest``), input rate and channels, default roles,
    and ``identity`` (the summary's ``input``: stream ids, encoding; never audio)."""

    call_id: str
    source: str
    rate_hz: int
    channels: int
    default_roles: tuple[str, ...]
    identity: dict[str, Any]


class Call:
    """One live call; see the module docstring. Created by :meth:`CallRegistry.open`."""

    def __init__(self, spec: CallSpec, session: Session, registry: CallRegistry, stop: StopFn) -> None:
        self.spec = spec
        self.call_id = spec.call_id
        self.session = session
        self._registry = registry
        self.stop = stop  # closes the call's connection (code, reason); the handler then ends the call
        self.started_at = now_iso()
        self.last_message = time.monotonic()
        self.runs = [
            ChannelRun(plan=p, stats=s, hops=[], alerts=[])
            for p, s in zip(session.channel_plans, session.stats, strict=True)
        ]
        self.last: dict[str, dict[str, Any] | None] = {str(p.index): None for p in session.channel_plans}
        self.active_alerts: dict[tuple[int, str], dict[str, Any]] = {}
        self.dropped_frames = 0
        self.error: str | None = None
        self._blocks: list[npt.NDArray[np.float32]] = []
        self._arrivals: list[tuple[int, float]] = []  # (input frames fed once this block is in, arrival time)
        self._waiting_frames = 0
        self._queued_frames = 0  # frames pushed (fed or waiting) since the start
        self._max_waiting = max(1, round(registry.server.max_backlog_s * spec.rate_hz))
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"call-{self.call_id}")

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

    def touch(self) -> None:
        """A message arrived (the idle watchdog's clock)."""
        self.last_message = time.monotonic()

    def push(self, block: npt.NDArray[np.float32]) -> bool:
        """Queue (n, channels) float32 audio for analysis without waiting; False when it was dropped."""
        n = block.shape[0]
        if n == 0 or self._closing:
            return True
        if self._waiting_frames and self._waiting_frames + n > self._max_waiting:
            self.dropped_frames += n
            self._registry.metrics.dropped_audio.inc(n / self.spec.rate_hz)
            if (
                self.dropped_frames == n
                or self.dropped_frames // self.spec.rate_hz != (self.dropped_frames - n) // self.spec.rate_hz
            ):
                log.warning(
                    "call %s: analysis %.1f s behind; %.2f s of audio dropped so far",
                    self.call_id,
                    self._waiting_frames / self.spec.rate_hz,
                    self.dropped_frames / self.spec.rate_hz,
                )
            return False
        self._blocks.append(block)
        self._queued_frames += n
        self._arrivals.append((self._queued_frames, time.monotonic()))
        self._waiting_frames += n
        self._wake.set()
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pool = self._registry.pool
        while True:
            if not self._blocks:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            blocks, arrivals = self._blocks, self._arrivals
            self._blocks, self._arrivals, self._waiting_frames = [], [], 0
            try:
                events = await loop.run_in_executor(pool, self._feed, blocks)
            except EmoStreamError as exc:  # samples the session refuses (non-finite, implausible)
                self._fail(str(exc))
                return
            self._publish(events, arrivals)

    def _feed(self, blocks: list[npt.NDArray[np.float32]]) -> list[Event]:
        """Analysis thread: the waiting blocks as one."""
        return self.session.feed(blocks[0] if len(blocks) == 1 else np.concatenate(blocks))

    def _fail(self, message: str) -> None:
        self.error = message
        log.warning("call %s: audio refused: %s", self.call_id, message)
        self._registry.metrics.rejected.labels("bad_audio").inc()
        self.end_connection(INVALID_DATA, message)

    def _publish(self, events: Sequence[Event], arrivals: Sequence[tuple[int, float]] = ()) -> None:
        registry = self._registry
        metrics, hub = registry.metrics, registry.hub
        now = time.monotonic()
        rate = self.spec.rate_hz
        ends = [frames for frames, _ in arrivals]
        for event in events:
            if isinstance(event, HopResult):
                self.runs[event.channel].hops.append(event)
                record = event.to_dict()
                record["call_id"] = self.call_id
                self.last[str(event.channel)] = record
                registry.hop_counter(self.runs[event.channel].plan.analysed).inc()
                if arrivals:
                    # the block that completed this hop: the first whose end reaches the hop's end
                    i = min(int(np.searchsorted(ends, round(event.t_end * rate))), len(arrivals) - 1)
                    metrics.hop_latency.observe(now - arrivals[i][1])
                hub.publish(self.call_id, record)
            elif isinstance(event, AlertEvent):
                record = event.to_dict()
                record["call_id"] = self.call_id
                self.runs[event.channel].alerts.append(event.to_dict())
                key = (event.channel, event.rule)
                if event.state == "fired":
                    self.active_alerts[key] = record
                else:
                    self.active_alerts.pop(key, None)
                metrics.alerts.labels(event.state).inc()
                if registry.delivery is not None:
                    registry.delivery.on_event(event)
                hub.publish(self.call_id, record)

    # ------------------------------------------------------------ records

    def info(self) -> dict[str, Any]:
        """The call's ``<call info>`` (docs/server.md): ids, channels, last hop per channel, active alerts."""
        return {
            "call_id": self.call_id,
            "source": self.spec.source,
            "started_at": self.started_at,
            "channels": [
                {"channel": p.index, "role": p.role, "name": p.name, "analysed": p.analysed}
                for p in self.session.channel_plans
            ],
            "last": dict(self.last),
            "alerts": list(self.active_alerts.values()),
        }

    async def finish(self, reason: str) -> dict[str, Any]:
        """End the call: analyse what waits, flush, summarise; returns the summary (the ``call_end`` payload)."""
        self._closing = True
        self._wake.set()
        await self._task
        loop = asyncio.get_running_loop()
        registry = self._registry
        if self.error is None:
            try:
                self._publish(await loop.run_in_executor(registry.pool, self.session.flush))
            except EmoStreamError as exc:
                self.error = str(exc)
        return await loop.run_in_executor(registry.pool, self._summary, reason)

    def _summary(self, reason: str) -> dict[str, Any]:
        """Analysis thread: the summary dict (``emostream calls`` format plus the live call's fields)."""
        registry = self._registry
        plan = registry.plan
        summary = call_summary(
            self.call_id,
            self.spec.identity,
            self.spec.rate_hz,
            self.session.audio_s,
            self.runs,
            labels=plan.labels,
            bin_s=registry.server.bin_s,
        )
        summary["model"] = plan.model_name
        summary["source"] = self.spec.source
        summary["started_at"] = self.started_at
        summary["ended_at"] = now_iso()
        summary["end_reason"] = reason if self.error is None else f"error: {self.error}"
        summary["dropped_audio_s"] = round(self.dropped_frames / self.spec.rate_hz, 3)
        return summary


class CallRegistry:
    """The open calls of one server and what they share: the plan, the analysis threads, the hub, metrics."""

    def __init__(
        self,
        plan: SessionPlan,
        server: ServerConfig,
        *,
        hub: EventHub,
        metrics: ServerMetrics,
        pool: Executor,
        delivery: AlertDelivery | None = None,
    ) -> None:
        self.plan = plan
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
            session = await asyncio.get_running_loop().run_in_executor(self.pool, self._session, spec)
        except EmoStreamError as exc:
            raise RejectError(INVALID_DATA, "bad_settings", str(exc)) from exc
        finally:
            self._opening.discard(spec.call_id)
            if not len(self):
                self._idle.set()
        call = Call(spec, session, self, stop)
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
            ", ".join(f"{p.role}{'' if p.analysed else ' (not analysed)'}" for p in session.channel_plans),
        )
        self.hub.publish(spec.call_id, {"type": "call_start", **call.info(), "labels": list(self.plan.labels)})
        return call

    def _session(self, spec: CallSpec) -> Session:
        return Session(
            self.plan,
            input_rate_hz=spec.rate_hz,
            channels=spec.channels,
            default_roles=spec.default_roles,
            strict=False,
            source=spec.source,
            session_id=spec.call_id,
        )

    async def end(self, call: Call, reason: str) -> dict[str, Any]:
        """End ``call``: its summary is published (``call_end``) and written to ``summary_dir`` if set."""
        try:
            summary = await call.finish(reason)
        finally:
            self.calls.pop(call.call_id, None)
            self.metrics.active_calls.set(len(self.calls))
            self.metrics.calls_ended.labels(reason.split(":", maxsplit=1)[0]).inc()
        self.metrics.audio.inc(call.session.audio_s)
        if self._summary_dir is not None:
            path = self._summary_dir / f"{call.call_id}.json"
            try:
                await asyncio.get_running_loop().run_in_executor(self.pool, write_json_atomic, path, summary)
                self.metrics.summaries.inc()
            except OSError as exc:
                log.error("call %s: summary not written to %s: %s", call.call_id, path, exc)
        self.hub.publish(call.call_id, {"type": "call_end", "call_id": call.call_id, "summary": summary})
        log.info(
            "call %s ended (%s): %.1f s of audio, %d hops, %.2f s dropped",
            call.call_id,
            summary["end_reason"],
            call.session.audio_s,
            sum(len(r.hops) for r in call.runs),
            call.dropped_frames / call.spec.rate_hz,
        )
        if not len(self):
            self._idle.set()
        return summary

    def infos(self) -> list[dict[str, Any]]:
        """``<call info>`` of every open call."""
        return [c.info() for c in self.calls.values()]

    async def _watch(self) -> None:
        timeout = self.server.idle_timeout_s
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = time.monotonic()
            for call in list(self.calls.values()):
                if now - call.last_message > timeout and not call.closing:
                    log.warning(
                        "call %s: no message for %g s; ending it (close %d)", call.call_id, timeout, IDLE_TIMEOUT
                    )
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
