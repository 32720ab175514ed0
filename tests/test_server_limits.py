"""Every bad input closes its connection with a clear code and reason, is counted, and leaves other calls alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from test_server_support import (
    ANGRY,
    TOKEN,
    RunningServer,
    close_of,
    fast_plan,
    mulaw_clip,
    open_ws,
    read_records,
    running_server,
    send_twilio,
    wait_for,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from emostream.audio.codecs import encode_raw
from emostream.engine.plan import SessionPlan
from emostream.server.twilio import stream_messages

__all__ = ["fast_plan"]

MAX_BYTES = 4096
HEADER = {"sample_rate_hz": 16000, "encoding": "s16le", "channels": 1}


@pytest.fixture(scope="module")
def server(fast_plan: SessionPlan) -> Iterator[RunningServer]:
    with running_server(fast_plan, max_message_bytes=MAX_BYTES, idle_timeout_s=1.0, max_calls=2) as running:
        yield running


def _rejected(server: RunningServer, reason: str) -> float:
    return server.metric("emostream_rejected_connections_total", f'reason="{reason}"')


def _silence_frame() -> bytes:
    return encode_raw(np.zeros(320, dtype=np.float32), "s16le")


# ---------------------------------------------------------------- tokens


def test_healthz_needs_no_token(server: RunningServer) -> None:
    status, body = server.get("/healthz", token=None)
    assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize("path", ["/metrics", "/api/calls"])
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_http_endpoints_refuse_a_missing_or_wrong_token(server: RunningServer, path: str, token: str | None) -> None:
    before = _rejected(server, "bad_token")
    status, body = server.get(path, token=token)
    assert status == 401 and b"token" in body
    assert _rejected(server, "bad_token") == before + 1


def test_query_token_only_where_needed(server: RunningServer) -> None:
    """?token= lands in proxies' access logs: taken on /ingest (FreeSWITCH cannot send a header), not elsewhere."""
    status, body = server.get(f"/api/calls?token={TOKEN}", token=None)
    assert status == 401 and b"Authorization" in body
    with open_ws(server, f"/events?token={TOKEN}", token=None) as ws:
        code, reason = close_of(ws)
    assert code == 1008 and "query_token_paths" in reason
    with connect(server.url("/ingest"), open_timeout=10) as ws:  # ?token= on /ingest
        ws.send(json.dumps(HEADER))
        assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
        ws.send(json.dumps({"type": "stop"}))


@pytest.mark.parametrize("path", ["/events", "/ingest", "/twilio"])
def test_websockets_refuse_a_wrong_token_with_1008(server: RunningServer, path: str) -> None:
    with open_ws(server, path, token="wrong-token-0123456789") as ws:
        code, reason = close_of(ws)
    assert code == 1008 and "token" in reason


@pytest.mark.parametrize("path", ["/events", "/ingest"])
def test_websockets_refuse_a_missing_token_with_1008(server: RunningServer, path: str) -> None:
    with open_ws(server, path, token=None) as ws:
        code, _ = close_of(ws)
    assert code == 1008


def test_twilio_refuses_a_wrong_token_parameter(server: RunningServer) -> None:
    before = _rejected(server, "bad_token")
    with open_ws(server, "/twilio", token=None) as ws:
        send_twilio(ws, {"inbound": b"\xff" * 800}, stream_sid="MZbadtoken", token="nope-nope-nope-nope")
        code, reason = close_of(ws)
    assert code == 1008 and "token" in reason
    assert _rejected(server, "bad_token") == before + 1
    assert server.metric("emostream_calls_total", 'source="twilio"') == 0 or "MZbadtoken" not in server.ctx.calls.calls


def test_twilio_token_in_the_authorization_header(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with open_ws(server, "/twilio", token=None, additional_headers=headers) as ws:
        send_twilio(ws, {"inbound": mulaw_clip(ANGRY, 1.0)}, stream_sid="MZheader", token=None)
        code, _ = close_of(ws)
    assert code == 1000


# ---------------------------------------------------------------- malformed input


def test_twilio_malformed_json_closes_1007(server: RunningServer) -> None:
    with open_ws(server, "/twilio", token=None) as ws:
        ws.send("{not json")
        code, reason = close_of(ws)
    assert code == 1007 and "JSON" in reason


def test_twilio_media_before_start_closes_1002(server: RunningServer) -> None:
    before = _rejected(server, "media_before_start")
    _, frames, _ = stream_messages({"inbound": b"\xff" * 160}, stream_sid="MZearly")
    with open_ws(server, "/twilio", token=None) as ws:
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send(frames[0][0])
        code, reason = close_of(ws)
    assert code == 1002 and "before start" in reason
    assert _rejected(server, "media_before_start") == before + 1


def test_twilio_unknown_media_format_closes_1003(server: RunningServer) -> None:
    head, _, _ = stream_messages({"inbound": b""}, stream_sid="MZl16", custom_parameters={"token": TOKEN})
    start = json.loads(head[1])
    start["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}
    with open_ws(server, "/twilio", token=None) as ws:
        ws.send(json.dumps(start))
        code, reason = close_of(ws)
    assert code == 1003 and "audio/x-mulaw" in reason


def test_twilio_malformed_media_closes_1007_and_ends_the_call(server: RunningServer) -> None:
    with open_ws(server, "/events?call=MZbadmedia") as events, open_ws(server, "/twilio", token=None) as ws:
        events.recv(timeout=10)
        send_twilio(ws, {"inbound": mulaw_clip(ANGRY, 1.0)}, stream_sid="MZbadmedia", stop=False)
        ws.send(json.dumps({"event": "media", "media": {"track": "inbound", "payload": "@@@"}}))
        code, _ = close_of(ws)
        records = read_records(events, lambda r: r["type"] == "call_end", timeout_s=10)
    assert code == 1007
    assert records[-1]["type"] == "call_end"
    assert records[-1]["summary"]["end_reason"] == "rejected: malformed_message"


def test_twilio_media_of_a_track_not_announced_closes_1007_after_marks_and_media_in_between(
    server: RunningServer,
) -> None:
    """Media taken as it is read (the WebSocket fast path's receiver) and the messages it declines keep their
    order: a mark between media messages changes nothing, media of an unannounced track is refused as before."""
    head, frames, _ = stream_messages(
        {"inbound": mulaw_clip(ANGRY, 1.0)}, stream_sid="MZwrongtrack", custom_parameters={"token": TOKEN}
    )
    _, other, _ = stream_messages({"outbound": b"\xff" * 160}, stream_sid="MZwrongtrack")
    mark = json.dumps({"event": "mark", "sequenceNumber": "9", "streamSid": "MZwrongtrack", "mark": {"name": "a"}})
    with open_ws(server, "/events?call=MZwrongtrack") as events, open_ws(server, "/twilio", token=None) as ws:
        events.recv(timeout=10)
        for text in head:
            ws.send(text)
        for i, group in enumerate(frames):
            for text in group:
                ws.send(text)
            if i % 10 == 5:
                ws.send(mark)
        ws.send(other[0][0])
        code, reason = close_of(ws)
        records = read_records(events, lambda r: r["type"] == "call_end", timeout_s=10)
    assert code == 1007 and "'outbound'" in reason
    summary = records[-1]["summary"]
    assert summary["end_reason"] == "rejected: malformed_message"
    assert summary["duration_s"] == pytest.approx(len(frames) * 0.02, abs=0.021)  # every media message counted


def test_ingest_malformed_header_closes_1007(server: RunningServer) -> None:
    with open_ws(server, "/ingest") as ws:
        ws.send("{oops")
        code, _ = close_of(ws)
    assert code == 1007


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ({**HEADER, "sample_rate_hz": 12}, "sample_rate_hz"),
        ({**HEADER, "channels": 0}, "channels"),
        ({**HEADER, "colour": "red"}, "unknown keys"),
        ({**HEADER, "call_id": "../etc/passwd"}, "call_id"),
        ({**HEADER, "roles": ["a", "b"]}, "roles"),
    ],
)
def test_ingest_bad_header_fields_close_1007(server: RunningServer, header: dict[str, object], fragment: str) -> None:
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps(header))
        code, reason = close_of(ws)
    assert code == 1007 and fragment in reason


def test_ingest_unknown_encoding_closes_1003(server: RunningServer) -> None:
    before = _rejected(server, "unknown_encoding")
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps({**HEADER, "encoding": "opus"}))
        code, reason = close_of(ws)
    assert code == 1003 and "s16le" in reason
    assert _rejected(server, "unknown_encoding") == before + 1


def test_ingest_audio_before_the_header_closes_1002(server: RunningServer) -> None:
    with open_ws(server, "/ingest") as ws:
        ws.send(_silence_frame())
        code, _ = close_of(ws)
    assert code == 1002


def test_ingest_partial_samples_close_1007(server: RunningServer) -> None:
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps(HEADER))
        ws.recv(timeout=10)
        ws.send(b"\x00\x01\x02")
        code, reason = close_of(ws)
    assert code == 1007 and "whole frames" in reason


def test_ingest_non_finite_samples_close_1007(server: RunningServer) -> None:
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps({**HEADER, "encoding": "f32le"}))
        ws.recv(timeout=10)
        for _ in range(18):  # 1.1 s: the audio is analysed when it reaches the first reading (1 s)
            try:
                ws.send(np.full(1000, np.nan, dtype="<f4").tobytes())
            except ConnectionClosed:  # a busy client may still be sending when the server refuses the audio
                break
        code, reason = close_of(ws)
    assert code == 1007 and "non-finite" in reason


def test_oversize_frame_closes_1009(server: RunningServer) -> None:
    before = _rejected(server, "oversize")
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps(HEADER))
        ws.recv(timeout=10)
        ws.send(b"\x00\x00" * MAX_BYTES)
        code, _ = close_of(ws)
    assert code == 1009
    assert wait_for(lambda: _rejected(server, "oversize") == before + 1)


# ---------------------------------------------------------------- limits


def test_too_many_calls_closes_1013_and_open_calls_go_on(server: RunningServer) -> None:
    before = _rejected(server, "too_many_calls")
    with open_ws(server, "/ingest") as a, open_ws(server, "/ingest") as b:
        for i, ws in enumerate((a, b)):
            ws.send(json.dumps({**HEADER, "call_id": f"limit-{i}", "events": True}))
            assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
        with open_ws(server, "/ingest") as c:
            c.send(json.dumps({**HEADER, "call_id": "limit-2"}))
            code, reason = close_of(c)
        assert code == 1013 and "max_calls" in reason
        for ws in (a, b):
            ws.send(_silence_frame())
            ws.send(json.dumps({"type": "stop"}))
            records = read_records(ws, lambda r: r["type"] == "call_end", timeout_s=10)
            assert records[-1]["type"] == "call_end"
    assert _rejected(server, "too_many_calls") == before + 1


def test_call_id_in_use_closes_4409(server: RunningServer) -> None:
    with open_ws(server, "/ingest") as a, open_ws(server, "/ingest") as b:
        a.send(json.dumps({**HEADER, "call_id": "twice"}))
        a.recv(timeout=10)
        b.send(json.dumps({**HEADER, "call_id": "twice"}))
        code, _ = close_of(b)
        a.send(json.dumps({"type": "stop"}))
    assert code == 4409


def test_idle_call_is_ended_with_4408_and_summarised(server: RunningServer) -> None:
    with open_ws(server, "/events?call=idle-1") as events, open_ws(server, "/ingest") as ws:
        events.recv(timeout=10)
        ws.send(json.dumps({**HEADER, "call_id": "idle-1"}))
        ws.recv(timeout=10)
        ws.send(_silence_frame())
        started = time.monotonic()
        code, reason = close_of(ws, timeout_s=5)
        waited = time.monotonic() - started
        records = read_records(events, lambda r: r["type"] == "call_end", timeout_s=5)
    assert code == 4408 and "idle" in reason
    assert 0.9 < waited < 3.0
    assert records[-1]["summary"]["end_reason"].startswith("idle timeout")


def test_idle_call_with_events_gets_its_call_end_before_the_close(server: RunningServer) -> None:
    """A caller reading its events on the /ingest socket (the /try page) is told the summary, then 4408."""
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps({**HEADER, "call_id": "idle-echo", "events": True}))
        assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
        ws.send(_silence_frame())
        records = read_records(ws, lambda r: r["type"] == "call_end", timeout_s=5)
        code, reason = close_of(ws, timeout_s=5)
    assert records[-1]["call_id"] == "idle-echo"
    assert records[-1]["summary"]["end_reason"].startswith("idle timeout")
    assert code == 4408 and "idle" in reason


def test_idle_connection_before_any_call_is_closed(server: RunningServer) -> None:
    with open_ws(server, "/twilio", token=None) as ws:
        code, _ = close_of(ws, timeout_s=5)
    assert code == 4408


def test_a_bad_connection_does_not_disturb_a_running_call(server: RunningServer) -> None:
    with open_ws(server, "/events?call=MZsteady") as events, open_ws(server, "/twilio", token=None) as ws:
        events.recv(timeout=10)
        audio = mulaw_clip(ANGRY)
        send_twilio(ws, {"inbound": audio[: len(audio) // 2]}, stream_sid="MZsteady", stop=False)
        with open_ws(server, "/twilio", token=None) as bad:
            bad.send("garbage")
            assert close_of(bad)[0] == 1007
        _, frames, tail = stream_messages({"inbound": audio}, stream_sid="MZsteady")
        for group in frames[len(frames) // 2 :]:
            ws.send(group[0].replace('"timestamp"', '"ts"'))  # no timestamp: appended as it comes
        ws.send(tail[0])
        records = read_records(events, lambda r: r["type"] == "call_end")
        assert close_of(ws)[0] == 1000
    summary = records[-1]["summary"]
    assert summary["end_reason"] == "stop" and abs(summary["duration_s"] - len(audio) / 8000) < 0.05


def test_audio_beyond_the_backlog_is_dropped_and_counted(fast_plan: SessionPlan) -> None:
    burst = encode_raw(np.zeros(6400, dtype=np.float32) + 0.01, "s16le")  # 0.4 s per message
    with running_server(fast_plan, max_backlog_s=0.5, workers=1) as server, open_ws(server, "/ingest") as ws:
        ws.send(json.dumps({**HEADER, "call_id": "flood", "events": True}))
        ws.recv(timeout=10)
        for _ in range(200):  # 80 s of audio at once: far faster than it can be analysed
            ws.send(burst)
        ws.send(json.dumps({"type": "stop"}))
        records = read_records(ws, lambda r: r["type"] == "call_end", timeout_s=30)
        dropped_metric = server.metric("emostream_dropped_audio_seconds_total")
    summary = records[-1]["summary"]
    assert summary["dropped_audio_s"] > 0 and dropped_metric == pytest.approx(summary["dropped_audio_s"], abs=1e-3)
    assert summary["duration_s"] + summary["dropped_audio_s"] == pytest.approx(80.0, abs=1e-3)
