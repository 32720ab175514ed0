"""``emostream serve`` end to end on 127.0.0.1: a scripted Twilio call, /events, /metrics, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_server_support import (
    ANGRY,
    CALM,
    close_of,
    fast_plan,
    mulaw_clip,
    open_ws,
    read_records,
    running_server,
    send_twilio,
    wait_for,
)

from emostream.engine.plan import SessionPlan

__all__ = ["fast_plan"]


def test_twilio_call_gives_hops_with_emotions_agent_not_analysed_metrics_and_summary(
    fast_plan: SessionPlan, tmp_path: Path
) -> None:
    with running_server(fast_plan, summary_dir=str(tmp_path)) as server:
        with open_ws(server, "/events") as events, open_ws(server, "/twilio", token=None) as ws:
            snapshot = json.loads(events.recv(timeout=10))
            assert snapshot["type"] == "snapshot" and snapshot["calls"] == [] and snapshot["model"] == "fast"
            customer = mulaw_clip(ANGRY)
            agent = mulaw_clip(CALM, seconds=len(customer) / 8000)
            send_twilio(ws, {"inbound": customer, "outbound": agent}, stream_sid="MZtest0001")
            records = read_records(events, lambda r: r["type"] == "call_end")
            code, _ = close_of(ws)
        assert code == 1000
        kinds = [r["type"] for r in records]
        assert kinds[0] == "call_start" and kinds[-1] == "call_end"
        start = records[0]
        assert start["call_id"] == "MZtest0001"
        assert [(c["role"], c["analysed"]) for c in start["channels"]] == [("customer", True), ("agent", False)]
        hops = [r for r in records if r["type"] == "hop"]
        assert all(h["call_id"] == "MZtest0001" for h in hops)
        customer_hops = [h for h in hops if h["channel"] == 0]
        agent_hops = [h for h in hops if h["channel"] == 1]
        assert any(h["emotion"] is not None for h in customer_hops)
        assert agent_hops and all(h["emotion"] is None and h["scores"] is None for h in agent_hops)
        assert any(h["speech_ratio"] > 0 for h in agent_hops)  # metered: speech and level only
        summary = records[-1]["summary"]
        assert summary["call"] == "MZtest0001" and summary["input"]["stream_sid"] == "MZtest0001"
        assert [c["analysed"] for c in summary["channels"]] == [True, False]
        assert summary["channels"][0]["dominant"] is not None
        written = json.loads((tmp_path / "MZtest0001.json").read_text())
        assert written == summary
        assert server.metric("emostream_calls_total", 'source="twilio"') == 1
        assert server.metric("emostream_hops_total", 'analysed="true"') == len(customer_hops)
        assert server.metric("emostream_active_calls") == 0
        assert 0 < server.metric("emostream_hop_latency_seconds_count") <= len(hops)


def test_only_the_inbound_track(fast_plan: SessionPlan) -> None:
    with running_server(fast_plan) as server:
        with open_ws(server, "/events?call=MZinbound") as events, open_ws(server, "/twilio", token=None) as ws:
            events.recv(timeout=10)
            send_twilio(ws, {"inbound": mulaw_clip(ANGRY)}, stream_sid="MZinbound")
            records = read_records(events, lambda r: r["type"] == "call_end")
        assert records[0]["type"] == "call_start" and len(records[0]["channels"]) == 1
        assert {r["channel"] for r in records if r["type"] == "hop"} == {0}
        assert wait_for(lambda: server.metric("emostream_active_calls") == 0)


@pytest.mark.slow
def test_a_call_analysed_in_a_worker_process(fast_plan: SessionPlan, tmp_path: Path) -> None:
    with running_server(fast_plan, workers=1, summary_dir=str(tmp_path)) as server:
        with open_ws(server, "/events") as events, open_ws(server, "/twilio", token=None) as ws:
            events.recv(timeout=10)
            send_twilio(ws, {"inbound": mulaw_clip(ANGRY), "outbound": mulaw_clip(CALM)}, stream_sid="MZproc")
            records = read_records(events, lambda r: r["type"] == "call_end")
        hops = [r for r in records if r["type"] == "hop"]
        assert any(h["emotion"] is not None for h in hops if h["channel"] == 0)
        assert all(h["emotion"] is None for h in hops if h["channel"] == 1)
        assert (tmp_path / "MZproc.json").is_file()
