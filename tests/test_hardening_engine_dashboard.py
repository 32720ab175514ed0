"""Issue 9, item 10: the dashboard says why a label is held, measures level and speech over one span,
shows the reading's delay, and keeps label, arousal, level and speech state on a 12-row terminal."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console
from test_dashboard import LABELS, _channel, _state

from emostream.config import Config
from emostream.engine.channels import ChannelPlan
from emostream.engine.events import HopResult
from emostream.engine.plan import make_plan
from emostream.engine.session import Session
from emostream.engine.stats import ChannelStats, LevelMeter
from emostream.inference.model import EmotionModel
from emostream.outputs.dashboard import hold_reason, render


def _text(state: object, width: int = 86, height: int = 40) -> str:
    console = Console(record=True, width=width, height=height, file=io.StringIO(), color_system=None)
    console.print(render(state))  # type: ignore[arg-type]
    return console.export_text()


def _held(**kw: object):
    smoothed = {lab: 0.05 for lab in LABELS} | {"neutral": 0.57, "fearful": 0.06}
    base: dict[str, object] = {
        "emotion": "fearful",
        "confidence": 0.06,
        "smoothed": smoothed,
        "leader": "neutral",
        "leader_score": 0.57,
        "shown_for_s": 1.2,
        "min_dwell_s": 3.0,
        "hysteresis": 0.2,
        "median_delay_s": 1.5,
        "arousal": 0.41,
    }
    return _channel(**(base | kw))


def test_held_label_says_what_leads_and_why_it_is_held() -> None:
    text = _text(_state((_held(),)))
    # issue 19, item 8: a held label is not shown as the reading with its collapsed score
    assert "fearful" in text and "held" in text and "FEARFUL" not in text and "6% smoothed" not in text
    assert "neutral leads 57%; held: dwell 1.2/3 s" in text
    after_dwell = _held(shown_for_s=4.0, leader_score=0.20, smoothed={lab: 0.1 for lab in LABELS})
    assert hold_reason(after_dwell) == "neutral leads 20%; held: margin 14% ≤ hysteresis 20%"
    assert hold_reason(_channel()) is None  # the shown label leads: nothing to explain


def test_reading_delay_is_shown_beside_the_processing_latency() -> None:
    text = " ".join(_text(_state((_held(),))).split())
    assert "latency p50 1.23 ms · p99 4.57 ms · label shown 1.2 s · smoother delay p50 1.5 s" in text


def test_level_line_names_its_span() -> None:
    text = _text(_state((_held(level_span_s=2.0, level_db=-30.0),)))
    assert "last 2.0s level -30.0 dBFS" in " ".join(text.split())


@pytest.mark.parametrize("width", [40, 80])
def test_a_12_row_terminal_keeps_label_arousal_level_and_speech(width: int) -> None:
    text = _text(_state((_held(),)), width=width, height=12)
    flat = " ".join(text.split())
    assert len(text.splitlines()) <= 12
    assert "fearful held" in flat and "arousal 0.41" in flat and "dBFS" in flat and "● speech" in flat


def test_two_channels_on_12_rows_keep_both_labels() -> None:
    text = _text(_state((_held(), _held(channel=1, role="agent", emotion="angry", leader="angry"))), height=12)
    assert len(text.splitlines()) <= 12 and "fearful" in text and "ANGRY" in text


def test_level_meter_measures_a_span_not_the_last_chunk() -> None:
    meter = LevelMeter(16000, 5.0)
    meter.feed(np.full(16000, 0.1, dtype=np.float32))  # 1 s at -20 dBFS
    meter.feed(np.zeros(800, dtype=np.float32))  # then 50 ms of silence
    assert meter.level_db(None, 0.05) == -120.0
    assert meter.level_db(1.0, 1.0) == pytest.approx(-20.0, abs=0.01)
    assert meter.level_db(None, 2.0) == pytest.approx(-20.0 - 10 * np.log10(1.05), abs=0.01)


def test_level_meter_ring_wraps_around_in_blocks_of_any_size() -> None:
    """The ring of 10 ms energies, fed in uneven blocks far past its length, gives every span's level as the
    samples themselves do."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(16000 * 12) * np.repeat(rng.uniform(0.001, 0.5, 120), 1600)).astype(np.float32)
    meter = LevelMeter(16000, 3.0)
    at = 0
    while at < x.size:
        n = int(rng.integers(1, 9000))
        meter.feed(x[at : at + n])
        at = min(at + n, x.size)
        end_s = at // 160 / 100  # the meter's latest whole 10 ms frame
        for span_s in (0.05, 0.5, 2.9):
            if end_s < span_s:
                continue
            part = x[round((end_s - span_s) * 16000) : round(end_s * 16000)].astype(np.float64)
            expected = 10 * np.log10(np.mean(part * part))
            assert meter.level_db(None, span_s) == pytest.approx(expected, abs=1e-6)


def test_session_view_level_covers_the_window_the_speech_dot_describes(model: EmotionModel) -> None:
    session = Session(make_plan(Config(), model), input_rate_hz=16000, channels=1)
    t = np.arange(32000) / 16000
    session.feed((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    session.feed(np.zeros(400, dtype=np.float32))  # a short silent block after the last window
    view = session.views()[0]
    last = session.stats[0].last
    assert last is not None
    assert view.level_span_s == pytest.approx(last.t_end - max(0.0, last.t_start))
    assert view.level_db > -20.0  # the window's level, not the silent last block's


def test_stats_measure_shown_time_and_change_delay() -> None:
    stats = ChannelStats(ChannelPlan(0, "speaker", None, True), ("a", "b"), 0.5, min_dwell_s=3.0, hysteresis=0.2)

    def hop(t: float, raw: str, shown: str) -> HopResult:
        scores = {"a": 0.9, "b": 0.1} if raw == "a" else {"a": 0.1, "b": 0.9}
        return HopResult(t - 2, t, 1.0, True, scores, scores, shown, 0.5, 1.0)

    stats.on_hop(hop(1.0, "a", "a"))
    stats.on_hop(hop(1.5, "b", "a"))  # the windows turn to b at 1.5 s
    stats.on_hop(hop(2.0, "b", "a"))
    stats.on_hop(hop(4.0, "b", "b"))  # shown at 4.0 s: 2.5 s later
    view = stats.view()
    assert view.shown_for_s == 0.0 and stats.median_delay_s == pytest.approx(0.0 + 1.25)
    assert stats._delays[-1] == pytest.approx(2.5)


def test_median_delay_is_numpys_median_for_odd_and_even_counts() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 6, 499, 500):
        stats = ChannelStats(ChannelPlan(0, "speaker", None, True), ("a", "b"), 0.5, min_dwell_s=0.0, hysteresis=0.0)
        delays = rng.uniform(0.0, 9.0, n)
        stats._delays.extend(delays.tolist())
        assert stats.median_delay_s == float(np.median(delays))
