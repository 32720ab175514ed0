"""The config's alert rules and deliveries, [[channels]] and [privacy] apply to live calls of ``emostream serve``."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_server_support import ANGRY, CALM, fast_plan, open_ws, read_records, running_server, wait_for

from emostream.audio.codecs import encode_raw
from emostream.audio.files import load_mono
from emostream.config import config_from_dict
from emostream.engine.plan import SessionPlan, make_plan

__all__ = ["fast_plan"]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server on 127.0.0.1 collecting the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()


def test_alerts_fire_are_published_counted_and_delivered_and_privacy_applies(
    fast_plan: SessionPlan, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    labels = list(fast_plan.labels)
    cfg = config_from_dict(
        {
            "model": {"name": "fast"},
            "channels": [{"index": 0, "role": "customer", "name": "caller"}, {"index": 1, "role": "agent"}],
            "privacy": {"allow_agent_analysis": True},
            # every emotion summed: the smoothed scores of any speech reach it, so the rule must fire
            "alerts": [{"name": "any_speech", "emotions": labels, "threshold": 0.5, "min_duration_s": 1.0}],
            "alerts_output": {"webhook": url, "retries": 0},
        },
        "alerts.toml",
    )
    plan = dataclasses.replace(make_plan(cfg, fast_plan.model), config=cfg)
    with running_server(plan) as server:
        with open_ws(server, "/ingest") as ws:
            # 16 kHz PCM (no phone line: the readings are certain enough for a rule to fire)
            a, b = load_mono(ANGRY, 16000), load_mono(CALM, 16000)
            n = min(len(a), len(b))
            header = {"call_id": "alert-call", "sample_rate_hz": 16000, "encoding": "s16le", "channels": 2}
            ws.send(json.dumps({**header, "events": True}))
            ws.recv(timeout=10)
            data = encode_raw(np.stack([a[:n], b[:n]], axis=1), "s16le")
            for i in range(0, len(data), 2560):
                ws.send(data[i : i + 2560])
            ws.send(json.dumps({"type": "stop"}))
            records = read_records(ws, lambda r: r["type"] == "call_end")
        start = records[0]
        assert [(c["name"], c["role"], c["analysed"]) for c in start["channels"]] == [
            ("caller", "customer", True),
            ("agent (ch 1)", "agent", True),  # [privacy] allow_agent_analysis
        ]
        assert any(r["type"] == "hop" and r["channel"] == 1 and r["emotion"] is not None for r in records)
        alerts = [r for r in records if r["type"] == "alert"]
        assert alerts and alerts[0]["rule"] == "any_speech" and alerts[0]["state"] == "fired"
        assert all(a["call_id"] == "alert-call" for a in alerts)
        fired = sum(1 for a in alerts if a["state"] == "fired")
        assert server.metric("emostream_alerts_total", 'state="fired"') == fired
        assert wait_for(lambda: len(received) == fired)
        assert received[0]["rule"] == "any_speech" and received[0]["session_id"] == "alert-call"
        summary = records[-1]["summary"]
        assert [len(c["alerts"]) for c in summary["channels"]] == [
            sum(1 for a in alerts if a["channel"] == ch) for ch in (0, 1)
        ]
