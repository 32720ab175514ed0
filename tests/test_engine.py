"""Engine: file/stdin sources through resampling and pipelines; errors, warnings, duration."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip

from emostream.audio.codecs import float_to_pcm16_bytes as to_pcm16
from emostream.audio.files import load_mono
from emostream.audio.sources import FileSource, Source, StdinSource
from emostream.config import Config
from emostream.engine.plan import make_plan
from emostream.engine.runner import Engine, _percentile
from emostream.engine.session import Session
from emostream.errors import AudioInputError
from emostream.inference.model import EmotionModel
from emostream.outputs.jsonl import JsonlSink


def session(model: EmotionModel, source: Source) -> Session:
    return Session(make_plan(Config(), model), input_rate_hz=source.rate_hz, channels=source.channels)


def test_stereo_44k_file_is_resampled_and_split_into_channels(model: EmotionModel, tmp_path: Path) -> None:
    speech = load_mono(fixture_clip(2, 3), 44100)
    stereo = np.stack([speech, np.zeros_like(speech)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    events = tmp_path / "events.jsonl"
    source = FileSource(path, fast=True)
    engine = Engine(source, session(model, source), [JsonlSink(events)])
    summary = engine.run()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    hops = [r for r in records if r["type"] == "hop"]
    assert records[-1]["type"] == "end" and records[-1]["hops"] == len(hops) == summary.hops
    by_channel = {c: [h for h in hops if h["channel"] == c] for c in (0, 1)}
    assert len(by_channel[0]) == len(by_channel[1]) > 0
    assert any(h["emotion"] for h in by_channel[0])
    assert all(h["scores"] is None for h in by_channel[1])  # digital silence: never speech
    assert summary.duration_s == pytest.approx(len(speech) / 44100, abs=1e-3)
    assert summary.realtime_factor is not None and summary.latency_p50_ms is not None
    state = engine.state
    assert state.status == "stopped" and len(state.channels) == 2 and state.input_rate_hz == 44100


def test_latency_percentiles_are_numpys_linear_ones() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 101, 10000):
        values = rng.exponential(2.0, size=n)
        ordered = np.sort(values)
        for q in (0.0, 50.0, 99.0, 100.0):
            assert _percentile(ordered, q) == round(float(np.percentile(values, q)), 3)


def hop_records(path: Path) -> list[dict[str, object]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k not in ("time", "latency_ms", "session_id")}
        for r in records
        if r["type"] == "hop"
    ]


def test_a_file_read_in_large_blocks_gives_the_hops_of_small_blocks_and_snapshots_only_when_asked(
    model: EmotionModel, tmp_path: Path
) -> None:
    runs = {}
    for name, fast, snapshots in (("paced_blocks", False, True), ("fast_blocks", True, False)):
        source = FileSource(fixture_clip(2, 3), fast=fast, block_ms=10)
        if not fast:
            source.fast = True  # as fast as possible, but in the paced source's 10 ms blocks
        events = tmp_path / f"{name}.jsonl"
        engine = Engine(source, session(model, source), [JsonlSink(events)], snapshots=snapshots)
        states = []
        engine.start()
        while not engine.wait(0.001):
            states.append(engine.state)
        summary = engine.finish()
        runs[name] = hop_records(events)
        assert engine.state.status == "stopped" and summary.latency_p99_ms is not None
        if not snapshots:  # only the first and the last state: nothing shows the others
            assert {s.status for s in states} <= {"starting", "stopped"}
    assert runs["paced_blocks"] == runs["fast_blocks"] and len(runs["fast_blocks"]) > 3


class FailingSource(Source):
    """A real source whose audio turns unreadable after two blocks."""

    name, rate_hz, channels = "failing", 16000, 1

    def __init__(self) -> None:
        self.blocks = 0
        self.stopped = False

    def read(self, timeout: float = 0.1) -> np.ndarray | None:
        self.blocks += 1
        if self.blocks > 2:
            raise AudioInputError("the audio went bad")
        return np.zeros((8000, 1), np.float32)

    def stop(self) -> None:
        self.stopped = True


def test_worker_error_is_reraised_in_the_main_thread_after_the_end_record(model: EmotionModel, tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    source = FailingSource()
    engine = Engine(source, session(model, source), [JsonlSink(events)])
    with pytest.raises(AudioInputError, match="the audio went bad"):
        engine.run()
    end = json.loads(events.read_text().splitlines()[-1])
    assert end["type"] == "end" and end["exit_reason"] == "error: the audio went bad" and end["duration_s"] == 1.0
    assert source.stopped


def test_duration_limit_stops_the_session(model: EmotionModel) -> None:
    source = FileSource(fixture_clip(1, 4), fast=True)
    engine = Engine(source, session(model, source), max_audio_s=2.0)
    summary = engine.run()
    assert summary.duration_s == pytest.approx(2.0) and summary.exit_reason == "duration reached"


def test_stdin_stream_ending_mid_frame_keeps_whole_frames_and_warns(model: EmotionModel) -> None:
    x = load_mono(fixture_clip(1, 5), 16000)
    pcm = to_pcm16(x) + b"\x01"  # one stray byte
    source = StdinSource(io.BytesIO(pcm), 16000, 1, "s16le")
    summary = Engine(source, session(model, source)).run()
    assert summary.duration_s == pytest.approx(len(x) / 16000)
    assert source.truncated_bytes == 1 and "last 1 byte(s)" in source.warnings[0]


@pytest.mark.parametrize("fmt", ["s16le", "s32le", "f32le"])
def test_stdin_formats_decode_to_the_same_signal(fmt: str) -> None:
    x = (np.sin(np.arange(9600) / 7) * 0.5).astype(np.float32)
    stereo = np.stack([x, -x], axis=1)
    data = {
        "s16le": (stereo * 32768).astype("<i2").tobytes(),
        "s32le": (stereo * 2147483648.0).astype("<i4").tobytes(),
        "f32le": stereo.astype("<f4").tobytes(),
    }[fmt]
    source = StdinSource(io.BytesIO(data), 16000, 2, fmt, block_ms=30)
    blocks = []
    while (block := source.read()) is not None:
        blocks.append(block)
    np.testing.assert_allclose(np.concatenate(blocks), stereo, atol=1 / 32768)
    assert source.warnings == []


def test_session_refuses_blocks_with_another_channel_count(model: EmotionModel) -> None:
    stereo = Session(make_plan(Config(), model), input_rate_hz=16000, channels=2)
    with pytest.raises(AudioInputError, match=r"shape \(800, 3\) was given; expected \(frames, 2\)"):
        stereo.feed(np.zeros((800, 3), np.float32))


def test_file_source_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="no such file"):
        FileSource(tmp_path / "missing.wav")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioInputError, match="cannot be decoded as audio"):
        FileSource(corrupt)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioInputError, match="contains no samples"):
        FileSource(empty)


def test_a_session_without_level_meters_gives_the_same_events_and_unmeasured_levels(model: EmotionModel) -> None:
    x = load_mono(fixture_clip(2, 3), 16000)
    stereo = np.stack([x, x[::-1].copy()], axis=1)
    plan = make_plan(Config(), model)
    metered = Session(plan, input_rate_hz=16000, channels=2, session_id="s")
    unmetered = Session(plan, input_rate_hz=16000, channels=2, session_id="s", levels=False)
    chunked = Session(plan, input_rate_hz=16000, channels=2, session_id="s")
    got: dict[str, list[dict[str, object]]] = {"metered": [], "unmetered": [], "chunked": []}
    for start in range(0, len(stereo), 64000):  # 4 s blocks, as a file read as fast as possible
        block = stereo[start : start + 64000]
        got["metered"] += [e.to_dict() for e in metered.feed(block)]
        got["unmetered"] += [e.to_dict() for e in unmetered.feed(block)]
        for small in range(0, len(block), 800):  # the same audio in 50 ms blocks
            got["chunked"] += [e.to_dict() for e in chunked.feed(block[small : small + 800])]
    strip = [[{k: v for k, v in r.items() if k not in ("time", "latency_ms")} for r in rs] for rs in got.values()]
    assert strip[0] == strip[1] == strip[2] and len(strip[0]) > 4
    assert [v.level_db for v in metered.views()] == [v.level_db for v in chunked.views()]
    assert all(-60.0 < v.level_db < 0.0 for v in metered.views())
    assert all(np.isnan(v.level_db) for v in unmetered.views())
