"""``emostream serve`` as a process: start-up lines, SIGTERM drains open calls and exits 0, exit 2 for bad settings."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_server_support import TOKEN, close_of, metric_value, read_records
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from emostream.audio.codecs import encode_raw

ENV = {**os.environ, "EMOSTREAM_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "emostream", "serve", "--port", "0", "--model", "fast", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or ENV,
    )


def _port(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    assert found, f"unexpected start-up line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    return int(found.group(1))


@pytest.mark.slow
def test_sigterm_ends_open_calls_with_their_summaries_and_exits_0(tmp_path: Path) -> None:
    proc = _serve("--summary-dir", str(tmp_path))
    try:
        port = _port(proc)
        base = f"ws://127.0.0.1:{port}"
        with (
            connect(f"{base}/events", additional_headers=AUTH, open_timeout=20) as events,
            connect(f"{base}/ingest?token={TOKEN}", open_timeout=20) as ws,
        ):
            events.recv(timeout=10)
            ws.send(json.dumps({"call_id": "open-call", "sample_rate_hz": 16000, "encoding": "s16le", "channels": 1}))
            assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
            tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(48000) / 16000).astype(np.float32)
            ws.send(encode_raw(tone, "s16le"))
            time.sleep(0.5)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, reason = close_of(ws)
            records = read_records(events, lambda r: r["type"] == "call_end", timeout_s=10)
            events_close = close_of(events)
        assert proc.wait(timeout=10) == 0
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (code, reason) == (1001, "server shutting down")
    assert records[-1]["type"] == "call_end" and records[-1]["call_id"] == "open-call"
    assert events_close[0] == 1001
    summary = json.loads((tmp_path / "open-call.json").read_text())
    assert summary["end_reason"] == "server shutting down" and abs(summary["duration_s"] - 3.0) < 0.01
    assert elapsed < 5.0
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "call open-call started" in log and "call open-call ended (server shutting down)" in log


@pytest.mark.slow
def test_port_in_use_exits_2_with_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "emostream", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr and "--port" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--max-calls", "0"], {}, "[server] max_calls is 0"),
        (["--port", "70000"], {}, "[server] port is 70000"),
        ([], {"EMOSTREAM_TOKEN": "short"}, "EMOSTREAM_TOKEN has 5 characters"),
        (["--summary-dir", "/proc/emostream-no"], {}, "summary folder /proc/emostream-no"),
    ],
)
def test_bad_settings_exit_2(args: list[str], env: dict[str, str], fragment: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "emostream", "serve", *args],
        capture_output=True,
        text=True,
        env={**ENV, **env},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_missing_server_extras_exit_2_with_the_install_hint() -> None:
    code = "import sys; sys.modules['starlette'] = None; from emostream.apps.cli import main; sys.exit(main(['serve']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "`emostream serve` needs the server extras; install them with `pip install 'emostream[server]'`" in (
        proc.stderr
    )


@pytest.mark.slow
def test_a_generated_token_is_written_to_a_private_file_not_printed(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k not in ("EMOSTREAM_TOKEN", "EMOSTREAM_CONFIG")}
    proc = _serve(env={**env, "XDG_RUNTIME_DIR": str(tmp_path)})
    try:
        port = _port(proc)
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        token_file = tmp_path / "emostream" / "serve-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert not any(token in line for line in lines)
        assert f"/#token=<the token in {token_file}>" in lines[1], lines
        with connect(
            f"ws://127.0.0.1:{port}/events", additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=20
        ) as events:
            assert json.loads(events.recv(timeout=10))["type"] == "snapshot"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _worker_pids(server_pid: int) -> list[int]:
    """The server's analysis worker processes (multiprocessing spawn children, not its resource tracker)."""
    pids = []
    for child in Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline:
            pids.append(int(child))
    return pids


def _send_then_stop(ws: Any, audio: bytes) -> tuple[int | None, str]:
    """Send ``audio`` three times, then stop (unless the server has closed the call); how it closed."""
    try:
        for _ in range(3):
            ws.send(audio)
            time.sleep(0.3)
        ws.send(json.dumps({"type": "stop"}))
    except ConnectionClosed:
        pass
    return close_of(ws, timeout_s=15)


@pytest.mark.slow
def test_a_killed_worker_is_started_again_and_counted(tmp_path: Path) -> None:
    """SIGKILL one of the two workers: its call closes 1011, the other call carries on, a new worker
    takes the dead one's place (counted in /metrics) and new calls are analysed."""
    proc = _serve("--summary-dir", str(tmp_path))
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000).astype(np.float32)
    second = encode_raw(tone, "s16le")
    base = ""
    sockets = contextlib.ExitStack()

    def start(call: str) -> Any:
        ws = sockets.enter_context(connect(base, open_timeout=20))
        ws.send(json.dumps({"call_id": call, "sample_rate_hz": 16000, "encoding": "s16le", "channels": 1}))
        assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
        ws.send(second)
        return ws

    try:
        port = _port(proc)
        base = f"ws://127.0.0.1:{port}/ingest?token={TOKEN}"
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2, workers
        calls = [start("before-a"), start("before-b")]  # one on each worker
        time.sleep(1.0)
        os.kill(workers[0], signal.SIGKILL)
        ends = [_send_then_stop(ws, second) for ws in calls]
        deadline = time.monotonic() + 60
        while metric_value(port, "emostream_worker_restarts_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric_value(port, "emostream_worker_restarts_total") == 1
        now = _worker_pids(proc.pid)
        assert len(now) == 2 and workers[0] not in now and workers[1] in now
        after = [start("after-a"), start("after-b")]  # spread over both workers, the new one included
        for ws in after:
            ws.send(json.dumps({"type": "stop"}))
        after_ends = [close_of(ws)[0] for ws in after]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        sockets.close()
        if proc.poll() is None:
            proc.kill()
    assert sorted(code for code, _ in ends) == [1000, 1011]
    assert any(code == 1011 and re.fullmatch(r"analysis worker \d stopped", reason) for code, reason in ends)
    assert after_ends == [1000, 1000]
    assert proc.stderr is not None
    log = proc.stderr.read()
    stopped = re.search(r"analysis worker (\d) stopped \(exit code -9\)", log)
    assert stopped and f"analysis worker {stopped.group(1)} started again" in log
    assert "Traceback" not in log
    # the lost call's summary claims the audio analysed before the loss (its hops were published), not 0 s
    lost = [json.loads(p.read_text()) for p in tmp_path.glob("before-*.json")]
    (summary,) = [s for s in lost if s["end_reason"].startswith("error")]
    assert summary["duration_s"] >= 1.0


@pytest.mark.slow
def test_idle_sockets_cannot_take_the_last_file_descriptors() -> None:
    """With 256 file descriptors (soft = hard), 231 idle sockets once made a real call fail and /healthz go silent."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream", "serve", "--port", "0", "--model", "fast"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=low_limit,  # noqa: PLW1509 (no threads in this test process before it)
    )
    idle: list[socket.socket] = []
    try:
        port = _port(proc)
        for _ in range(231):
            with contextlib.suppress(OSError):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        with connect(f"ws://127.0.0.1:{port}/ingest", additional_headers=AUTH, open_timeout=20) as ws:
            ws.send(json.dumps({"call_id": "crowded", "sample_rate_hz": 16000, "encoding": "s16le", "channels": 1}))
            assert json.loads(ws.recv(timeout=10))["type"] == "accepted"
            ws.send(json.dumps({"type": "stop"}))
            assert close_of(ws)[0] == 1000
        assert metric_value(port, "emostream_unauthenticated_connections") <= 48
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        for sock in idle:
            sock.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    log = proc.stderr.read()
    assert "file descriptor limit 256 is low: at most 48 unauthenticated connections" in log
    assert "Traceback" not in log
