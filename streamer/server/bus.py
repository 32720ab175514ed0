"""A replica's side of the event bus: its calls' records and a heartbeat, appended to one Redis stream.

Every record the server publishes on ``/events`` (``call_start``, hops, alerts,
``call_end``) is also handed to :meth:`BusPublisher.offer` (a tap of the
:class:`~emostream.server.events.EventHub`), which queues its JSON text and returns at
once: the audio path never waits for the broker. A task of the event loop appends what is
queued in pipelined batches (``XADD``, the stream trimmed to ``[bus] max_age_s``). Each
stream entry carries, besides the record's JSON (field ``j``), the replica's name (``r``),
the replica's incarnation (``i``, random per start), a sequence number (``s``, 1, 2, ... per
incarnation) and the wall-clock time it was queued (``t``, seconds): the supervisor
(:mod:`emostream.server.supervisor`) drops repeats and counts gaps by them.

While the broker is away (restart, network) records wait in the queue, up to
``[bus] max_pending``; beyond it the newest are dropped and counted
(``emostream_bus_dropped_total``). The task reconnects with a pause that doubles from
0.05 s up to ``[bus] reconnect_max_s``; a batch whose write failed is sent again (the
supervisor drops what the broker had already taken). Every ``[bus] heartbeat_s`` a
``heartbeat`` record names the replica's open calls (and its model and labels); at
shutdown, after every call's ``call_end``, a ``replica_stop`` record says the replica left.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.retry import Retry  # the asyncio client's own (a sync Retry is converted, with a warning)
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from emostream.server.bus_config import BusConfig, safe_url
from emostream.server.events import EventHub

log = logging.getLogger("emostream.server")
BATCH = 500  # records appended per pipelined round trip at most
RECONNECT_MIN_S = 0.05
WRITE_TIMEOUT_S = 2.0
STOP_FLUSH_S = 1.0  # at shutdown, queued records get this long to reach the broker


def redis_client(url: str, socket_timeout_s: float) -> Redis:
    """A Redis client for ``url`` without redis-py's own retries (the bus tasks retry, with their own pauses)."""
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


BUS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)  # a lost or refused broker


Entry = tuple[str, str, int, float, str]  # replica, incarnation, sequence number, time queued (s), the record's JSON


def entry_fields(replica: str, incarnation: str, seq: int, sent: float, text: str) -> dict[Any, Any]:
    """A stream entry's fields (see the module docstring): the inverse of :func:`parse_entry`."""
    return {"r": replica, "i": incarnation, "s": seq, "t": f"{sent:.4f}", "j": text}


def parse_entry(fields: dict[bytes, bytes]) -> Entry | None:
    """The fields of a stream entry written by :class:`BusPublisher`; None for an entry of another writer."""
    try:
        return (
            fields[b"r"].decode(),
            fields[b"i"].decode(),
            int(fields[b"s"]),
            float(fields[b"t"]),
            fields[b"j"].decode(),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


class Backoff:
    """Pauses between attempts to reach the broker: 0.05 s, doubling up to ``max_s``; reset once it answers."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.pause_s = RECONNECT_MIN_S

    def reset(self) -> None:
        self.pause_s = RECONNECT_MIN_S

    async def wait(self) -> None:
        await asyncio.sleep(self.pause_s)
        self.pause_s = min(self.max_s, 2 * self.pause_s)


class BusLinkMetrics:
    """The broker connection's metrics (replica and supervisor): connected now, reconnections."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connected = Gauge(
            "emostream_bus_connected", "1 while the event bus's broker answers, else 0", registry=registry
        )
        self.reconnects = Counter(
            "emostream_bus_reconnects",
            "Connections to the event bus's broker made again after one was lost",
            registry=registry,
        )


class BusPublisher:
    """Appends a replica's records to the bus stream (see the module docstring). Start with :meth:`start`."""

    def __init__(
        self,
        cfg: BusConfig,
        replica: str,
        registry: CollectorRegistry,
        heartbeat: Callable[[], dict[str, Any]],
    ) -> None:
        """``heartbeat()``: the fields of the next heartbeat record (``calls``, ``model``, ``labels``)."""
        if cfg.url is None:
            raise ValueError("BusPublisher needs [bus] url")
        self.cfg = cfg
        self.url = cfg.url
        self.replica = replica
        self.incarnation = secrets.token_hex(4)
        self._heartbeat = heartbeat
        self.link = BusLinkMetrics(registry)
        self.published = Counter("emostream_bus_published", "Records appended to the event bus", registry=registry)
        self.dropped = Counter(
            "emostream_bus_dropped",
            "Records not put on the event bus: [bus] max_pending were already waiting for the broker",
            registry=registry,
        )
        self._queue: collections.deque[tuple[int, float, str]] = collections.deque()
        self._seq = 0
        self._wake = asyncio.Event()
        self.connected = False
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ the event loop's side: never waits

    def offer(self, call_id: str, text: str) -> None:
        """Queue one record's JSON text for the bus (an :class:`EventHub` tap); dropped and counted when full."""
        if len(self._queue) >= self.cfg.max_pending:
            self.dropped.inc()
            return
        self._seq += 1
        self._queue.append((self._seq, time.time(), text))
        self._wake.set()

    def attach(self, hub: EventHub) -> None:
        """Publish every record of ``hub`` on the bus."""
        hub.tap(self.offer)

    @property
    def pending(self) -> int:
        """Records waiting for the broker."""
        return len(self._queue)

    def start(self) -> None:
        """Start the writer and the heartbeat (in the running loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write(), name="bus-writer"),
            loop.create_task(self._beat(), name="bus-heartbeat"),
        ]

    async def stop(self) -> None:
        """After the calls ended: say the replica leaves, give the queue :data:`STOP_FLUSH_S` to go out, stop."""
        self._heartbeat_record("replica_stop")
        deadline = time.monotonic() + STOP_FLUSH_S
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._stopping = True  # as well as cancelling: a cancel that lands inside a broker call may be lost there
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=WRITE_TIMEOUT_S + 1.0)
        if self._queue:
            log.warning("bus: %d record(s) not sent to the broker at shutdown", len(self._queue))

    # ------------------------------------------------------------ tasks

    def _heartbeat_record(self, kind: str) -> None:
        record = {"type": kind, "replica": self.replica, "time": time.time(), **self._heartbeat()}
        self.offer("", EventHub.encode(record))

    async def _beat(self) -> None:
        while not self._stopping:
            self._heartbeat_record("heartbeat")
            await asyncio.sleep(self.cfg.heartbeat_s)

    async def _write(self) -> None:
        """Connect, then append what is queued, batch by batch; on a broker error, reconnect and send it again."""
        backoff = Backoff(self.cfg.reconnect_max_s)
        client = redis_client(self.url, WRITE_TIMEOUT_S)
        errors = BUS_ERRORS
        lost_once = False
        try:
            while not self._stopping:
                try:
                    await client.ping()
                except errors as exc:
                    self._set_connected(False, exc)
                    await backoff.wait()
                    continue
                if lost_once:
                    self.link.reconnects.inc()
                self._set_connected(True)
                backoff.reset()
                try:
                    await self._drain(client)
                except errors as exc:
                    lost_once = True
                    self._set_connected(False, exc)
                    await backoff.wait()
        finally:
            self._set_connected(False)
            with contextlib.suppress(*errors):
                await client.aclose()

    async def _drain(self, client: Redis) -> None:
        """Append queued records until stopped; raises the broker's error (the batch stays queued)."""
        stream = self.cfg.stream
        while not self._stopping:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            pipe = client.pipeline(transaction=False)
            for seq, sent, text in batch:
                pipe.xadd(stream, entry_fields(self.replica, self.incarnation, seq, sent, text))
            min_id = int((time.time() - self.cfg.max_age_s) * 1000)
            pipe.xtrim(stream, minid=min_id, approximate=True)
            await pipe.execute()
            for _ in batch:
                self._queue.popleft()
            self.published.inc(len(batch))

    def _set_connected(self, connected: bool, error: BaseException | None = None) -> None:
        if connected != self.connected and not self._stopping:
            if connected:
                log.info(
                    "bus: connected to %s (stream %s, replica %s)", safe_url(self.url), self.cfg.stream, self.replica
                )
            else:
                log.warning(
                    "bus: %s unreachable (%s); records wait (at most %d), then are dropped and counted",
                    safe_url(self.url),
                    error or "closing",
                    self.cfg.max_pending,
                )
        self.connected = connected
        self.link.connected.set(1 if connected else 0)
