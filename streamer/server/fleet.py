"""A fleet's supervisor view: every replica's open calls, rebuilt from the records on the bus.

:class:`FleetCalls` takes the bus entries in stream order (:meth:`FleetCalls.take`: the
replica, its incarnation and sequence number, the record), keeps each open call's
``<call info>`` (with its ``replica``) and recent records (:mod:`emostream.server.recent`),
and republishes every record, with ``"replica"`` added, on the supervisor's own
:class:`~emostream.server.events.EventHub` (its ``/events``).

Replica health, from the heartbeats (``docs/scaling.md``):

- a ``heartbeat`` names the replica's open calls: a call of that replica that it does not
  name has ended there (its ``call_end`` was lost while the broker was away) and is ended
  here with that reason;
- ``replica_stop`` (the replica shut down after ending its calls): what is still open of it
  ends with ``replica NAME stopped``;
- :meth:`FleetCalls.expire`: a replica without a heartbeat for ``heartbeat_timeout_s``
  (killed, hung, cut off from the broker) is lost; its calls end with ``replica NAME lost:
  no heartbeat for N s``. Time the supervisor itself was cut off from the broker does not
  count (:meth:`FleetCalls.bus_restored`).

Repeated entries (a replica sends a batch again after a broker error) are dropped by
their sequence numbers; gaps (records a replica dropped) are counted per replica.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emostream.server.events import EventHub
from emostream.server.recent import RecentRecords

log = logging.getLogger("emostream.server")


@dataclass
class Replica:
    """What the supervisor knows of one replica: its last heartbeat, its incarnation, what it sent."""

    name: str
    incarnation: str = ""
    last_seq: int = 0
    seen_at: float = 0.0  # monotonic time of its last entry
    records: int = 0
    missing: int = 0  # records lost on the way (gaps in the sequence)
    repeats: int = 0
    calls: set[str] = field(default_factory=set)
    model: str | None = None
    labels: list[str] = field(default_factory=list)
    alive: bool = True


@dataclass
class FleetCall:
    """One open call of some replica."""

    call_id: str
    replica: str
    recent: RecentRecords
    source: str = ""
    started_at: str = ""
    channels: list[dict[str, Any]] = field(default_factory=list)

    def info(self, *, history: bool = False) -> dict[str, Any]:
        """The ``<call info>`` of ``docs/server.md`` plus ``replica``."""
        return {
            "call_id": self.call_id,
            "replica": self.replica,
            "source": self.source,
            "started_at": self.started_at,
            "channels": [dict(c) for c in self.channels],
            **self.recent.fields(history=history),
        }


class FleetCalls:
    """The open calls of every replica, from the bus; see the module docstring."""

    def __init__(self, hub: EventHub, *, hop_s: float, min_speech_ratio: float, heartbeat_timeout_s: float) -> None:
        self.hub = hub
        self.hop_s = hop_s
        self.min_speech_ratio = min_speech_ratio
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.calls: dict[str, FleetCall] = {}
        self.replicas: dict[str, Replica] = {}
        self._counted_from = time.monotonic()  # heartbeats are missed only while the bus is up

    def __len__(self) -> int:
        return len(self.calls)

    def infos(self, *, history: bool = False) -> list[dict[str, Any]]:
        """``<call info>`` (with ``replica``) of every open call of the fleet."""
        return [c.info(history=history) for c in self.calls.values()]

    @property
    def model(self) -> str | None:
        """The model the replicas run (the last heartbeat's), None before any."""
        return next((r.model for r in self.replicas.values() if r.model), None)

    @property
    def labels(self) -> list[str]:
        return next((r.labels for r in self.replicas.values() if r.labels), [])

    # ------------------------------------------------------------ bus entries

    def take(self, replica_name: str, incarnation: str, seq: int, text: str) -> dict[str, Any] | None:
        """One bus entry; returns its record (with ``replica``) once published, None for a repeat or bad entry."""
        replica = self._in_sequence(replica_name, incarnation, seq)
        if replica is None:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            log.warning("bus: an entry of replica %s is not JSON; skipped", replica_name)
            return None
        if not isinstance(record, dict):
            return None
        kind = record.get("type")
        if kind == "heartbeat":
            self._heartbeat(replica, record)
            return record
        if kind == "replica_stop":
            self._end_replica_calls(replica, f"replica {replica_name} stopped")
            replica.alive = False
            return record
        call_id = record.get("call_id")
        if not isinstance(call_id, str):
            return None
        record["replica"] = replica_name
        if kind == "call_end":
            self._ended(call_id)
        else:
            self._call_record(self.calls.get(call_id) or self._open(call_id, replica, record), record)
        self.hub.publish(call_id, record)
        return record

    def _in_sequence(self, name: str, incarnation: str, seq: int) -> Replica | None:
        """The entry's replica, None for an entry seen before; counts the records missing before this one."""
        replica = self.replicas.get(name)
        if replica is None:
            replica = self.replicas[name] = Replica(name)
        if replica.incarnation != incarnation:  # a new start of the replica: its numbering starts again
            if replica.incarnation:
                self._end_replica_calls(replica, f"replica {name} restarted")
            replica.incarnation, replica.last_seq = incarnation, 0
        if seq <= replica.last_seq:
            replica.repeats += 1
            return None
        replica.missing += seq - replica.last_seq - 1
        replica.last_seq = seq
        replica.seen_at = time.monotonic()
        replica.records += 1
        replica.alive = True
        return replica

    def _call_record(self, call: FleetCall, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "call_start":
            call.source = str(record.get("source") or "")
            call.started_at = str(record.get("started_at") or "")
            call.channels = [c for c in record.get("channels") or [] if isinstance(c, dict)]
            for c in call.channels:
                call.recent.add_channel(int(c.get("channel") or 0))
        elif kind == "hop":
            ratio = record.get("speech_ratio")
            call.recent.hop(record, is_speech=isinstance(ratio, int | float) and ratio >= self.min_speech_ratio)
        elif kind == "alert":
            call.recent.alert(record)

    def _open(self, call_id: str, replica: Replica, record: dict[str, Any]) -> FleetCall:
        """A call first seen now (its ``call_start``, or a later record when that was missed)."""
        call = FleetCall(call_id, replica.name, RecentRecords((), self.hop_s), source=str(record.get("source") or ""))
        call.started_at = str(record.get("started_at") or record.get("time") or _now_iso())
        self.calls[call_id] = call
        replica.calls.add(call_id)
        return call

    def _ended(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is not None and call.replica in self.replicas:
            self.replicas[call.replica].calls.discard(call_id)

    def _heartbeat(self, replica: Replica, record: dict[str, Any]) -> None:
        replica.model = record.get("model") or replica.model
        labels = record.get("labels")
        if isinstance(labels, list):
            replica.labels = [str(x) for x in labels]
        named = set(record.get("calls") or [])
        for call_id in sorted(replica.calls - named):  # ended there; the call_end did not come
            self.end_call(call_id, f"ended on replica {replica.name} (its call_end was not received)")

    def end_call(self, call_id: str, reason: str) -> None:
        """End ``call_id`` here: a ``call_end`` with ``reason`` (the replica could not send its own)."""
        call = self.calls.get(call_id)
        if call is None:
            return
        self._ended(call_id)
        summary = {
            "call": call_id,
            "source": call.source,
            "started_at": call.started_at,
            "ended_at": _now_iso(),
            "end_reason": reason,
            "replica": call.replica,
            "channels": [],
        }
        log.info("call %s (replica %s) ended: %s", call_id, call.replica, reason)
        self.hub.publish(call_id, {"type": "call_end", "call_id": call_id, "replica": call.replica, "summary": summary})

    def _end_replica_calls(self, replica: Replica, reason: str) -> None:
        for call_id in sorted(replica.calls):
            self.end_call(call_id, reason)

    # ------------------------------------------------------------ health

    def bus_restored(self) -> None:
        """The supervisor reached the broker again: silence before now is not held against the replicas."""
        self._counted_from = time.monotonic()

    def expire(self, now: float | None = None) -> list[str]:
        """End the calls of replicas silent for ``heartbeat_timeout_s`` (bus time only); returns their names."""
        now = time.monotonic() if now is None else now
        lost = []
        for replica in self.replicas.values():
            silent = now - max(replica.seen_at, self._counted_from)
            if replica.alive and silent > self.heartbeat_timeout_s:
                replica.alive = False
                lost.append(replica.name)
                log.warning("replica %s lost: no heartbeat for %.1f s", replica.name, silent)
                self._end_replica_calls(replica, f"replica {replica.name} lost: no heartbeat for {silent:.1f} s")
        return lost

    @property
    def live_replicas(self) -> int:
        return sum(r.alive for r in self.replicas.values())


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
