"""``/ingest`` on a real server: s16le and f32le, the call's records echoed, roles, the summary file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_server_support import ANGRY, CALM, fast_plan, open_ws, read_records, running_server

from emostream.audio.codecs import encode_raw
from emostream.audio.files import load_mono
from emostream.engine.plan import SessionPlan

__all__ = ["fast_plan"]


def _stream(ws: object, samples: np.ndarray, encoding: str, frame: int) -> None:
    data = encode_raw(samples, encoding)
    step = frame * (samples.shape[1] if samples.ndim == 2 else 1) * len(encode_raw(np.zeros(1), encoding))
    for i in range(0, len(data), step):
        ws.send(data[i : i + step])  # type: ignore[attr-defined]


def test_ingest_s16le_mono_echoes_the_calls_records(fast_plan: SessionPlan, tmp_path: Path) -> None:
    x = load_mono(ANGRY, 16000)
    with running_server(fast_plan, summary_dir=str(tmp_path)) as server, open_ws(server, "/ingest") as ws:
        header = {"call_id": "ingest-s16", "sample_rate_hz": 16000, "encoding": "s16le", "channels": 1, "events": True}
        ws.send(json.dumps(header))
        accepted = json.loads(ws.recv(timeout=10))
        assert accepted["type"] == "accepted" and accepted["call_id"] == "ingest-s16" and accepted["model"] == "fast"
        assert accepted["labels"] == list(fast_plan.labels)
        _stream(ws, x, "s16le", 320)
        ws.send(json.dumps({"type": "stop"}))
        records = read_records(ws, lambda r: r["type"] == "call_end")
    hops = [r for r in records if r["type"] == "hop"]
    assert hops and all(h["call_id"] == "ingest-s16" for h in hops)
    assert any(h["emotion"] is not None for h in hops)
    assert records[-1]["type"] == "call_end"
    summary = records[-1]["summary"]
    assert summary["input"]["encoding"] == "s16le" and summary["channels"][0]["role"] == "speaker"
    assert abs(summary["duration_s"] - len(x) / 16000) < 0.01
    assert json.loads((tmp_path / "ingest-s16.json").read_text()) == summary


def test_ingest_f32le_stereo_customer_and_agent(fast_plan: SessionPlan) -> None:
    a, b = load_mono(ANGRY, 48000), load_mono(CALM, 48000)
    n = min(len(a), len(b))
    stereo = np.stack([a[:n], b[:n]], axis=1)
    with running_server(fast_plan) as server, open_ws(server, "/ingest") as ws:
        ws.send(json.dumps({"sample_rate_hz": 48000, "encoding": "f32le", "channels": 2, "events": True}))
        accepted = json.loads(ws.recv(timeout=10))
        assert len(accepted["call_id"]) == 32  # made by the server
        assert [(c["role"], c["analysed"]) for c in accepted["channels"]] == [("customer", True), ("agent", False)]
        _stream(ws, stereo, "f32le", 960)
        ws.send(json.dumps({"type": "stop"}))
        records = read_records(ws, lambda r: r["type"] == "call_end")
    hops = [r for r in records if r["type"] == "hop"]
    assert any(h["emotion"] is not None for h in hops if h["channel"] == 0)
    assert all(h["emotion"] is None for h in hops if h["channel"] == 1)
    assert records[-1]["summary"]["rate_hz"] == 48000


def test_ingest_roles_from_the_header(fast_plan: SessionPlan) -> None:
    with running_server(fast_plan) as server, open_ws(server, "/ingest") as ws:
        header = {"sample_rate_hz": 8000, "encoding": "mulaw", "channels": 2, "roles": ["agent", "customer"]}
        ws.send(json.dumps(header))
        accepted = json.loads(ws.recv(timeout=10))
        assert [(c["role"], c["analysed"]) for c in accepted["channels"]] == [("agent", False), ("customer", True)]


def test_ingest_as_freeswitch_mod_audio_fork_connects(fast_plan: SessionPlan) -> None:
    """mod_audio_fork asks for its subprotocol, sends its metadata as the first text frame, then L16 frames."""
    with (
        running_server(fast_plan) as server,
        open_ws(server, "/ingest", subprotocols=["audio.drachtio.org"]) as ws,
    ):
        assert ws.subprotocol == "audio.drachtio.org"
        header = {"call_id": "fs-uuid-1", "sample_rate_hz": 8000, "encoding": "s16le", "channels": 2, "events": True}
        ws.send(json.dumps(header))
        accepted = json.loads(ws.recv(timeout=10))
        assert [c["role"] for c in accepted["channels"]] == ["customer", "agent"]
