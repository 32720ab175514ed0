"""The event stream and the snapshots read from it.

A session produces one stream of events in time order: a :class:`HopResult` per channel
and analysis window, and an :class:`~emostream.alerts.rules.AlertEvent` when an alert rule
fires or clears. Every output (JSON lines, the plain change printer, alert delivery, the
statistics behind the dashboard and the summaries, later a network server) is an
:class:`Observer` of that stream; nothing writes into a pipeline from outside. Each event
has ``to_dict()``, the record written to ``--jsonl``.

The processing thread also publishes an immutable :class:`DashboardState` snapshot a few
times a second; the dashboard only ever reads snapshots, so rendering needs no lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class HopResult:
    """What one channel's pipeline reports for one analysis window.

    Times are seconds of audio since the stream started. ``scores`` are the model's
    probabilities for this window, ``smoothed`` the smoother's running probabilities,
    ``emotion`` the label shown to the user (after hysteresis and dwell); all three are
    None while no speech has been classified. ``latency_ms`` is the wall-clock time the
    hop took to process.
    """

    t_start: float
    t_end: float
    speech_ratio: float
    is_speech: bool
    scores: dict[str, float] | None
    smoothed: dict[str, float] | None
    emotion: str | None
    confidence: float | None
    latency_ms: float
    channel: int = 0
    role: str = "speaker"
    arousal: float | None = None
    uncertain: bool = False
    source: str | None = None  # stamped by the Session: its source, session (or call) id, wall-clock time
    session_id: str | None = None
    wall_time: str | None = None  # ISO 8601, UTC, when the hop was computed

    def to_dict(self) -> dict[str, Any]:
        """The JSONL ``hop`` record."""
        return {
            "type": "hop",
            "source": self.source,
            "session_id": self.session_id,
            "time": self.wall_time,
            "channel": self.channel,
            "role": self.role,
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "speech_ratio": round(self.speech_ratio, 3),
            "scores": _rounded(self.scores),
            "smoothed": _rounded(self.smoothed),
            "emotion": self.emotion,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "arousal": None if self.arousal is None else round(self.arousal, 4),
            "uncertain": self.uncertain,
            "latency_ms": round(self.latency_ms, 3),
        }


def _rounded(scores: dict[str, float] | None) -> dict[str, float] | None:
    return None if scores is None else {k: round(float(v), 4) for k, v in scores.items()}


@dataclass(frozen=True)
class TimelinePoint:
    """One hop on the dashboard timeline; ``emotion`` None means no speech."""

    t_end: float
    emotion: str | None
    confidence: float | None = None


@dataclass(frozen=True)
class ChannelView:
    """Snapshot of one channel for the dashboard."""

    channel: int
    role: str
    analysed: bool
    emotion: str | None
    confidence: float | None
    smoothed: dict[str, float]
    timeline: tuple[TimelinePoint, ...]
    level_db: float
    speech_active: bool
    speech_seconds: float = 0.0
    active_alerts: tuple[str, ...] = ()
    name: str | None = None  # display name from [[channels]] name (None: show channel and role)
    arousal: float | None = None
    uncertain: bool = False
    level_span_s: float = 2.0  # the span level_db and speech_active describe (the latest window)
    leader: str | None = None  # the label with the highest smoothed probability
    leader_score: float | None = None
    shown_for_s: float | None = None  # audio seconds since the shown label last changed
    median_delay_s: float | None = None  # median time the smoother adds to a label change (see ChannelStats.view)
    min_dwell_s: float = 0.0  # smoothing settings, to say why a label is held
    hysteresis: float = 0.0
    silent_for_s: float | None = None  # seconds since the last speech while the latest window has none


@dataclass(frozen=True)
class DashboardState:
    """Everything the dashboard shows, frozen at one moment."""

    labels: tuple[str, ...]
    source: str
    input_rate_hz: int
    model_name: str
    elapsed_s: float
    channels: tuple[ChannelView, ...]
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    realtime_factor: float | None = None
    dropped_samples: int = 0
    overflow_count: int = 0
    status: str = "listening"
    timeline_seconds: float = 60.0
    hop_s: float = 0.5
    messages: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ChannelSummary:
    """Totals for one channel over a session; ``emotion_seconds`` counts hop time per shown label."""

    channel: int
    role: str
    analysed: bool
    speech_seconds: float
    emotion_seconds: dict[str, float]
    alerts: int = 0

    def shares(self) -> dict[str, float]:
        """Share of the labelled time per emotion (0..1); empty before any label."""
        total = sum(self.emotion_seconds.values())
        return {} if total <= 0 else {k: v / total for k, v in self.emotion_seconds.items()}


@dataclass(frozen=True)
class SessionSummary:
    """What a session did, shown at exit and written as the JSONL ``end`` record."""

    source: str
    duration_s: float
    hops: int
    channels: tuple[ChannelSummary, ...]
    dropped_samples: int = 0
    overflow_count: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    realtime_factor: float | None = None
    exit_reason: str = "end of input"
    session_id: str | None = None
    alert_delivery: dict[str, int] | None = None  # delivered / failed / dropped / pending (when alerts are delivered)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL ``end`` record."""
        return {
            "type": "end",
            "source": self.source,
            "session_id": self.session_id,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "alert_delivery": self.alert_delivery,
            "duration_s": round(self.duration_s, 3),
            "hops": self.hops,
            "exit_reason": self.exit_reason,
            "dropped_samples": self.dropped_samples,
            "overflow_count": self.overflow_count,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "realtime_factor": self.realtime_factor,
            "channels": [
                {
                    "channel": c.channel,
                    "role": c.role,
                    "analysed": c.analysed,
                    "speech_seconds": round(c.speech_seconds, 3),
                    "emotion_seconds": {k: round(v, 3) for k, v in c.emotion_seconds.items()},
                    "alerts": c.alerts,
                }
                for c in self.channels
            ],
        }


class Event(Protocol):
    """A record of the event stream (:class:`HopResult` or an alert event)."""

    def to_dict(self) -> dict[str, Any]: ...


class Observer(Protocol):
    """Receives every event of a session in order, then the session summary."""

    def on_event(self, event: Event) -> None: ...

    def on_end(self, summary: SessionSummary) -> None: ...
