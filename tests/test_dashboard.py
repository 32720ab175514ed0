"""The dashboard renders every piece of a snapshot, at any width, as plain text."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from rich.console import Console

from emostream.engine.events import ChannelSummary, ChannelView, DashboardState, SessionSummary, TimelinePoint
from emostream.inference.metadata import EMOTIONS
from emostream.outputs.dashboard import LiveDashboard, _timeline_cells, emotion_colour, render, render_summary

LABELS = tuple(EMOTIONS)
WIDTHS = (40, 80, 120)


def _text(renderable: object, width: int) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def _timeline(n: int, hop: float = 0.5) -> tuple[TimelinePoint, ...]:
    return tuple(
        TimelinePoint(t_end=2.0 + hop * i, emotion=None if i % 10 == 0 else LABELS[(i // 7) % 8], confidence=0.6)
        for i in range(n)
    )


def _channel(**kw: object) -> ChannelView:
    base: dict[str, object] = {
        "channel": 0,
        "role": "caller",
        "analysed": True,
        "emotion": "angry",
        "confidence": 0.873,
        "smoothed": {lab: (0.65 if lab == "angry" else 0.05) for lab in LABELS},
        "timeline": _timeline(40),
        "level_db": -23.4,
        "speech_active": True,
    }
    base.update(kw)
    return ChannelView(**base)  # type: ignore[arg-type]


def _state(channels: tuple[ChannelView, ...], **kw: object) -> DashboardState:
    base: dict[str, object] = {
        "labels": LABELS,
        "source": "file demo.flac",
        "input_rate_hz": 48000,
        "model_name": "resnet_mlp",
        "elapsed_s": 83.0,
        "channels": channels,
        "latency_p50_ms": 1.234,
        "latency_p99_ms": 4.567,
        "realtime_factor": 0.002,
        "dropped_samples": 0,
    }
    base.update(kw)
    return DashboardState(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("width", WIDTHS)
def test_render_shows_every_field(width: int) -> None:
    text = _text(render(_state((_channel(),), dropped_samples=480, overflow_count=2, messages=("hello",))), width)
    assert "ANGRY" in text
    assert "87%" in text
    for label in LABELS:
        assert label in text
    assert "1.23 ms" in text
    assert "4.57 ms" in text
    assert "dropped 480 samples" in text
    assert "0.2 % of the audio" in " ".join(text.split())
    assert "resnet_mlp" in text
    assert "48000 Hz" in text
    assert "1:23" in text
    assert "-23.4 dBFS" in text
    assert "speech" in text
    assert "hello" in text
    assert "ALERT" not in text
    assert all(len(line) <= width for line in text.splitlines())


@pytest.mark.parametrize("width", WIDTHS)
def test_not_analysed_channel_and_alert(width: int) -> None:
    agent = _channel(
        channel=1, role="agent", analysed=False, emotion=None, confidence=None, smoothed={}, timeline=(), level_db=-50.0
    )
    caller = _channel(active_alerts=("angry for 12 s",))
    text = _text(render(_state((caller, agent))), width)
    assert "not analysed" in " ".join(text.split())
    assert "role agent" in text
    assert "ALERT" in text
    assert "angry for 12 s" in text
    assert "-50.0 dBFS" in text
    # the agent panel shows no bars: each label appears once (the caller's bars)
    assert text.count("surprised") == 1


@pytest.mark.parametrize("width", (20, *WIDTHS))
def test_empty_state_does_not_crash(width: int) -> None:
    empty = _channel(
        emotion=None, confidence=None, smoothed={}, timeline=(), level_db=float("-inf"), speech_active=False
    )
    state = _state((empty,), latency_p50_ms=None, latency_p99_ms=None, realtime_factor=None, elapsed_s=0.0)
    text = _text(render(state), width)
    assert "silence" in text
    if width >= 40:
        assert "no emotion yet" in text
    assert _text(render(_state(())), width)  # no channel at all


@pytest.mark.parametrize("width", WIDTHS)
def test_long_timeline_fits_the_width(width: int) -> None:
    state = _state((_channel(timeline=_timeline(20_000)),), timeline_seconds=600.0)
    text = _text(render(state), width)
    line = next(ln for ln in text.splitlines() if "last 600s" in ln)
    assert len(line) <= width
    assert "█" in line


def _html(state: DashboardState) -> str:
    console = Console(record=True, width=100, file=io.StringIO(), color_system="truecolor", force_terminal=True)
    console.print(render(state))
    return console.export_html(inline_styles=True)


def test_dropped_count_highlighted_only_when_audio_was_lost() -> None:
    calm = _html(_state((_channel(),)))
    lost = _html(_state((_channel(),), dropped_samples=3))
    assert "dropped 0 samples" in calm
    assert "dropped 3 samples" in lost
    highlighted = re.compile(r"background-color: #800000[^>]*>dropped")
    assert not highlighted.search(calm)
    assert highlighted.search(lost)


def test_two_channels_side_by_side_when_wide() -> None:
    callee = _channel(channel=1, role="agent", emotion="sad")
    text = _text(render(_state((_channel(), callee))), 180)
    heads = [ln for ln in text.splitlines() if "channel 0" in ln]
    assert heads and "channel 1" in heads[0]
    narrow = _text(render(_state((_channel(), callee))), 80)
    assert not any("channel 0" in ln and "channel 1" in ln for ln in narrow.splitlines())


def test_timeline_cells_one_per_hop_newest_right() -> None:
    points = (TimelinePoint(1.0, "sad"), TimelinePoint(1.5, None), TimelinePoint(2.0, "happy"))
    assert _timeline_cells(points, span_s=2.0, cells=10) == [False] * 6 + [False, "sad", None, "happy"]


def test_timeline_cells_merge_hops_when_narrow() -> None:
    points = tuple(TimelinePoint(0.5 * (i + 1), "angry" if i < 60 else "calm") for i in range(120))
    cells = _timeline_cells(points, span_s=60.0, cells=30)
    assert len(cells) == 30
    assert cells[:15] == ["angry"] * 15
    assert cells[15:] == ["calm"] * 15


def test_timeline_cells_use_the_hop_the_state_carries() -> None:
    points = (TimelinePoint(1.0, "sad"), TimelinePoint(2.0, "happy"))  # a 1 s hop, as a --hop-ms 1000 run has
    assert _timeline_cells(points, span_s=4.0, cells=10, hop_s=1.0) == [False] * 6 + [False, False, "sad", "happy"]
    assert _timeline_cells(points, span_s=4.0, cells=10, hop_s=0.5)[-3:] == ["sad", False, "happy"]


def test_colours_are_stable_and_distinct() -> None:
    colours = [emotion_colour(lab) for lab in LABELS]
    assert len(set(colours)) == len(LABELS)
    assert emotion_colour("bored") == emotion_colour("bored")


@pytest.mark.parametrize("width", WIDTHS)
def test_render_summary(width: int) -> None:
    summary = SessionSummary(
        source="file demo.flac",
        duration_s=77.2,
        hops=150,
        channels=(
            ChannelSummary(0, "caller", True, 40.0, {"angry": 30.0, "sad": 10.0}, alerts=2),
            ChannelSummary(1, "agent", False, 20.0, {}),
        ),
        dropped_samples=7,
        latency_p50_ms=1.2,
        latency_p99_ms=3.4,
        realtime_factor=0.002,
    )
    text = _text(render_summary(summary), width)
    flat = " ".join(text.split())
    for needle in ("1:17", "150", "angry", "30.0 s", "75%", "25%", "2 alerts", "dropped", "7 samples", "1.20 ms"):
        assert needle in flat, needle
    assert "3.40 ms" in flat
    assert "not analysed" in flat
    assert "processing" in flat and "0.2 %" in flat


def test_live_dashboard_updates_from_another_thread() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    states = [_state((_channel(emotion=lab, smoothed={lab: 1.0}),), elapsed_s=float(i)) for i, lab in enumerate(LABELS)]

    def feed(dash: LiveDashboard) -> None:
        for state in states:
            dash.update(state)
            time.sleep(0.01)  # give the refresh thread a chance to draw; no timing is asserted

    with LiveDashboard(console=console, refresh_per_second=50) as dash:
        worker = threading.Thread(target=feed, args=(dash,))
        worker.start()
        worker.join()
        assert dash.state is states[-1]
    assert "SURPRISED" in out.getvalue()  # stopping draws the latest snapshot one last time


def test_channel_display_name_in_the_panel_title() -> None:
    text = _text(render(_state((_channel(name="customer"),))), 80)
    title = next(ln for ln in text.splitlines() if "channel 0" in ln)
    assert "customer" in title and "caller" in title


def test_arousal_and_uncertain_readings_are_shown() -> None:
    sure = _text(render(_state((_channel(arousal=0.91),))), 100)
    assert "ANGRY" in sure and "arousal 0.91" in sure and "uncertain" not in sure
    unsure = _text(render(_state((_channel(arousal=0.4, uncertain=True),))), 100)
    assert "angry?" in unsure and "uncertain" in unsure and "ANGRY" not in unsure and "arousal 0.40" in unsure
