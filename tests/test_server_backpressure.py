"""Backpressure: a subscriber that never reads loses records (counted) and never slows a call."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import pytest
from test_server_support import (
    ANGRY,
    TOKEN,
    fast_plan,
    metric_value,
    mulaw_clip,
    open_ws,
    read_records,
    running_server,
    send_twilio,
)

from emostream.engine.plan import SessionPlan
from emostream.server.events import EventHub

__all__ = ["fast_plan"]


def test_hub_never_waits_and_tells_a_slow_subscriber_what_it_lost() -> None:
    async def scenario() -> tuple[list[str], int, float]:
        lost: list[int] = []
        hub = EventHub(queue_size=3, on_drop=lambda: lost.append(1))
        slow = hub.subscribe()
        other = hub.subscribe("other-call")
        started = time.perf_counter()
        for i in range(1000):
            hub.publish("call", {"type": "hop", "i": i})
        elapsed = time.perf_counter() - started
        texts = await slow.next_texts()
        assert other.queue.qsize() == 0  # filtered: another call's subscriber gets nothing
        return texts, len(lost), elapsed

    texts, lost, elapsed = asyncio.run(scenario())
    assert lost == 997
    assert texts == ['{"type":"dropped","count":997}'] + [f'{{"type":"hop","i":{i}}}' for i in range(3)]
    assert elapsed < 1.0


def _stuck_subscriber(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n", 1)[0]
    return sock


@pytest.mark.slow
def test_a_subscriber_that_never_reads_does_not_slow_a_call(fast_plan: SessionPlan) -> None:
    """Three /events subscribers that never read are connected while a call streams at ~20x real time.

    A stuck socket first fills the kernel's buffers (about 2 MB on loopback, thousands of
    records), so their records are dropped only later in a long call; the drop accounting
    itself is tested on the hub above. What this test shows: the call is not slowed.
    """
    audio = mulaw_clip(ANGRY) * 20  # about 75 s of call audio
    with running_server(fast_plan, events_queue_size=50) as server:
        stuck = [_stuck_subscriber(server.port, "/events") for _ in range(3)]
        try:
            with open_ws(server, "/events?call=MZbusy") as events, open_ws(server, "/twilio", token=None) as ws:
                events.recv(timeout=10)
                started = time.monotonic()
                send_twilio(ws, {"inbound": audio, "outbound": audio}, stream_sid="MZbusy", pace_s=0.001)
                records = read_records(events, lambda r: r["type"] == "call_end", timeout_s=120)
                elapsed = time.monotonic() - started
        finally:
            for sock in stuck:
                sock.close()
        summary = records[-1]["summary"]
        hops = [r for r in records if r["type"] == "hop"]
        assert records[-1]["type"] == "call_end" and summary["dropped_audio_s"] == 0
        assert not any(r["type"] == "dropped" for r in records)  # the reading subscriber lost nothing
        within_250ms = server.metric("emostream_hop_latency_seconds_bucket", 'le="0.25"')
        assert within_250ms >= 0.99 * server.metric("emostream_hop_latency_seconds_count")
        assert server.metric("emostream_dropped_audio_seconds_total") == 0
        audio_s = len(audio) / 8000
        assert len(hops) > 0.9 * 2 * 2 * audio_s  # every hop of both channels (a hop per 0.5 s) reached the reader
        assert elapsed < audio_s / 3  # far faster than real time: nothing waited for the stuck subscribers


def test_an_events_client_that_leaves_is_unsubscribed_while_records_flow(fast_plan: SessionPlan) -> None:
    """The /events sender waits on its queue and is cancelled by the task reading the client when the client
    leaves: the subscriber is removed (gauge back to 0) while a call keeps publishing, and a second client
    still gets the call's records to the end."""
    audio = mulaw_clip(ANGRY) * 3
    with running_server(fast_plan) as server:
        hub = server.ctx.hub
        with open_ws(server, "/events") as leaving:
            leaving.recv(timeout=10)  # the snapshot
            deadline = time.monotonic() + 10
            while hub.count != 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert hub.count == 1
        deadline = time.monotonic() + 10
        while hub.count and time.monotonic() < deadline:  # no record flows yet: only the reader sees it leave
            time.sleep(0.01)
        assert hub.count == 0
        with open_ws(server, "/events") as staying, open_ws(server, "/twilio", token=None) as ws:
            staying.recv(timeout=10)
            send_twilio(ws, {"inbound": audio}, stream_sid="MZleave", pace_s=0.001)
            records = read_records(staying, lambda r: r["type"] == "call_end", timeout_s=60)
        assert records[-1]["type"] == "call_end" and any(r["type"] == "hop" for r in records)
        deadline = time.monotonic() + 10
        while (hub.count or metric_value(server.port, "emostream_event_subscribers")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.count == 0
        assert metric_value(server.port, "emostream_event_subscribers") == 0
