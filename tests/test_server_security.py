"""What a security review of ``emostream serve`` broke (issue #18), each finding as a test on 127.0.0.1.

Unauthenticated connections are held to deadlines and a cap; malformed input closes 1007
(or 1008) with one log line naming the peer, never a traceback; repeated warnings are
limited by wall-clock time; ids and roles are bounded; summaries are never overwritten and
leave no temporary file; tokens are scoped and never needed in a query string where a
header or subprotocol works; Host and Origin are checked; pages carry security headers;
alert deliveries are counted; metric labels are bounded; a call's snapshot carries its
recent timeline.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import io
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_server_support import (
    ANGRY,
    TOKEN,
    RunningServer,
    close_of,
    fast_plan,
    http_get,
    mulaw_clip,
    open_ws,
    read_records,
    running_server,
    send_twilio,
    wait_for,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emostream.audio.codecs import encode_raw
from emostream.config import Config
from emostream.engine.plan import SessionPlan
from emostream.server import summaries
from emostream.server.auth import Token, TokenSet, encode_subprotocol_token, write_token_file
from emostream.server.gate import warn_if_out_of_files
from emostream.server.logs import LogLimiter, SafeFormatter
from emostream.server.twilio import stream_messages

__all__ = ["fast_plan"]

READ_TOKEN = "read-token-0123456789abcdef"
INGEST_TOKEN = "ingest-token-0123456789abcdef"
HEADER = {"sample_rate_hz": 16000, "encoding": "s16le", "channels": 1}
SETTINGS: dict[str, Any] = {
    "header_timeout_s": 1.0,
    "auth_timeout_s": 1.5,
    "idle_timeout_s": 10.0,
    "max_unauthenticated": 8,
    "read_token": READ_TOKEN,
    "ingest_tokens": {"freeswitch": INGEST_TOKEN},
    "allowed_origins": ["https://supervisor.example.com"],
}


@pytest.fixture(scope="module")
def server(fast_plan: SessionPlan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    summary_dir = tmp_path_factory.mktemp("summaries")
    with running_server(fast_plan, summary_dir=str(summary_dir), **SETTINGS) as running:
        yield running


def _rejected(server: RunningServer, reason: str) -> float:
    return server.metric("emostream_rejected_connections_total", f'reason="{reason}"')


def _raw(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def _closed_by_server(sock: socket.socket, timeout_s: float = 10.0) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``timeout_s``."""
    sock.settimeout(timeout_s)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _silence(n: int = 320) -> bytes:
    return encode_raw(np.zeros(n, dtype=np.float32), "s16le")


def _server_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("emostream")]


# ---------------------------------------------------------------- 1. deadlines before trust


def test_a_socket_that_sends_nothing_is_closed_at_the_header_deadline(server: RunningServer) -> None:
    before = _rejected(server, "header_timeout")
    with _raw(server) as sock:
        assert _closed_by_server(sock)
    assert wait_for(lambda: _rejected(server, "header_timeout") >= before + 1)


def test_an_upgrade_request_dribbled_byte_by_byte_is_closed(server: RunningServer) -> None:
    request = (
        f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    closed = False
    with _raw(server) as sock:
        for byte in request[:60]:  # 60 bytes, one every 0.1 s: 6 s, well past the 1 s deadline
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        closed = closed or _closed_by_server(sock, 5.0)
    assert closed


def test_twilio_without_a_token_is_closed_at_the_auth_deadline_whatever_it_sends(server: RunningServer) -> None:
    """Messages before start do not extend the deadline: `connected` every 0.2 s is closed 1008 all the same."""
    before = _rejected(server, "auth_timeout")
    connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    with open_ws(server, "/twilio", token=None) as ws:
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 (the send fails once the server closed)
            while time.monotonic() - started < 15:
                ws.send(connected)
                time.sleep(0.2)
        code, reason = close_of(ws)
    assert code == 1008 and "auth_timeout_s" in reason
    assert _rejected(server, "auth_timeout") == before + 1


def test_unauthenticated_connections_are_capped_and_a_real_call_gets_through(server: RunningServer) -> None:
    """Beyond max_unauthenticated (8) the oldest idle socket is closed; a call with a token is not affected."""
    before = _rejected(server, "unauthenticated_evicted")
    socks = [_raw(server) for _ in range(12)]
    try:
        assert _closed_by_server(socks[0], 5.0)  # the oldest made room
        with open_ws(server, "/ingest") as ws:
            ws.send(json.dumps({**HEADER, "call_id": "through-the-crowd"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
            ws.send(json.dumps({"type": "stop"}))
            assert close_of(ws)[0] == 1000
        assert server.metric("emostream_unauthenticated_connections") <= 8
    finally:
        for sock in socks:
            sock.close()
    assert _rejected(server, "unauthenticated_evicted") >= before + 4


def test_a_large_message_before_start_is_refused(server: RunningServer) -> None:
    with open_ws(server, "/twilio", token=None) as ws:
        ws.send(json.dumps({"event": "connected", "padding": "x" * 20000}))
        code, _ = close_of(ws)
    assert code == 1009


def test_running_out_of_file_descriptors_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = len(os.listdir("/proc/self/fd"))
    limiter = LogLimiter(logging.getLogger("emostream.server"))
    with caplog.at_level(logging.INFO, logger="emostream"):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, hard))
            assert warn_if_out_of_files(limiter)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert not warn_if_out_of_files(limiter)
    assert any("file descriptors" in r.getMessage() and "LimitNOFILE" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- 2. bad input without a token


def _twilio_start(stream_sid: str, token: object, **start: Any) -> str:
    head, _, _ = stream_messages({"inbound": b""}, stream_sid=stream_sid)
    message = json.loads(head[1])
    message["start"]["customParameters"] = {"token": token}
    message["start"].update(start)
    return json.dumps(message)


@pytest.mark.parametrize(
    ("path", "messages", "code", "label"),
    [
        ("/twilio", ["[" * 10000], 1007, "malformed_json"),  # RecursionError in the parser (under 16 kB)
        ("/twilio", [_twilio_start("MZsurrogate", "\ud800")], 1008, "bad_token"),
        ("/ingest", ["[" * 100000], 1007, "malformed_json"),
        ("/ingest", [json.dumps({**HEADER, "roles": [[[["deep"]]]]})], 1007, "malformed_message"),
    ],
    ids=["twilio-deep-json", "twilio-surrogate-token", "ingest-deep-json", "ingest-nested-roles"],
)
def test_bad_input_closes_with_one_line_naming_the_peer(  # noqa: PLR0917 (parametrized)
    server: RunningServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    messages: list[str],
    code: int,
    label: str,
) -> None:
    before = _rejected(server, label)
    with caplog.at_level(logging.INFO, logger="emostream"):
        with open_ws(server, path, token=None if path == "/twilio" else TOKEN) as ws:
            peer = f"127.0.0.1:{ws.local_address[1]}"
            for text in messages:
                ws.send(text)
            got, reason = close_of(ws)
        assert wait_for(lambda: _rejected(server, label) == before + 1)
    lines = [r for r in _server_lines(caplog) if peer in r.getMessage()]
    assert got == code and reason
    assert len(lines) == 1 and lines[0].exc_info is None and "Traceback" not in lines[0].getMessage()


def test_an_infinite_media_timestamp_closes_1007(server: RunningServer) -> None:
    with open_ws(server, "/twilio", token=None) as ws:
        send_twilio(ws, {"inbound": mulaw_clip(ANGRY, 0.2)}, stream_sid="MZinfinity", stop=False)
        ws.send('{"event": "media", "media": {"track": "inbound", "timestamp": Infinity, "payload": "/w=="}}')
        code, reason = close_of(ws)
    assert code == 1007 and "timestamp" in reason


def test_a_second_start_closes_1007(server: RunningServer) -> None:
    with open_ws(server, "/twilio", token=None) as ws:
        send_twilio(ws, {"inbound": mulaw_clip(ANGRY, 0.2)}, stream_sid="MZtwice", stop=False)
        ws.send(_twilio_start("MZtwice2", TOKEN))
        code, reason = close_of(ws)
    assert code == 1007 and "second start" in reason


# ---------------------------------------------------------------- 3. logs limited by wall-clock time


def test_dropped_audio_warnings_are_limited_by_wall_clock_time(
    fast_plan: SessionPlan, caplog: pytest.LogCaptureFixture
) -> None:
    """1-byte media whose timestamps jump 10 s each: every message drops audio, a few lines are written."""
    with (
        caplog.at_level(logging.INFO, logger="emostream"),
        running_server(fast_plan, max_backlog_s=0.5, workers=1) as server,
        open_ws(server, "/twilio", token=None) as ws,
    ):
        send_twilio(ws, {"inbound": mulaw_clip(ANGRY, 0.1)}, stream_sid="MZflood", stop=False)
        for n in range(1, 2001):
            media = {"track": "inbound", "timestamp": n * 10000, "payload": "/w=="}
            ws.send(json.dumps({"event": "media", "media": media}))
        ws.send(json.dumps({"event": "stop"}))
        close_of(ws, 30)
        dropped = server.metric("emostream_dropped_audio_seconds_total")
    lines = [r for r in _server_lines(caplog) if "dropped so far" in r.getMessage()]
    assert dropped > 100  # the flood did drop audio
    assert 1 <= len(lines) <= 6


def test_refusals_are_limited_and_the_rest_counted(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    before = _rejected(server, "bad_token")
    with caplog.at_level(logging.INFO, logger="emostream"):
        for _ in range(40):
            status, _ = server.get("/api/calls", token="wrong-token-0123456789")
            assert status == 401
    lines = [r for r in _server_lines(caplog) if "missing or wrong token" in r.getMessage()]
    assert _rejected(server, "bad_token") == before + 40
    assert len(lines) <= 6


def test_log_limiter_reports_what_it_held_back() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("emostream.test.limiter")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    now = [0.0]
    limiter = LogLimiter(logger, interval_s=10.0, burst=2, clock=lambda: now[0])
    try:
        written = [limiter.limited("k", "line %d", i) for i in range(10)]
        now[0] = 11.0
        limiter.flush()
    finally:
        logger.removeHandler(handler)
    assert written == [True, True] + [False] * 8
    assert stream.getvalue().splitlines()[-1].startswith("8 more line(s) like this in the last 10 s")


# ---------------------------------------------------------------- 4. disk: bounded fields, summaries


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ({**HEADER, "roles": ["r" * 120000]}, "roles[0]"),
        ({**HEADER, "roles": ["customer\n2026-01-01 ERROR emostream.server: analysis worker 0 stopped"]}, "roles[0]"),
        ({**HEADER, "call_id": "c" * 129}, "call_id"),
    ],
    ids=["long-role", "role-with-newline", "long-call-id"],
)
def test_ingest_ids_and_roles_are_bounded(server: RunningServer, header: dict[str, Any], fragment: str) -> None:
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps(header))
        code, reason = close_of(ws)
    assert code == 1007 and fragment in reason and "\n" not in reason


@pytest.mark.parametrize("field", ["callSid", "accountSid", "streamSid"])
def test_twilio_sids_are_bounded(server: RunningServer, field: str) -> None:
    with open_ws(server, "/twilio") as ws:
        ws.send(_twilio_start("MZsid", TOKEN, **{field: "CA" + "0" * 200000}))
        code, reason = close_of(ws)
    assert code in (1007, 1009) and (code == 1009 or field in reason)


def _ingest_call(server: RunningServer, call_id: str, seconds: float) -> dict[str, Any]:
    with open_ws(server, "/ingest") as ws:
        ws.send(json.dumps({**HEADER, "call_id": call_id, "events": True}))
        assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
        ws.send(_silence(int(16000 * seconds)))
        ws.send(json.dumps({"type": "stop"}))
        records = read_records(ws, lambda r: r["type"] == "call_end")
    summary: dict[str, Any] = records[-1]["summary"]
    return summary


def test_a_reused_call_id_never_overwrites_a_summary(server: RunningServer) -> None:
    folder = Path(server.ctx.server.summary_dir or "")
    first = _ingest_call(server, "reused-id", 0.5)
    second = _ingest_call(server, "reused-id", 1.5)
    assert wait_for((folder / "reused-id-2.json").exists)
    assert json.loads((folder / "reused-id.json").read_text())["duration_s"] == first["duration_s"]
    assert json.loads((folder / "reused-id-2.json").read_text())["duration_s"] == second["duration_s"]


def test_a_failed_summary_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(summaries.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        summaries.write_summary(tmp_path, "full-disk", {"call": "full-disk"})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_summary_write_is_counted(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    before = server.metric("emostream_summary_write_failures_total")
    folder = Path(server.ctx.server.summary_dir or "")
    monkeypatch.setattr(summaries.os, "fsync", disk_full)
    with caplog.at_level(logging.INFO, logger="emostream"):
        _ingest_call(server, "no-space", 0.2)
        assert wait_for(lambda: server.metric("emostream_summary_write_failures_total") == before + 1)
    monkeypatch.undo()
    assert not list(folder.glob("*.tmp")) and not (folder / "no-space.json").exists()
    assert any("no-space" in r.getMessage() and "No space" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- 5. log injection


def test_log_lines_cannot_be_forged() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("emostream.server", logging.INFO, __file__, 1, "call %s", ("a\nERROR fake\r",), None)
    assert formatter.format(record) == "INFO call a\\x0aERROR fake\\x0d"


# ---------------------------------------------------------------- 6. tokens, origins, hosts, headers


def _ws_code(server: RunningServer, path: str, token: str | None, **kwargs: Any) -> tuple[int | None, str]:
    with open_ws(server, path, token=token, **kwargs) as ws:
        if path == "/ingest":
            with contextlib.suppress(ConnectionClosed):
                ws.send(json.dumps(HEADER))
                if json.loads(ws.recv(timeout=10)).get("type") == "accepted":
                    ws.send(json.dumps({"type": "stop"}))
        return close_of(ws, 5)


def test_scoped_tokens(server: RunningServer) -> None:
    # the read token reads, and cannot send audio
    assert server.get("/api/calls", token=READ_TOKEN)[0] == 200
    assert server.get("/metrics", token=READ_TOKEN)[0] == 200
    with open_ws(server, "/events", token=READ_TOKEN) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
    code, reason = _ws_code(server, "/ingest", READ_TOKEN)
    assert code == 1008 and "read token cannot use /ingest" in reason
    # an ingest token sends audio (its own records echoed), and cannot read other calls
    assert _ws_code(server, "/ingest", INGEST_TOKEN)[0] == 1000
    code, reason = _ws_code(server, "/events", INGEST_TOKEN)
    assert code == 1008 and "ingest:freeswitch" in reason
    assert server.get("/api/calls", token=INGEST_TOKEN)[0] == 403
    with open_ws(server, "/twilio", token=None) as ws:
        send_twilio(ws, {"inbound": mulaw_clip(ANGRY, 0.5)}, stream_sid="MZscoped", token=READ_TOKEN)
        assert close_of(ws)[0] == 1008
    status, body = server.get("/api/whoami", token=INGEST_TOKEN)
    assert status == 200 and json.loads(body) == {"name": "ingest:freeswitch", "scopes": ["ingest"]}


def test_the_ingest_token_is_named_in_the_summary(server: RunningServer) -> None:
    with open_ws(server, "/ingest", token=INGEST_TOKEN) as ws:
        ws.send(json.dumps({**HEADER, "call_id": "named", "events": True}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "stop"}))
        records = read_records(ws, lambda r: r["type"] == "call_end")
    assert records[-1]["summary"]["input"]["token"] == "ingest:freeswitch"


def test_the_token_as_a_websocket_subprotocol(server: RunningServer) -> None:
    offered = ["emostream", encode_subprotocol_token(READ_TOKEN)]
    with open_ws(server, "/events", token=None, subprotocols=offered) as ws:
        assert ws.subprotocol == "emostream"
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"


@pytest.mark.parametrize("origin", ["https://attacker.example", "null", "http://127.0.0.1:1"])
def test_websockets_from_another_origin_are_refused(server: RunningServer, origin: str) -> None:
    before = _rejected(server, "bad_origin")
    with pytest.raises(InvalidStatus) as refused:
        open_ws(server, "/events", origin=origin)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert _rejected(server, "bad_origin") == before + 1


@pytest.mark.parametrize("origin", [None, "own", "https://supervisor.example.com"])
def test_own_and_allowed_origins_are_taken(server: RunningServer, origin: str | None) -> None:
    given = f"http://127.0.0.1:{server.port}" if origin == "own" else origin
    with open_ws(server, "/events", origin=given) as ws:  # type: ignore[arg-type]
        assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"


def test_another_host_name_is_refused(server: RunningServer) -> None:
    """DNS rebinding: a page of attacker.example whose name now points at 127.0.0.1."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: attacker.example:{server.port}\r\n\r\n".encode())
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 421")
    assert server.get("/healthz", token=None)[0] == 200  # 127.0.0.1 itself


@pytest.mark.parametrize("path", ["/", "/try", "/static/common.js", "/healthz"])
def test_pages_send_security_headers(server: RunningServer, path: str) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
        headers = response.headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"


def test_healthz_tells_the_call_count_only_to_a_read_token(server: RunningServer) -> None:
    status, body = server.get("/healthz", token=None)
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert json.loads(server.get("/healthz", token=INGEST_TOKEN)[1]) == {"status": "ok"}
    assert json.loads(server.get("/healthz", token=READ_TOKEN)[1]) == {"status": "ok", "calls": 0}


def test_healthz_says_full_at_max_calls(fast_plan: SessionPlan) -> None:
    """A balancer takes a full replica out of rotation without a token (one bit, not the count)."""
    with running_server(fast_plan, max_calls=1) as server, open_ws(server, "/ingest") as ws:
        ws.send(json.dumps({**HEADER, "call_id": "fills-it"}))
        ws.recv(timeout=10)
        assert json.loads(server.get("/healthz", token=None)[1]) == {"status": "full"}
        ws.send(json.dumps({"type": "stop"}))
        close_of(ws)
        assert wait_for(lambda: json.loads(server.get("/healthz", token=None)[1]) == {"status": "ok"})


def test_a_generated_token_goes_to_a_private_file_not_to_stdout(tmp_path: Path, capsys: Any) -> None:
    token = write_token_file(Token("generated-token-0123456789", "generated"), tmp_path / "state" / "serve-token")
    assert token.file is not None
    path = Path(token.file)
    assert path.read_text().strip() == "generated-token-0123456789"
    assert path.stat().st_mode & 0o777 == 0o600
    from emostream.server.command import print_banner

    class Ctx:
        server = type("S", (), {"host": "127.0.0.1", "max_calls": 200})()
        plan = type("P", (), {"model_name": "fast"})()
        tokens = TokenSet(token)
        config = Config()
        takes_audio = True

    print_banner(Ctx(), 8765)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "generated-token-0123456789" not in out and str(path) in out


# ---------------------------------------------------------------- 7. alert delivery


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[int]]]:
    """A webhook on 127.0.0.1 that answers 500 to every POST (the statuses it sent are listed)."""
    sent: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            sent.append(500)
            self.send_response(500)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/alerts", sent
    finally:
        srv.shutdown()


def _alert_config(url: str, labels: list[str]) -> dict[str, Any]:
    return {
        "alerts": [{"name": "any_speech", "emotions": labels, "threshold": 0.5, "min_duration_s": 1.0}],
        "alerts_output": {"webhook": url, "retries": 0, "timeout_s": 2.0},
    }


def test_alert_delivery_outcomes_are_counted(
    fast_plan: SessionPlan, webhook: tuple[str, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    """A webhook answering 500: emostream_alert_deliveries_total{outcome="failed"} and a WARNING say so."""
    import dataclasses

    from emostream.audio.files import load_mono
    from emostream.config import config_from_dict
    from emostream.engine.plan import make_plan

    url, sent = webhook
    cfg = config_from_dict({"model": {"name": "fast"}, **_alert_config(url, list(fast_plan.labels))}, "alerts.toml")
    plan = dataclasses.replace(make_plan(cfg, fast_plan.model), config=cfg)
    data = encode_raw(load_mono(ANGRY, 16000), "s16le")
    with caplog.at_level(logging.INFO, logger="emostream"), running_server(plan) as server:
        with open_ws(server, "/ingest") as ws:
            ws.send(json.dumps({**HEADER, "call_id": "alerting", "events": True}))
            ws.recv(timeout=10)
            for i in range(0, len(data), 2560):
                ws.send(data[i : i + 2560])
            ws.send(json.dumps({"type": "stop"}))
            records = read_records(ws, lambda r: r["type"] == "call_end")
        fired = sum(1 for r in records if r["type"] == "alert" and r["state"] == "fired")
        failed = 'outcome="failed"'
        assert wait_for(lambda: server.metric("emostream_alert_deliveries_total", failed) == fired, 15)
        assert wait_for(lambda: any("alert delivery:" in r.getMessage() for r in caplog.records), 10)
        delivered = server.metric("emostream_alert_deliveries_total", 'outcome="delivered"')
    assert fired >= 1 and len(sent) == fired and delivered == 0
    warned = [r for r in caplog.records if "alert delivery:" in r.getMessage()]
    assert warned[0].levelno == logging.WARNING and "500" in warned[0].getMessage()


def test_a_webhook_that_trickles_its_answer_is_cut_at_the_deadline() -> None:
    """One byte every 0.5 s for 30 s: with timeout_s = 1 the attempt must end long before."""
    from emostream.alerts.delivery import post_json

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
                if stop.wait(0.5):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="timed out"):
            post_json(f"http://127.0.0.1:{listener.getsockname()[1]}/", b"{}", 1.0)
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 10  # the trickle alone would take 70 s


def test_alerts_pending_at_shutdown_are_logged(fast_plan: SessionPlan, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from emostream.alerts.rules import AlertEvent
    from emostream.config import apply_overrides
    from emostream.server.context import make_context

    listener = socket.create_server(("127.0.0.1", 0))  # accepts and never answers
    cfg = apply_overrides(
        fast_plan.config,
        {"alerts_output": {"webhook": f"http://127.0.0.1:{listener.getsockname()[1]}/", "timeout_s": 30.0}},
    )
    ctx = make_context(cfg, fast_plan, Token(TOKEN, "config"))
    assert ctx.delivery is not None
    event = AlertEvent("r", "fired", 0, "customer", 0.0, 1.0, ("angry",), 0.5, 0.9, 0.9, {"angry": 0.9})
    for _ in range(3):
        ctx.delivery.on_event(event)
    try:
        with caplog.at_level(logging.INFO, logger="emostream"):
            asyncio.run(ctx.drain())
    finally:
        listener.close()
    lines = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert lines and lines[0].startswith("shutdown: 3 alert(s) not delivered")


# ---------------------------------------------------------------- 8. smaller findings


def test_client_close_codes_do_not_become_metric_labels(server: RunningServer) -> None:
    for code in (4321, 4322, 4323):
        with open_ws(server, "/ingest") as ws:
            ws.send(json.dumps({**HEADER, "call_id": f"closes-{code}"}))
            ws.recv(timeout=10)
            ws.close(code=code)
    assert wait_for(lambda: server.metric("emostream_calls_ended_total", 'reason="disconnected"') >= 3)
    _, body = http_get(server.port, "/metrics")
    ended = [line for line in body.decode().splitlines() if line.startswith("emostream_calls_ended_total{")]
    assert not any("432" in line for line in ended)


# ---------------------------------------------------------------- issue 19 item 14: the snapshot's history


def test_the_snapshot_carries_each_calls_recent_timeline(server: RunningServer) -> None:
    """A supervisor page opened mid-call must draw the call's timeline so far, not an empty one."""
    audio = mulaw_clip(ANGRY, 4.0)
    with open_ws(server, "/twilio", token=None) as ws:
        send_twilio(ws, {"inbound": audio, "outbound": audio}, stream_sid="MZhistory", stop=False)
        assert wait_for(
            lambda: "MZhistory" in server.ctx.calls.calls and server.ctx.calls.calls["MZhistory"].hops >= 10
        )
        with open_ws(server, "/events?call=MZhistory") as events:
            snapshot = json.loads(events.recv(timeout=10))
        ws.send(json.dumps({"event": "stop"}))
        close_of(ws)
    (info,) = snapshot["calls"]
    history = info["history"]
    assert set(history) == {"0", "1"}
    times = [point[0] for point in history["0"]]
    assert len(times) >= 5 and times == sorted(times)
    assert all(len(point) == 4 and isinstance(point[2], bool) and isinstance(point[3], bool) for point in history["0"])
    assert info["last"]["0"]["t_end"] == times[-1]


def test_tokens_from_the_environment_and_config() -> None:
    from emostream.errors import ConfigError
    from emostream.server.auth import resolve_tokens
    from emostream.server.config import ServerConfig

    server = ServerConfig(read_token=READ_TOKEN, ingest_tokens={"twilio": INGEST_TOKEN})
    admin = Token(TOKEN, "config")
    tokens = resolve_tokens(server, admin, {"EMOSTREAM_INGEST_TOKEN": "from-env-ingest-0123456789"})
    assert tokens.names == ["admin", "read", "ingest:twilio", "ingest:env"]
    grant = tokens.grant("from-env-ingest-0123456789")
    assert grant is not None and grant.name == "ingest:env" and not grant.allows("read")
    env_read = resolve_tokens(server, admin, {"EMOSTREAM_READ_TOKEN": "from-env-read-0123456789"})
    assert env_read.grant("from-env-read-0123456789") is not None and env_read.grant(READ_TOKEN) is None
    with pytest.raises(ConfigError, match="same value"):
        resolve_tokens(server, admin, {"EMOSTREAM_READ_TOKEN": TOKEN})
    with pytest.raises(ConfigError, match="EMOSTREAM_INGEST_TOKEN has 5 characters"):
        resolve_tokens(server, admin, {"EMOSTREAM_INGEST_TOKEN": "short"})
    assert tokens.grant("\ud800") is None and tokens.grant("x" * 100000) is None
