"""A replica publishing on a real Redis bus and the supervisor serving its calls (both in this process): replica
names, the snapshot's timelines for a page opened mid-call, /api/calls, /healthz, /metrics, the drain's call_end
and replica_stop. Needs Debian's redis-server (``.ci/setup dev`` installs it)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("redis")

from test_server_support import (
    FIXTURES,
    fast_plan,  # noqa: F401 (a fixture)
    mulaw_clip,
    open_ws,
    read_records,
    running_server,
    send_twilio,
    wait_for,
)

from benchmarks.fleet import Fleet, free_port, missing_binaries
from emostream.config import apply_overrides
from emostream.engine.plan import SessionPlan
from emostream.server.auth import Token
from emostream.server.supervisor import make_supervisor_context

pytestmark = pytest.mark.skipif(
    "redis-server" in missing_binaries(),
    reason="redis-server not installed (bash .ci/setup dev installs the Debian packages)",
)
ANGRY = FIXTURES / "Actor_01" / "03-01-05-02-01-01-01.flac"


def assert_late_supervisor_sees(plan: SessionPlan, bus_url: str, info: dict[str, Any]) -> None:
    """A supervisor started mid-call (or restarted) reads the stream back: the same call, its timeline."""
    with running_server(plan, supervisor=True, bus={"url": bus_url}) as late:
        assert wait_for(lambda: json.loads(late.get("/api/calls")[1])["calls"], 10)
        with open_ws(late, "/events") as page:
            (late_info,) = json.loads(page.recv(timeout=10))["calls"]
    assert late_info["call_id"] == info["call_id"] and late_info["replica"] == info["replica"]
    assert len(late_info["history"]["0"]) >= len(info["history"]["0"])


@pytest.fixture
def bus_url(tmp_path: Path) -> Iterator[str]:
    fleet = Fleet(tmp_path)
    fleet.ports["redis"] = free_port()
    try:
        fleet.start_redis()
        yield fleet.bus_url
    finally:
        fleet.stop()


def test_supervisor_shows_a_replicas_call_with_its_timeline_then_how_it_ended(
    fast_plan: SessionPlan,  # noqa: F811
    bus_url: str,
) -> None:
    bus = {"url": bus_url, "replica": "r1", "heartbeat_s": 0.2, "heartbeat_timeout_s": 1.0}
    with running_server(fast_plan, supervisor=True, bus={"url": bus_url}) as sup:
        replica_ctx = running_server(fast_plan, bus=bus)
        replica = replica_ctx.__enter__()
        stopped = False
        try:
            status, body = replica.get("/healthz")
            assert status == 200 and json.loads(body)["bus"] in ("connected", "unreachable")
            assert wait_for(lambda: json.loads(replica.get("/healthz")[1])["bus"] == "connected")
            audio = mulaw_clip(ANGRY, 6.0)
            with open_ws(replica, "/twilio") as ws:
                sender = threading.Thread(
                    target=send_twilio, args=(ws, {"inbound": audio}), kwargs={"stream_sid": "MZfleet1", "stop": False}
                )
                sender.start()
                sender.join()

                def calls() -> list[dict[str, Any]]:
                    return json.loads(sup.get("/api/calls")[1])["calls"]

                # a page opened mid-call: the snapshot carries the call, its replica and its timeline so far
                assert wait_for(lambda: any(c["last"]["0"] for c in calls()), 20)
                assert wait_for(lambda: len(calls()[0]["last"]) and calls()[0]["last"]["0"]["t_end"] >= 4.0, 20)
                with open_ws(sup, "/events") as page:
                    snapshot = json.loads(page.recv(timeout=10))
                    assert snapshot["type"] == "snapshot" and snapshot["model"] == "fast" and snapshot["fleet"]
                    (info,) = snapshot["calls"]
                    assert info["call_id"] == "MZfleet1" and info["replica"] == "r1"
                    assert info["channels"][0]["role"] == "customer"
                    assert len(info["history"]["0"]) >= 6  # the hops so far, not an empty strip
                    assert all(len(point) == 4 for point in info["history"]["0"])
                    assert_late_supervisor_sees(fast_plan, bus_url, info)
                    health = json.loads(sup.get("/healthz")[1])
                    assert health == {"status": "ok", "bus": "connected", "replicas": 1, "calls": 1}
                    ws.send(json.dumps({"event": "stop", "streamSid": "MZfleet1"}))
                    ends = read_records(page, lambda r: r["type"] == "call_end", 20)
                    assert ends[-1]["type"] == "call_end" and ends[-1]["replica"] == "r1"
                    assert ends[-1]["summary"]["end_reason"] == "stop"
                    assert any(r["type"] == "hop" and r["replica"] == "r1" for r in ends)
            # SIGTERM's drain with a call open: the page learns how it ended, then that the replica left
            with open_ws(replica, "/twilio") as ws2, open_ws(sup, "/events") as page:
                send_twilio(ws2, {"inbound": audio}, stream_sid="MZfleet2", stop=False)
                assert wait_for(lambda: any(c["call_id"] == "MZfleet2" for c in calls()), 20)
                stopped = True
                replica_ctx.__exit__(None, None, None)
                ends = read_records(page, lambda r: r["type"] == "call_end", 20)
                assert ends[-1]["call_id"] == "MZfleet2" and ends[-1]["replica"] == "r1"
                assert ends[-1]["summary"]["end_reason"] == "server shutting down"
        finally:
            if not stopped:
                replica_ctx.__exit__(None, None, None)
        assert wait_for(lambda: json.loads(sup.get("/healthz")[1])["replicas"] == 0, 10)  # replica_stop
        status, text = sup.get("/metrics")
        assert status == 200 and b'emostream_bus_received_total{replica="r1"}' in text
        assert b"emostream_bus_missing_total{" not in text  # no record of r1 went missing
        assert sup.get("/twilio")[0] == 404  # the supervisor takes no audio


def test_the_supervisor_delivers_no_alert(fast_plan: SessionPlan) -> None:  # noqa: F811
    cfg = apply_overrides(
        fast_plan.config, {"alerts_output": {"webhook": "http://127.0.0.1:9/alerts"}, "bus": {"url": "redis://h:1/0"}}
    )
    ctx = make_supervisor_context(cfg, dataclasses.replace(fast_plan, config=cfg), Token("t" * 20, "config"))
    assert ctx.delivery is None and ctx.bus is None and not ctx.takes_audio  # the replicas deliver their alerts
