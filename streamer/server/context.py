"""What the endpoints of one server share: settings, token, plan, calls, hub, metrics; start-up and drain."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar

from emostream.alerts.delivery import AlertDelivery
from emostream.config import Config
from emostream.engine.plan import SessionPlan
from emostream.server.auth import Token, TokenSet
from emostream.server.bus import BusPublisher
from emostream.server.calls import CallRegistry
from emostream.server.closing import GOING_AWAY
from emostream.server.config import ServerConfig
from emostream.server.connection import Connection
from emostream.server.events import EventHub
from emostream.server.gate import ConnectionGate
from emostream.server.logs import LogLimiter
from emostream.server.metrics import ServerMetrics
from emostream.server.pool import AnalysisPool, ProcessPool, ThreadPool

log = logging.getLogger("emostream.server")
ALERT_FLUSH_S = 2.0  # at shutdown, queued alerts get this long to be delivered
SUBSCRIBER_FLUSH_S = 0.5  # at shutdown, subscribers get this long to receive the last call_end records


@dataclass
class ServerContext:
    """One server's state. Build it with :func:`make_context`; :meth:`start` and :meth:`drain` run in its loop."""

    config: Config
    plan: SessionPlan
    token: Token
    metrics: ServerMetrics
    hub: EventHub
    delivery: AlertDelivery | None
    tokens: TokenSet
    gate: ConnectionGate
    logs: LogLimiter
    pool: AnalysisPool | None = None
    registry: CallRegistry | None = None
    subscribers: set[Connection] = field(default_factory=set)
    drained: bool = False
    bus: BusPublisher | None = None  # [bus] url set: every record also goes to the fleet's bus
    takes_audio: ClassVar[bool] = True  # /twilio, /ingest and /try are served (not by a fleet's supervisor)

    @property
    def server(self) -> ServerConfig:
        return self.config.server

    @property
    def calls(self) -> CallRegistry:
        if self.registry is None:
            raise RuntimeError("the server context is not started")
        return self.registry

    async def start(self) -> None:
        """In the server's event loop: the analysis workers (loaded and ready), the call registry, its watchdog."""
        if self.registry is not None:
            return
        workers = self.server.workers
        if workers:
            pool = ProcessPool(self.config, workers, on_restart=self.metrics.worker_restarts.inc)
            self.pool = pool
            await pool.wait_ready()
        else:
            self.pool = ThreadPool(self.plan, self.server.bin_s)
        self.registry = CallRegistry(
            self.plan,
            self.server,
            hub=self.hub,
            metrics=self.metrics,
            pool=self.pool,
            delivery=self.delivery,
            logs=self.logs,
        )
        self.registry.start()
        if self.bus is not None:
            self.bus.attach(self.hub)
            self.bus.start()

    async def drain(self) -> None:
        """Shutdown: end every call with its summary, let subscribers read the last records, close them (1001)."""
        if self.drained:
            return
        self.drained = True
        if self.registry is not None:
            await self.registry.drain(self.server.shutdown_timeout_s)
        if self.bus is not None:
            await self.bus.stop()  # after every call_end: the supervisor learns how each call ended
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUBSCRIBER_FLUSH_S
        while loop.time() < deadline and any(not s.closed for s in self.subscribers) and self.hub.pending():
            await asyncio.sleep(0.02)
        for conn in list(self.subscribers):
            await conn.close(GOING_AWAY, "server shutting down")
        if self.delivery is not None:
            stats = await loop.run_in_executor(None, self.delivery.close, ALERT_FLUSH_S)
            if stats.pending:
                log.warning(
                    "shutdown: %d alert(s) not delivered within %.0f s (still queued or being tried); "
                    "%d delivered, %d failed, %d dropped in all",
                    stats.pending,
                    ALERT_FLUSH_S,
                    stats.delivered,
                    stats.failed,
                    stats.dropped,
                )
        if self.pool is not None:
            await loop.run_in_executor(None, self.pool.close)

    def heartbeat_fields(self) -> dict[str, Any]:
        """A bus heartbeat's fields: the open calls, the model and its labels."""
        calls = list(self.registry.calls) if self.registry is not None else []
        return {"calls": calls, **self.snapshot_head()}

    def call_count(self) -> int:
        """Calls open now (and being opened)."""
        return len(self.registry) if self.registry is not None else 0

    def call_infos(self, *, history: bool = False) -> list[dict[str, Any]]:
        """``<call info>`` of every open call (``history``: with the recent timeline, for the snapshot)."""
        return self.calls.infos(history=history)

    def snapshot_head(self) -> dict[str, Any]:
        """The ``/events`` snapshot's fields besides ``calls``: ``labels``, ``model``."""
        return {"labels": list(self.plan.labels), "model": self.plan.model_name}

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` adds to its status: the bus's connection, when there is a bus."""
        return {} if self.bus is None else {"bus": "connected" if self.bus.connected else "unreachable"}

    def refuse(self, label: str, peer: str, message: str) -> None:
        """Count one refused connection under ``label`` and log it (rate-limited per label)."""
        self.metrics.rejected.labels(label).inc()
        self.logs.limited(f"refused:{label}", "%s: %s", peer, message)


def make_context(
    cfg: Config, plan: SessionPlan, token: Token, tokens: TokenSet | None = None, *, publish: bool = True
) -> ServerContext:
    """A server's shared state from the resolved config, plan and admin token (alert delivery if configured).

    ``publish``: with ``[bus] url`` set, also publish every record on the bus (a replica of a fleet).

    ``tokens``: every token taken (:func:`~emostream.server.auth.resolve_tokens`); by default the
    admin token and the read and ingest tokens of ``[server]``.
    """
    metrics = ServerMetrics()
    delivery = AlertDelivery(cfg.alerts_output) if cfg.alerts_output.enabled else None
    if tokens is None:
        tokens = TokenSet(token, cfg.server.read_token, cfg.server.ingest_tokens)
    logs = LogLimiter(log)
    gate = ConnectionGate(cfg.server.max_unauthenticated)
    ctx = ServerContext(
        config=cfg,
        plan=plan,
        token=token,
        metrics=metrics,
        hub=EventHub(cfg.server.events_queue_size, on_drop=metrics.events_dropped.inc),
        delivery=delivery,
        tokens=tokens,
        gate=gate,
        logs=logs,
    )
    gate.on_reject = ctx.refuse
    metrics.watch(gate=gate, delivery=delivery)
    if publish and cfg.bus.url is not None:
        ctx.bus = BusPublisher(cfg.bus, replica_name(cfg), metrics.registry, heartbeat=ctx.heartbeat_fields)
    return ctx


def replica_name(cfg: Config, port: int | None = None) -> str:
    """``[bus] replica``, else ``HOST-PORT``: this machine's name and the listening port (``port``, else the
    configured one)."""
    if cfg.bus.replica is not None:
        return cfg.bus.replica
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname().split(".")[0]) or "replica"
    return f"{host}-{cfg.server.port if port is None else port}"
