"""``emostream serve --supervisor --bus URL``: one supervisor for every replica of a fleet.

It takes no audio (no ``/twilio``, ``/ingest``, ``/try``): it reads the bus stream that the
replicas write (:mod:`emostream.server.bus`) and serves, for the calls of all of them, the
supervisor page, ``WS /events`` (``?call=`` too; every record with its ``replica``; the
snapshot with each call's recent timeline), ``/api/calls`` and ``/metrics``. On start it
reads the last :data:`~emostream.server.recent.HISTORY_S` s of the stream, so a supervisor
started (or restarted) mid-call shows the calls under way with their timelines. Replica
health comes from the heartbeats (:mod:`emostream.server.fleet`): a killed replica's calls
end on the page with the reason within ``[bus] heartbeat_timeout_s`` plus a heartbeat.

Alerts are not delivered from here: each replica delivers its own calls' alerts
(``[alerts_output]``), so a bus outage never loses one and none is sent twice (a call
lives on one replica); the page shows them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from emostream.config import Config
from emostream.engine.plan import SessionPlan
from emostream.server.auth import Token, TokenSet
from emostream.server.bus import BUS_ERRORS, Backoff, BusLinkMetrics, parse_entry, redis_client
from emostream.server.bus_config import safe_url
from emostream.server.closing import GOING_AWAY
from emostream.server.context import ServerContext, make_context
from emostream.server.fleet import FleetCalls
from emostream.server.recent import HISTORY_S

log = logging.getLogger("emostream.server")
BLOCK_MS = 1000  # XREAD waits this long for new entries
READ_COUNT = 2000  # entries per XREAD at most
EXPIRE_EVERY_S = 0.25
DELAY_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class FleetMetrics:
    """The supervisor's own metrics beside the server's: what came from the bus, the replicas seen alive."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.link = BusLinkMetrics(r)
        self.received = Counter(
            "emostream_bus_received", "Bus records taken by the supervisor, by replica", ["replica"], registry=r
        )
        self.missing = Counter(
            "emostream_bus_missing",
            "Records a replica numbered but the supervisor never received (dropped on the way), by replica",
            ["replica"],
            registry=r,
        )
        self.delay = Histogram(
            "emostream_bus_delay_seconds",
            "From a record being queued for the bus on its replica to its fan-out on the supervisor's /events",
            buckets=DELAY_BUCKETS_S,
            registry=r,
        )
        self.replicas = Gauge("emostream_fleet_replicas", "Replicas whose heartbeat is current", registry=r)


@dataclass
class SupervisorContext(ServerContext):
    """A server context whose calls come from the bus (:class:`FleetCalls`), not from audio."""

    fleet: FleetCalls | None = None
    fleet_metrics: FleetMetrics | None = None
    bus_connected: bool = False
    _tasks: tuple[asyncio.Task[None], ...] = ()
    _started_at: float = 0.0  # wall-clock time of start()
    _stopping: bool = False  # drain() was called: the tasks end at their next turn
    takes_audio: ClassVar[bool] = False

    @property
    def view(self) -> FleetCalls:
        if self.fleet is None:
            raise RuntimeError("the supervisor context is not started")
        return self.fleet

    @property
    def fm(self) -> FleetMetrics:
        if self.fleet_metrics is None:
            raise RuntimeError("the supervisor context was not made by make_supervisor_context")
        return self.fleet_metrics

    async def start(self) -> None:
        if self.fleet is not None:
            return
        vad = self.config.vad.apply(self.plan.model.metadata.vad_config)
        self.fleet = FleetCalls(
            self.hub,
            hop_s=self.plan.timing.hop_s,
            min_speech_ratio=vad.min_speech_ratio,
            heartbeat_timeout_s=self.config.bus.heartbeat_timeout_s,
        )
        self._started_at = time.time()
        loop = asyncio.get_running_loop()
        self._tasks = (
            loop.create_task(self._read(), name="bus-reader"),
            loop.create_task(self._watch(), name="fleet-watch"),
        )

    async def drain(self) -> None:
        if self.drained:
            return
        self.drained = True
        self._stopping = True  # as well as cancelling: a cancel that lands inside a broker call may be lost there
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=BLOCK_MS / 1000 + 1.0)
        for conn in list(self.subscribers):
            await conn.close(GOING_AWAY, "server shutting down")

    def call_count(self) -> int:
        return len(self.fleet) if self.fleet is not None else 0

    def call_infos(self, *, history: bool = False) -> list[dict[str, Any]]:
        return self.view.infos(history=history)

    def snapshot_head(self) -> dict[str, Any]:
        fleet = self.fleet
        labels = fleet.labels if fleet is not None and fleet.labels else list(self.plan.labels)
        model = fleet.model if fleet is not None and fleet.model else self.plan.model_name
        return {"labels": labels, "model": model, "fleet": True}

    def health(self) -> dict[str, Any]:
        replicas = self.fleet.live_replicas if self.fleet is not None else 0
        return {"bus": "connected" if self.bus_connected else "unreachable", "replicas": replicas}

    # ------------------------------------------------------------ tasks

    async def _read(self) -> None:
        """Read the stream from :data:`HISTORY_S` s ago on, entry by entry, reconnecting with a growing pause."""
        bus = self.config.bus
        if bus.url is None:
            raise RuntimeError("the supervisor needs [bus] url")
        metrics = self.fm
        client = redis_client(bus.url, BLOCK_MS / 1000 + 2.0)
        backoff = Backoff(bus.reconnect_max_s)
        last_id = f"{int((time.time() - HISTORY_S) * 1000)}-0"
        lost_once = False
        try:
            while not self._stopping:
                try:
                    reply: Any = await client.xread({bus.stream: last_id}, count=READ_COUNT, block=BLOCK_MS)
                except BUS_ERRORS as exc:
                    if self.bus_connected:
                        log.warning("bus: %s unreachable (%s); reconnecting", safe_url(bus.url), exc)
                        lost_once = True
                    self._set_connected(False)
                    await backoff.wait()
                    continue
                if not self.bus_connected:
                    log.info("bus: reading %s from %s", bus.stream, safe_url(bus.url))
                    if lost_once:
                        metrics.link.reconnects.inc()
                    self.view.bus_restored()
                    self._set_connected(True)
                    backoff.reset()
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                        self._take(fields)
        finally:
            self._set_connected(False)
            with contextlib.suppress(*BUS_ERRORS):
                await client.aclose()

    def _take(self, fields: dict[bytes, bytes]) -> None:
        metrics = self.fm
        entry = parse_entry(fields)
        if entry is None:
            log.warning("bus: an entry without the fields of an emostream replica; skipped")
            return
        replica, incarnation, seq, sent, text = entry
        missing_before = self.view.replicas[replica].missing if replica in self.view.replicas else 0
        record = self.view.take(replica, incarnation, seq, text)
        missing = self.view.replicas[replica].missing - missing_before
        if missing > 0:
            metrics.missing.labels(replica).inc(missing)
        if record is None:
            return
        metrics.received.labels(replica).inc()
        if sent >= self._started_at:  # not the history read at start-up
            metrics.delay.observe(max(0.0, time.time() - sent))
        kind = record.get("type")
        if kind == "hop":
            self.metrics.hops.labels("false" if record.get("scores") is None else "true").inc()
        elif kind == "alert":
            self.metrics.alerts.labels(str(record.get("state"))).inc()
        elif kind == "call_start":
            self.metrics.calls.labels(str(record.get("source") or "other")).inc()
        self.metrics.active_calls.set(len(self.view))

    async def _watch(self) -> None:
        """End the calls of replicas whose heartbeat stopped (only while the bus is up)."""
        metrics = self.fm
        while not self._stopping:
            await asyncio.sleep(EXPIRE_EVERY_S)
            if self.bus_connected:
                self.view.expire()
            metrics.replicas.set(self.view.live_replicas)
            self.metrics.active_calls.set(len(self.view))

    def _set_connected(self, connected: bool) -> None:
        self.bus_connected = connected
        if self.fleet_metrics is not None:
            self.fleet_metrics.link.connected.set(1 if connected else 0)


def make_supervisor_context(
    cfg: Config, plan: SessionPlan, token: Token, tokens: TokenSet | None = None
) -> SupervisorContext:
    """A supervisor's state: a server context (tokens, hub, metrics) whose calls come from the bus."""
    base = make_context(cfg, plan, token, tokens, publish=False)  # it reads the bus; it publishes nothing
    if base.delivery is not None:  # the replicas deliver their calls' alerts; the supervisor delivers none
        base.delivery.close(0.0)
        base.metrics.watch(gate=base.gate, delivery=None)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(ServerContext)} | {"delivery": None}
    return SupervisorContext(**fields, fleet_metrics=FleetMetrics(base.metrics.registry))
