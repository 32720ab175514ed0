"""Units of a fleet without processes: [bus] settings, the supervisor's view of the calls from bus entries
(replica names, histories, heartbeats, lost and stopped replicas, repeats and gaps), the publisher's bounded queue."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("redis")

from prometheus_client import CollectorRegistry

from emostream.config import config_from_dict, summary
from emostream.errors import ConfigError
from emostream.server.bus import BusPublisher
from emostream.server.bus_config import BusConfig, safe_url
from emostream.server.events import EventHub
from emostream.server.fleet import FleetCalls

CHANNELS = [{"channel": 0, "role": "customer", "name": "customer (ch 0)", "analysed": True}]


def test_bus_section_is_read_from_the_config() -> None:
    cfg = config_from_dict({"bus": {"url": "redis://10.0.0.5:6380/2", "replica": "r-1", "max_age_s": 60}}, "t.toml")
    assert cfg.bus.url == "redis://10.0.0.5:6380/2" and cfg.bus.replica == "r-1" and cfg.bus.max_age_s == 60
    assert config_from_dict({}, "t.toml").bus.url is None


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"url": "nats://127.0.0.1:4222"}, "NATS is not supported"),
        ({"url": "http://127.0.0.1:6379"}, "expected redis://HOST:PORT/DB"),
        ({"url": "redis://127.0.0.1:6379/abc"}, "database 'abc'"),
        ({"url": "redis://:6379/0"}, "without a host"),
        ({"replica": "has space"}, "[bus] replica"),
        ({"heartbeat_s": 2.0, "heartbeat_timeout_s": 3.0}, "at least twice heartbeat_s"),
        ({"max_pending": 5}, "max_pending is 5"),
    ],
)
def test_bad_bus_settings_name_the_key(values: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"bus": values}, "t.toml")
    assert fragment in str(caught.value) and "t.toml: [bus]" in str(caught.value)


def test_supervisor_without_a_bus_and_a_nats_url_exit_2() -> None:
    for args, fragment in (
        (["--supervisor"], "--supervisor: no bus to read"),
        (["--bus", "nats://127.0.0.1:4222"], "NATS is not supported"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "emostream", "serve", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert fragment in proc.stderr and "Traceback" not in proc.stderr


class Feed:
    """Bus entries of one replica incarnation, numbered as the replica numbers them."""

    def __init__(self, fleet: FleetCalls, replica: str, incarnation: str = "a") -> None:
        self.fleet, self.replica, self.incarnation, self.seq = fleet, replica, incarnation, 0

    def send(self, record: dict[str, Any], *, skip: int = 0) -> dict[str, Any] | None:
        self.seq += 1 + skip
        return self.fleet.take(self.replica, self.incarnation, self.seq, json.dumps(record))

    def start(self, call_id: str) -> None:
        record = {"type": "call_start", "call_id": call_id, "source": "twilio", "started_at": "x"}
        self.send(record | {"channels": CHANNELS})

    def hop(self, call_id: str, t_end: float, emotion: str = "calm") -> None:
        record = {"type": "hop", "call_id": call_id, "channel": 0, "role": "customer", "t_end": t_end}
        self.send(record | {"emotion": emotion, "uncertain": False, "speech_ratio": 0.9, "scores": {"calm": 1.0}})

    def beat(self, calls: list[str]) -> None:
        self.send({"type": "heartbeat", "replica": self.replica, "calls": calls, "model": "fast", "labels": ["calm"]})


def make_fleet(timeout_s: float = 3.0) -> tuple[FleetCalls, list[dict[str, Any]]]:
    hub = EventHub(1000)
    sub = hub.subscribe()
    fleet = FleetCalls(hub, hop_s=0.5, min_speech_ratio=0.3, heartbeat_timeout_s=timeout_s)
    published: list[dict[str, Any]] = []

    def records() -> list[dict[str, Any]]:
        while not sub.queue.empty():
            published.append(json.loads(sub.queue.get_nowait()))
        return published

    fleet.records = records  # type: ignore[attr-defined]
    return fleet, published


def test_calls_of_every_replica_with_their_history_and_replica_name() -> None:
    fleet, _ = make_fleet()
    r1, r2 = Feed(fleet, "r1"), Feed(fleet, "r2")
    r1.start("A")
    r2.start("B")
    for i in range(4):
        r1.hop("A", 1.0 + 0.5 * i, "angry")
    r2.hop("B", 1.0)
    infos = {i["call_id"]: i for i in fleet.infos(history=True)}
    assert infos["A"]["replica"] == "r1" and infos["B"]["replica"] == "r2"
    assert [p[:2] for p in infos["A"]["history"]["0"]] == [[t, "angry"] for t in (1.0, 1.5, 2.0, 2.5)]
    assert infos["A"]["history"]["0"][0][3] is True  # speech_ratio 0.9 >= 0.3
    assert infos["A"]["last"]["0"]["t_end"] == 2.5 and infos["A"]["channels"] == CHANNELS
    published = fleet.records()  # type: ignore[attr-defined]
    assert {r["replica"] for r in published if r["type"] == "hop"} == {"r1", "r2"}
    assert fleet.model is None
    r1.beat(["A"])
    assert fleet.model == "fast" and fleet.labels == ["calm"]


def test_repeats_are_dropped_and_gaps_counted() -> None:
    fleet, _ = make_fleet()
    r1 = Feed(fleet, "r1")
    r1.start("A")
    r1.hop("A", 1.0)
    assert fleet.take("r1", "a", 2, json.dumps({"type": "hop", "call_id": "A", "t_end": 1.0})) is None  # sent again
    r1.send({"type": "hop", "call_id": "A", "channel": 0, "t_end": 2.0}, skip=3)
    replica = fleet.replicas["r1"]
    assert replica.repeats == 1 and replica.missing == 3 and replica.records == 3


def test_a_call_missing_from_the_heartbeat_ends_with_the_reason() -> None:
    fleet, _ = make_fleet()
    r1 = Feed(fleet, "r1")
    r1.start("A")
    r1.start("B")
    r1.beat(["A", "B"])
    assert len(fleet) == 2
    r1.beat(["A"])  # B's call_end was lost while the broker was away
    ends = [r for r in fleet.records() if r["type"] == "call_end"]  # type: ignore[attr-defined]
    assert [e["call_id"] for e in ends] == ["B"] and "its call_end was not received" in ends[0]["summary"]["end_reason"]
    assert [i["call_id"] for i in fleet.infos()] == ["A"]


def test_a_silent_replica_is_lost_and_only_its_calls_end() -> None:
    fleet, _ = make_fleet(timeout_s=3.0)
    r1, r2 = Feed(fleet, "r1"), Feed(fleet, "r2")
    r1.start("A")
    r2.start("B")
    now = fleet.replicas["r1"].seen_at
    assert fleet.expire(now + 2.0) == []
    fleet.replicas["r1"].seen_at = now + 2.5  # r1 keeps beating, r2 is silent
    assert fleet.expire(now + 4.0) == ["r2"]
    ends = [r for r in fleet.records() if r["type"] == "call_end"]  # type: ignore[attr-defined]
    assert [e["call_id"] for e in ends] == ["B"] and ends[0]["replica"] == "r2"
    assert ends[0]["summary"]["end_reason"].startswith("replica r2 lost: no heartbeat for 4.0 s")
    assert [i["call_id"] for i in fleet.infos()] == ["A"] and fleet.live_replicas == 1


def test_time_without_the_bus_is_not_held_against_replicas() -> None:
    fleet, _ = make_fleet(timeout_s=3.0)
    Feed(fleet, "r1").start("A")
    fleet.replicas["r1"].seen_at -= 10.0  # its last entry came 10 s ago, before the supervisor lost the bus
    fleet.bus_restored()  # the supervisor reached the broker again just now
    now = time.monotonic()
    assert fleet.expire(now + 2.0) == [] and len(fleet) == 1  # replicas get the timeout to be heard again
    assert fleet.expire(now + 3.5) == ["r1"] and len(fleet) == 0


def test_replica_stop_and_restart_end_what_is_left() -> None:
    fleet, _ = make_fleet()
    r1 = Feed(fleet, "r1")
    r1.start("A")
    r1.send({"type": "replica_stop", "replica": "r1", "calls": []})
    assert len(fleet) == 0 and fleet.live_replicas == 0
    r1.start("B")
    again = Feed(fleet, "r1", incarnation="b")  # the replica started again: numbering from 1
    again.start("C")
    reasons = {r["call_id"]: r["summary"]["end_reason"] for r in fleet.records() if r["type"] == "call_end"}  # type: ignore[attr-defined]
    assert reasons == {"A": "replica r1 stopped", "B": "replica r1 restarted"}
    assert [i["call_id"] for i in fleet.infos()] == ["C"]


def test_publisher_queue_is_bounded_and_never_waits() -> None:
    async def scenario() -> tuple[int, float, list[int]]:
        registry = CollectorRegistry()
        bus = BusPublisher(
            BusConfig(url="redis://127.0.0.1:9/0", max_pending=100), "r1", registry, heartbeat=dict
        )  # nothing listens on port 9: the broker is away
        hub = EventHub(10)
        bus.attach(hub)
        for i in range(250):
            hub.publish("A", {"type": "hop", "call_id": "A", "t_end": float(i)})
        seqs = [seq for seq, _, _ in bus._queue]
        return bus.pending, registry.get_sample_value("emostream_bus_dropped_total") or 0.0, seqs

    pending, dropped, seqs = asyncio.run(scenario())
    assert pending == 100 and dropped == 150 and seqs == list(range(1, 101))


def test_a_password_in_the_bus_url_is_never_shown() -> None:
    cfg = config_from_dict({"bus": {"url": "redis://:s3cret-pass@10.0.0.5:6379/0"}}, "t.toml")
    assert summary(cfg)["bus"]["url"] == "redis://***@10.0.0.5:6379/0"
    assert safe_url("rediss://user:s3cret@h:6380/1") == "rediss://***@h:6380/1"
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"bus": {"url": "nats://u:s3cret@h:4222"}}, "t.toml")
    assert "s3cret" not in str(caught.value)


def test_alerts_of_a_call_active_until_cleared_and_kept_in_its_history() -> None:
    fleet, _ = make_fleet()
    r1 = Feed(fleet, "r1")
    r1.start("A")
    r1.hop("A", 3.0, "angry")
    alert = {"type": "alert", "call_id": "A", "channel": 0, "rule": "angry", "t_end": 3.0}
    r1.send(alert | {"state": "fired"})
    (info,) = fleet.infos(history=True)
    assert [a["state"] for a in info["alerts"]] == ["fired"] and info["alerts"][0]["replica"] == "r1"
    r1.send(alert | {"state": "cleared", "t_end": 5.0})
    (info,) = fleet.infos(history=True)
    assert info["alerts"] == [] and [a["state"] for a in info["alert_history"]] == ["fired", "cleared"]
