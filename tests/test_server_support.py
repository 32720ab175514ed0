"""Helpers of the server tests: a real ``emostream serve`` on 127.0.0.1 in a thread, Twilio and ingest clients.

No tests here; the ``test_server_*`` modules import from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")
pytest.importorskip("prometheus_client")

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from emostream.audio.codecs import mulaw_encode
from emostream.audio.files import load_mono
from emostream.config import Config, apply_overrides
from emostream.engine.plan import SessionPlan, make_plan
from emostream.server.auth import Token
from emostream.server.command import EmoServer, bind_socket, uvicorn_config
from emostream.server.context import ServerContext, make_context
from emostream.server.supervisor import make_supervisor_context
from emostream.server.twilio import stream_messages

TOKEN = "test-token-0123456789abcdef"
FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"
ANGRY = FIXTURES / "Actor_01" / "03-01-05-02-01-01-01.flac"
CALM = FIXTURES / "Actor_02" / "03-01-02-02-01-01-02.flac"


def http_get(port: int, path: str, *, token: str | None = TOKEN) -> tuple[int, bytes]:
    """GET ``http://127.0.0.1:PORT/path`` with the bearer token: status and body."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric_value(port: int, name: str, labels: str = "") -> float:
    """The value of one sample of the server's /metrics on ``port`` (0 when absent)."""
    _, body = http_get(port, "/metrics")
    key = f"{name}{{{labels}}}" if labels else name
    for line in body.decode().splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


class RunningServer:
    """``emostream serve`` on 127.0.0.1 (a free port) in a thread of this process."""

    def __init__(self, ctx: ServerContext, server: EmoServer, port: int, thread: threading.Thread) -> None:
        self.ctx = ctx
        self.server = server
        self.port = port
        self.thread = thread

    def url(self, path: str, *, scheme: str = "ws", token: str | None = TOKEN) -> str:
        """``scheme://127.0.0.1:PORT/path`` with ``token=`` added to the query when given."""
        query = "" if token is None else ("&" if "?" in path else "?") + f"token={token}"
        return f"{scheme}://127.0.0.1:{self.port}{path}{query}"

    def get(self, path: str, *, token: str | None = TOKEN) -> tuple[int, bytes]:
        return http_get(self.port, path, token=token)

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample of /metrics (0 when absent)."""
        return metric_value(self.port, name, labels)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture(scope="session")
def fast_plan() -> SessionPlan:
    """The fast model's plan (every server test uses it: quick to load and to run)."""
    try:
        return make_plan(apply_overrides(Config(), {"model": {"name": "fast"}}))
    except Exception as exc:
        pytest.skip(f"no fast model ({exc})")


@contextlib.contextmanager
def running_server(
    plan: SessionPlan, *, bus: dict[str, Any] | None = None, supervisor: bool = False, **server: Any
) -> Iterator[RunningServer]:
    """A server with the given ``[server]`` settings (tests: large backlog, audio may come faster than real time).

    ``bus``: ``[bus]`` settings (a replica of a fleet); ``supervisor``: the fleet's supervisor instead.
    """
    settings = {"max_backlog_s": 120.0, "workers": 0, **server}
    overrides = {"server": settings, "model": {"name": plan.config.model.name}, "bus": bus or {}}
    cfg = apply_overrides(plan.config, overrides)
    plan = dataclasses.replace(plan, config=cfg)
    make = make_supervisor_context if supervisor else make_context
    ctx = make(cfg, plan, Token(TOKEN, "config"))
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    emo = EmoServer(ctx, uvicorn_config(ctx))
    thread = threading.Thread(target=emo.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not emo.started and time.monotonic() < deadline:
        time.sleep(0.01)
    running = RunningServer(ctx, emo, port, thread)
    try:
        yield running
    finally:
        running.stop()
        sock.close()


def mulaw_clip(path: Path, seconds: float | None = None) -> bytes:
    """A fixture clip as 8 kHz μ-law bytes (optionally cut or padded with silence to ``seconds``)."""
    x = load_mono(path, 8000)
    if seconds is not None:
        n = int(seconds * 8000)
        x = np.pad(x, (0, max(0, n - len(x))))[:n]
    return mulaw_encode(x).tobytes()


def send_twilio(
    ws: ClientConnection,
    tracks: dict[str, bytes],
    *,
    stream_sid: str,
    token: str | None = TOKEN,
    pace_s: float = 0.0,
    stop: bool = True,
) -> None:
    """Send a whole Twilio stream on ``ws`` (the token as the TwiML custom parameter).

    Stops sending, quietly, when the server has closed the connection (a refused ``start``
    closes it while the media is still being sent): the caller then reads the close code.
    """
    custom = {"token": token} if token is not None else {}
    head, frames, tail = stream_messages(tracks, stream_sid=stream_sid, custom_parameters=custom)
    messages = [*head, *(text for group in frames for text in [*group, None]), *(tail if stop else [])]
    with contextlib.suppress(ConnectionClosed):
        for text in messages:
            if text is not None:
                ws.send(text)
            elif pace_s:  # after each group of frames
                time.sleep(pace_s)


def open_ws(server: RunningServer, path: str, *, token: str | None = TOKEN, **kwargs: Any) -> ClientConnection:
    """A client connection with ``token`` in the Authorization header (use it in a ``with`` block)."""
    headers = dict(kwargs.pop("additional_headers", None) or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return connect(
        server.url(path, token=None), open_timeout=10, max_size=None, additional_headers=headers or None, **kwargs
    )


def read_records(ws: ClientConnection, until: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """JSON records from ``ws`` until ``until(record)`` is true (included) or the time is up."""
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except (TimeoutError, ConnectionClosed):
            break
        record = json.loads(text)
        records.append(record)
        if until(record):
            break
    return records


def close_of(ws: ClientConnection, timeout_s: float = 10.0) -> tuple[int | None, str]:
    """Wait until the server closes ``ws``; its close code and reason."""
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(Exception):
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")


def wait_for(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


__all__ = [
    "ANGRY",
    "CALM",
    "TOKEN",
    "RunningServer",
    "close_of",
    "fast_plan",
    "mulaw_clip",
    "open_ws",
    "read_records",
    "running_server",
    "send_twilio",
    "wait_for",
]
