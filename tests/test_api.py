"""The Python API: the issue's example runs, and it reads exactly what the command line reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip, run_cli

import emostream
from emostream.audio.files import load_mono
from emostream.errors import AudioInputError, ConfigError
from emostream.inference.model import EmotionModel


def _hop_records(events: list) -> list[dict]:
    return [
        {k: v for k, v in e.to_dict().items() if k not in ("latency_ms", "session_id", "time")}
        for e in events
        if e.to_dict()["type"] == "hop"
    ]


def _cli_hops(path: Path, model_arg: str) -> list[dict]:
    proc = run_cli("--file", str(path), "--fast", "--no-dashboard", "--jsonl", "-", "--model", model_arg)
    assert proc.returncode == 0, proc.stderr.decode()
    recs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    return [
        {k: v for k, v in r.items() if k not in ("latency_ms", "source", "session_id", "time")}
        for r in recs
        if r["type"] == "hop"
    ]


def test_the_issue_example_runs(tmp_path: Path, model_arg: str) -> None:
    x = load_mono(fixture_clip(1, 5), 8000)
    call = np.stack([x, 0.5 * x], axis=1)
    block = (call * 32767).astype(np.int16)
    model = emostream.load_model(model_arg)
    mon = emostream.Monitor(model, sample_rate_hz=8000, channels=2, roles=("customer", "agent"))
    events = list(mon.feed(block[:3000])) + list(mon.feed(block[3000:])) + mon.close()
    hops = [e.to_dict() for e in events]
    assert hops and {h["role"] for h in hops} == {"customer", "agent"}
    assert any(h["emotion"] for h in hops if h["role"] == "customer")
    assert all(h["scores"] is None for h in hops if h["role"] == "agent")  # the agent is not analysed
    summary = mon.summary()
    assert summary.hops == len(hops) and summary.duration_s == pytest.approx(len(x) / 8000)
    wav = tmp_path / "call.wav"
    sf.write(wav, call, 8000)
    result = emostream.analyze_file(wav, model)
    assert result.emotion in model.labels and result.scores is not None
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
def test_monitor_reads_what_the_cli_reads_in_any_block_size(tmp_path: Path, model_arg: str) -> None:
    x = load_mono(fixture_clip(2, 5), 44100)
    path = tmp_path / "clip44k.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    expected = _cli_hops(path, model_arg)
    assert expected
    rng = np.random.default_rng(0)
    for blocks in ("whole", "random"):
        mon = emostream.Monitor(model_arg, sample_rate_hz=44100)
        events = []
        if blocks == "whole":
            events += mon.feed(x)
        else:
            start = 0
            while start < x.size:
                n = int(rng.integers(1, 9000))
                events += mon.feed(x[start : start + n])
                start += n
        events += mon.close()
        got = _hop_records(events)
        assert [h["t_end"] for h in got] == [h["t_end"] for h in expected]
        assert [h["emotion"] for h in got] == [h["emotion"] for h in expected]
        for g, e in zip(got, expected, strict=True):
            if e["scores"] is not None:
                np.testing.assert_allclose(list(g["scores"].values()), list(e["scores"].values()), atol=2e-3)


def test_analyze_file_equals_the_analyze_command(model_arg: str) -> None:
    clip = fixture_clip(1, 7)
    proc = run_cli("analyze", "--jsonl", "--model", model_arg, str(clip))
    assert proc.returncode == 0, proc.stderr.decode()
    cli = json.loads(proc.stdout.decode())
    api = emostream.analyze_file(clip, model_arg).to_dict()
    assert api == cli


def test_int16_and_float_blocks_read_the_same(model: EmotionModel) -> None:
    x = load_mono(fixture_clip(1, 3), 16000)
    pcm = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    as_float = emostream.Monitor(model).feed(pcm.astype(np.float32) / 32768)
    as_int = emostream.Monitor(model).feed(pcm)
    assert _hop_records(as_float) == _hop_records(as_int)


def test_bad_blocks_and_settings_are_refused_clearly(model: EmotionModel) -> None:
    mon = emostream.Monitor(model, channels=2)
    with pytest.raises(AudioInputError, match=r"dtype int32 .* expected int16 PCM or float32"):
        mon.feed(np.zeros((100, 2), np.int32))
    with pytest.raises(AudioInputError, match=r"shape \(100, 3\) .* \(frames, 2\)"):
        mon.feed(np.zeros((100, 3), np.float32))
    with pytest.raises(ConfigError, match="one role per channel"):
        emostream.Monitor(model, channels=2, roles=("customer",))
    mon.close()
    with pytest.raises(AudioInputError, match="closed"):
        mon.feed(np.zeros((100, 2), np.float32))
    mon.reset()
    assert mon.feed(np.zeros((100, 2), np.float32)) == []
