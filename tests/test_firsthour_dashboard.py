"""Issue 19, items 7 and 8: the dashboard shows what a reading is (held, in a pause), names its delay for what
it measures, and the summary's emotion times add up to no more than the speech heard."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from test_dashboard import LABELS, _channel, _state

import emostream
from emostream.audio.files import load_mono
from emostream.engine.channels import ChannelPlan
from emostream.engine.events import HopResult
from emostream.engine.stats import ChannelStats
from emostream.outputs.dashboard import render, render_summary

CLIP = Path(__file__).parent / "fixtures" / "ravdess" / "Actor_01" / "03-01-05-02-01-01-01.flac"


def _text(renderable: object, width: int = 90) -> str:
    console = Console(record=True, width=width, height=40, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return " ".join(console.export_text().split())


def test_a_held_label_is_not_shown_as_the_reading_with_its_collapsed_score() -> None:
    smoothed = {lab: 0.02 for lab in LABELS} | {"calm": 0.72, "sad": 0.09}
    view = _channel(
        emotion="sad",
        confidence=0.09,
        smoothed=smoothed,
        leader="calm",
        leader_score=0.72,
        shown_for_s=1.0,
        min_dwell_s=3.0,
        hysteresis=0.2,
    )
    text = _text(render(_state((view,))))
    assert "SAD" not in text and "9% smoothed" not in text
    assert "sad held" in text and "calm leads 72%; held: dwell 1.0/3 s" in text


def test_in_a_pause_the_last_label_is_shown_as_the_last_reading() -> None:
    view = _channel(emotion="angry", confidence=0.30, speech_active=False, silent_for_s=18.0, shown_for_s=18.0)
    text = _text(render(_state((view,))))
    assert "ANGRY" not in text
    assert "pause 18.0 s · last reading angry 30%" in text
    speaking = _text(render(_state((_channel(speech_active=True, silent_for_s=None),))))
    assert "ANGRY 87% smoothed" in speaking and "pause" not in speaking


def test_the_footer_names_the_delay_it_measures() -> None:
    text = _text(render(_state((_channel(shown_for_s=2.0, median_delay_s=0.5),))))
    assert "smoother delay p50 0.5 s" in text and "change delay" not in text


def _hop(t: float, ratio: float, emotion: str | None) -> HopResult:
    speech = emotion is not None
    scores = {"a": 0.8, "b": 0.2} if speech else None
    return HopResult(t - 2, t, ratio, speech, scores, scores if speech else None, emotion, 0.8, 1.0)


def test_stats_count_emotion_time_by_speech_share_and_the_pause() -> None:
    stats = ChannelStats(ChannelPlan(0, "speaker", None, True), ("a", "b"), 0.5)
    for i in range(4):
        stats.on_hop(_hop(1.0 + 0.5 * i, 0.5, "a"))  # half of each window is speech
    stats.on_hop(_hop(3.0, 0.1, None))
    stats.on_hop(_hop(3.5, 0.0, None))
    assert stats.emotion_seconds == {"a": pytest.approx(1.0)}  # was 4 hops x 0.5 s = 2.0 s
    assert sum(stats.emotion_seconds.values()) <= stats.speech_seconds
    assert stats.view().silent_for_s == pytest.approx(1.0)  # since the last speech hop, ending at 2.5 s
    stats.on_hop(_hop(4.0, 0.9, "a"))
    assert stats.view().silent_for_s is None


def test_a_sessions_emotion_times_add_up_to_at_most_its_speech() -> None:
    mon = emostream.Monitor(emostream.load_model(), sample_rate_hz=16000)
    mon.feed(load_mono(CLIP, 16000))
    mon.close()
    channel = mon.summary().channels[0]
    assert channel.emotion_seconds
    assert sum(channel.emotion_seconds.values()) <= channel.speech_seconds + 1e-9
    text = _text(render_summary(mon.summary()))
    assert "speech" in text
