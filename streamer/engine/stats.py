"""Per-channel statistics of one session, in one place, kept by observing the event stream.

:class:`ChannelStats` counts what the dashboard, the session summary (the JSONL ``end``
record) and the call summaries report: speech time, time per shown emotion, the recent
timeline, the peak smoothed score per emotion and the alerts. Times are counted in hops
and turned into seconds by multiplying with the hop length, never accumulated.

Emotion time counts *speech* hops that show a label: a label held through a pause is not
time spent in that emotion.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from emostream.alerts.rules import AlertEvent
from emostream.engine.channels import ChannelPlan
from emostream.engine.events import ChannelSummary, ChannelView, HopResult, TimelinePoint

SILENCE_DB = -120.0


@dataclass(frozen=True)
class Peak:
    """The highest smoothed score of one emotion during speech, and the hop end time (s) it was reached."""

    score: float
    t_s: float


class ChannelStats:
    """Statistics of one channel; feed it the channel's hops and alert events in order.

    ``hop_s`` is the hop between readings in seconds; ``timeline_seconds`` the history the
    dashboard timeline keeps.
    """

    def __init__(self, plan: ChannelPlan, labels: Sequence[str], hop_s: float, timeline_seconds: float = 60.0) -> None:
        self.plan = plan
        self.labels = tuple(labels)
        self.hop_s = hop_s
        self._timeline: deque[TimelinePoint] = deque(maxlen=max(1, math.ceil(timeline_seconds / hop_s)))
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        self.hops = 0
        self._speech_ratio_sum = 0.0
        self._emotion_hops: dict[str, int] = {}
        self._peaks: dict[str, Peak] = {}
        self._timeline.clear()
        self._active: dict[str, None] = {}
        self.alerts_fired = 0
        self.last: HopResult | None = None

    def on_hop(self, hop: HopResult) -> None:
        """Count one hop of this channel."""
        self.hops += 1
        self._speech_ratio_sum += hop.speech_ratio
        if hop.is_speech and hop.emotion is not None:
            self._emotion_hops[hop.emotion] = self._emotion_hops.get(hop.emotion, 0) + 1
        if hop.is_speech and hop.smoothed is not None:
            for label, score in hop.smoothed.items():
                best = self._peaks.get(label)
                if best is None or score > best.score:
                    self._peaks[label] = Peak(score, hop.t_end)
        self._timeline.append(TimelinePoint(hop.t_end, hop.emotion if hop.is_speech else None, hop.confidence))
        self.last = hop

    def on_alert(self, event: AlertEvent) -> None:
        """Track the rules active on this channel and count the ones that fired."""
        if event.state == "fired":
            self._active[event.rule] = None
            self.alerts_fired += 1
        else:
            self._active.pop(event.rule, None)

    @property
    def speech_seconds(self) -> float:
        """Speech heard, s: each hop contributes its window's speech share of one hop length."""
        return self._speech_ratio_sum * self.hop_s

    @property
    def emotion_seconds(self) -> dict[str, float]:
        """Seconds of speech per shown emotion."""
        return {label: n * self.hop_s for label, n in self._emotion_hops.items()}

    @property
    def peaks(self) -> dict[str, Peak]:
        """Peak smoothed score per emotion over speech hops, in label order."""
        return {label: self._peaks[label] for label in self.labels if label in self._peaks}

    @property
    def active_alerts(self) -> tuple[str, ...]:
        """Rules currently fired and not cleared on this channel."""
        return tuple(self._active)

    def view(self, level_db: float = SILENCE_DB) -> ChannelView:
        """Snapshot for the dashboard; ``level_db`` is the channel's latest input level."""
        last = self.last
        return ChannelView(
            channel=self.plan.index,
            role=self.plan.role,
            analysed=self.plan.analysed,
            emotion=None if last is None else last.emotion,
            confidence=None if last is None else last.confidence,
            smoothed={} if last is None or last.smoothed is None else dict(last.smoothed),
            timeline=tuple(self._timeline),
            level_db=level_db,
            speech_active=last is not None and last.is_speech,
            speech_seconds=self.speech_seconds,
            active_alerts=self.active_alerts,
            name=self.plan.given_name,
            arousal=None if last is None else last.arousal,
            uncertain=last is not None and last.uncertain,
        )

    def summary(self) -> ChannelSummary:
        """Totals since the last reset."""
        return ChannelSummary(
            channel=self.plan.index,
            role=self.plan.role,
            analysed=self.plan.analysed,
            speech_seconds=self.speech_seconds,
            emotion_seconds=self.emotion_seconds,
            alerts=self.alerts_fired,
        )
