"""Multi-channel live monitoring: roles, agent privacy, alerts in JSONL and webhook, G.711 stdin/WAV."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import soundfile as sf
from conftest import run_cli
from test_calls import stereo_call

from emostream.audio.codecs import alaw_encode, mulaw_encode
from emostream.audio.files import resample
from emostream.engine.labels import FOUR
from emostream.inference.model import EmotionModel

RUN = ("--jsonl", "-", "--no-dashboard")

CHANNELS = """
[[channels]]
index = 0
role = "customer"
name = "Caller"
[[channels]]
index = 1
role = "agent"
"""


def any_emotion_rule(labels: tuple[str, ...]) -> str:
    # All labels sum to 1 on every speech hop: fires after 1 s of customer speech, for sure.
    return f"""
[[alerts]]
name = "any_emotion"
emotions = {json.dumps(list(labels))}
threshold = 0.5
min_duration_s = 1.0
roles = ["customer"]
"""


def records(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def hops_without_latency(recs: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("latency_ms", "source", "session_id", "time")}
        for r in recs
        if r["type"] == "hop"
    ]


def test_stereo_roles_agent_privacy_and_alert_events(tmp_path: Path, model: EmotionModel, model_arg: str):
    wav = tmp_path / "call.wav"
    sf.write(wav, stereo_call(), 16000)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CHANNELS + any_emotion_rule(FOUR))
    proc = run_cli("--file", str(wav), "--fast", *RUN, "--model", model_arg, "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr.decode()
    recs = records(proc.stdout)
    hops = [r for r in recs if r["type"] == "hop"]
    customer = [h for h in hops if h["channel"] == 0]
    agent = [h for h in hops if h["channel"] == 1]
    assert len(customer) == len(agent) > 0
    assert {h["role"] for h in customer} == {"customer"} and {h["role"] for h in agent} == {"agent"}
    assert any(h["scores"] for h in customer)
    # The agent speaks (the VAD hears it) but is never classified.
    assert any(h["speech_ratio"] > 0.5 for h in agent)
    assert all(h["scores"] is None and h["smoothed"] is None and h["emotion"] is None for h in agent)
    alerts = [r for r in recs if r["type"] == "alert"]
    assert [(a["rule"], a["state"], a["channel"], a["role"]) for a in alerts][:1] == [
        ("any_emotion", "fired", 0, "customer")
    ]
    assert recs.index(alerts[0]) < len(recs) - 1 and recs[-1]["type"] == "end"
    end_channels = {c["channel"]: c for c in recs[-1]["channels"]}
    assert end_channels[0]["alerts"] == sum(a["state"] == "fired" for a in alerts) >= 1
    assert end_channels[1]["analysed"] is False and end_channels[1]["emotion_seconds"] == {}


@pytest.mark.slow
def test_g711_stdin_matches_the_g711_wav(tmp_path: Path, model: EmotionModel, model_arg: str):
    narrow = resample(stereo_call(), 16000, 8000)
    for law, subtype, encode in (("mulaw", "ULAW", mulaw_encode), ("alaw", "ALAW", alaw_encode)):
        wav = tmp_path / f"call_{law}.wav"
        sf.write(wav, narrow, 8000, subtype=subtype)
        raw = encode(sf.read(wav, dtype="float32")[0]).tobytes()  # interleaved bytes, as a phone system sends
        piped = run_cli(
            "--stdin",
            "--rate",
            "8000",
            "--channels",
            "2",
            "--format",
            law,
            *RUN,
            "--model",
            model_arg,
            input_bytes=raw,
        )
        filed = run_cli("--file", str(wav), "--fast", *RUN, "--model", model_arg)
        assert piped.returncode == 0, piped.stderr.decode()
        assert filed.returncode == 0, filed.stderr.decode()
        piped_hops = hops_without_latency(records(piped.stdout))
        assert piped_hops == hops_without_latency(records(filed.stdout))
        assert records(piped.stdout)[0]["rate_hz"] == 8000
        assert any(h["scores"] for h in piped_hops if h["channel"] == 0)


class _SlowHook(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self):
        type(self).hits += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        threading.Event().wait(2.0)  # longer than the client's timeout
        try:
            self.send_response(200)
            self.end_headers()
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_slow_webhook_does_not_hold_up_the_stream(tmp_path: Path, model: EmotionModel, model_arg: str):
    wav = tmp_path / "call.wav"
    sf.write(wav, stereo_call(), 16000)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHook)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = tmp_path / "cfg.toml"
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        cfg.write_text(
            CHANNELS
            + any_emotion_rule(FOUR)
            + f'\n[alerts_output]\nwebhook = "{url}"\ntimeout_s = 0.2\nretries = 1\nbackoff_s = 0.05\n'
        )
        proc = run_cli("--file", str(wav), "--fast", *RUN, "--model", model_arg, "--config", str(cfg))
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr.decode()
    recs = records(proc.stdout)
    assert recs[-1]["type"] == "end" and recs[-1]["exit_reason"] == "end of input"
    fired = [r for r in recs if r["type"] == "alert" and r["state"] == "fired"]
    assert fired
    assert _SlowHook.hits == 2 * len(fired)  # one attempt + one retry per alert, each timed out
    assert b"alert delivery" in proc.stderr and b"failed" in proc.stderr


def test_channel_names_and_roles_reach_the_dashboard_views(tmp_path: Path, model: EmotionModel):
    from emostream.audio.sources import FileSource
    from emostream.config import load_config
    from emostream.engine.plan import make_plan
    from emostream.engine.session import Session

    wav = tmp_path / "call.wav"
    sf.write(wav, stereo_call(), 16000)
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(CHANNELS)
    source = FileSource(wav, fast=True)
    session = Session(make_plan(load_config(cfg_path), model), input_rate_hz=source.rate_hz, channels=source.channels)
    views = session.views()
    assert [(v.channel, v.role, v.name, v.analysed) for v in views] == [
        (0, "customer", "Caller", True),
        (1, "agent", None, False),
    ]
