"""Per-channel statistics of one session, in one place, kept by observing the event stream.

:class:`ChannelStats` counts what the dashboard, the session summary (the JSONL ``end``
record) and the call summaries report: speech time, time per shown emotion, the recent
timeline, the peak smoothed score per emotion and the alerts. Times are counted in hops
and turned into seconds by multiplying with the hop length, never accumulated.

Emotion time counts *speech* hops that show a label, each with its window's speech share
of one hop (as speech time does), so the emotion times add up to at most the speech time:
a label held through a pause is not time spent in that emotion.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emostream.alerts.rules import AlertEvent
from emostream.engine.channels import ChannelPlan
from emostream.engine.events import ChannelSummary, ChannelView, HopResult, TimelinePoint

SILENCE_DB = -120.0
DELAY_HISTORY = 500  # label changes whose delay the median covers
LEVEL_FRAME_S = 0.01  # the level meter's resolution


class LevelMeter:
    """RMS level (dBFS) of one channel over a span of recent audio, at 10 ms resolution.

    The dashboard's speech dot describes the latest analysis window (its VAD speech share);
    :meth:`level_db` measures the level over that same span, so the two agree. Cost: one
    sum of squares per fed chunk; a ring of per-10 ms energies ``keep_s`` long.
    """

    def __init__(self, rate_hz: int, keep_s: float) -> None:
        self.frame = max(1, round(rate_hz * LEVEL_FRAME_S))
        self.rate_hz = rate_hz
        self._energy = np.zeros(max(2, math.ceil(keep_s / LEVEL_FRAME_S)), dtype=np.float64)
        self._carry = np.zeros(self.frame, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        self._frames = 0  # whole 10 ms frames seen since the start
        self._carry_n = 0

    def feed(self, samples: npt.NDArray[np.float32]) -> None:
        """Add mono samples (the channel's audio at ``rate_hz``, in order)."""
        x = samples
        if self._carry_n:
            need = self.frame - self._carry_n
            head = np.asarray(x[:need], dtype=np.float64)
            self._carry[self._carry_n : self._carry_n + head.size] = head
            self._carry_n += head.size
            if self._carry_n < self.frame:
                return
            self._put(np.array([float(np.dot(self._carry, self._carry))]))
            self._carry_n = 0
            x = x[need:]
        whole = x.size - x.size % self.frame
        if whole:
            body = np.asarray(x[:whole], dtype=np.float64).reshape(-1, self.frame)
            self._put(np.einsum("ij,ij->i", body, body))
        rest = x[whole:]
        self._carry[: rest.size] = rest
        self._carry_n = rest.size

    def _put(self, energies: npt.NDArray[np.float64]) -> None:
        ring = self._energy
        cap = ring.size
        energies = energies[-cap:]
        n = energies.size
        at = self._frames % cap
        first = min(n, cap - at)  # up to the end of the ring, the rest from its start
        ring[at : at + first] = energies[:first]
        ring[: n - first] = energies[first:]
        self._frames += n

    def level_db(self, end_s: float | None, span_s: float) -> float:
        """RMS level over [end_s - span_s, end_s] (``end_s`` None: the latest audio), dBFS, floored at -120."""
        end = self._frames if end_s is None else min(self._frames, round(end_s / LEVEL_FRAME_S))
        start = max(0, end - round(span_s / LEVEL_FRAME_S), self._frames - self._energy.size)
        if end <= start:
            return SILENCE_DB
        idx = np.arange(start, end) % self._energy.size
        mean_square = float(self._energy[idx].sum()) / ((end - start) * self.frame)
        return max(SILENCE_DB, 10.0 * math.log10(mean_square)) if mean_square > 0 else SILENCE_DB


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

    def __init__(
        self,
        plan: ChannelPlan,
        labels: Sequence[str],
        hop_s: float,
        timeline_seconds: float = 60.0,
        *,
        min_dwell_s: float = 0.0,
        hysteresis: float = 0.0,
    ) -> None:
        self.plan = plan
        self.labels = tuple(labels)
        self.hop_s = hop_s
        self.min_dwell_s = min_dwell_s
        self.hysteresis = hysteresis
        self._delays: deque[float] = deque(maxlen=DELAY_HISTORY)
        self._timeline: deque[TimelinePoint] = deque(maxlen=max(1, math.ceil(timeline_seconds / hop_s)))
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new stream)."""
        self.hops = 0
        self._speech_ratio_sum = 0.0
        self._emotion_speech: dict[str, float] = {}  # label -> sum of the speech shares of the hops showing it
        self._peaks: dict[str, Peak] = {}
        self._timeline.clear()
        self._active: dict[str, None] = {}
        self.alerts_fired = 0
        self.last: HopResult | None = None
        self._last_speech_t: float | None = None  # end of the latest speech hop, s
        self._shown: str | None = None
        self._shown_since: float | None = None
        self._raw_top: str | None = None
        self._streak_start: dict[str, float] = {}  # label -> start of its latest run as the windows' top label
        self._delays.clear()

    def on_hop(self, hop: HopResult) -> None:
        """Count one hop of this channel."""
        self.hops += 1
        self._speech_ratio_sum += hop.speech_ratio
        if hop.is_speech:
            self._last_speech_t = hop.t_end
        if hop.is_speech and hop.emotion is not None:
            self._emotion_speech[hop.emotion] = self._emotion_speech.get(hop.emotion, 0.0) + hop.speech_ratio
        if hop.is_speech and hop.smoothed is not None:
            for label, score in hop.smoothed.items():
                best = self._peaks.get(label)
                if best is None or score > best.score:
                    self._peaks[label] = Peak(score, hop.t_end)
        self._timeline.append(TimelinePoint(hop.t_end, hop.emotion if hop.is_speech else None, hop.confidence))
        self._track_changes(hop)
        self.last = hop

    def _track_changes(self, hop: HopResult) -> None:
        """When the shown label changed, and how long after the windows' evidence turned to it."""
        if hop.scores:
            top = max(hop.scores, key=hop.scores.__getitem__)
            if top != self._raw_top:
                self._raw_top = top
                self._streak_start[top] = hop.t_end
        if hop.emotion != self._shown:
            self._shown = hop.emotion
            self._shown_since = None if hop.emotion is None else hop.t_end
            start = None if hop.emotion is None else self._streak_start.get(hop.emotion)
            if start is not None:
                self._delays.append(max(0.0, hop.t_end - start))

    @property
    def median_delay_s(self) -> float | None:
        """Median delay of the shown label's changes (see :meth:`view`); None before the first.

        The middle value (the mean of the two middle ones for an even count), as ``np.median`` gives it,
        but without it: ``np.median`` imports ``numpy.ma`` (about 12 ms) at the end of every run.
        """
        if not self._delays:
            return None
        ordered = sorted(self._delays)
        mid = len(ordered) // 2
        return float(ordered[mid]) if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

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
        """Seconds of speech per shown emotion (each speech hop: its speech share of one hop); sum <= speech_seconds."""
        return {label: share * self.hop_s for label, share in self._emotion_speech.items()}

    @property
    def peaks(self) -> dict[str, Peak]:
        """Peak smoothed score per emotion over speech hops, in label order."""
        return {label: self._peaks[label] for label in self.labels if label in self._peaks}

    @property
    def active_alerts(self) -> tuple[str, ...]:
        """Rules currently fired and not cleared on this channel."""
        return tuple(self._active)

    def view(self, level_db: float = SILENCE_DB, level_span_s: float = 2.0) -> ChannelView:
        """Snapshot for the dashboard; ``level_db`` is the channel's input level over ``level_span_s``.

        ``shown_for_s`` is the audio time since the shown label last changed;
        ``median_delay_s`` the median, over the label changes, of the time from the start
        of the changed-to label's latest run as the windows' top label to its being shown:
        what the smoother's averaging, hysteresis and dwell add, not the whole delay from a
        change in the voice (each window also spans the last 2 s). ``silent_for_s``: audio
        seconds since the last speech hop while the latest hop has no speech (None otherwise).
        """
        last = self.last
        leader = leader_score = None
        if last is not None and last.smoothed:
            leader = max(last.smoothed, key=last.smoothed.__getitem__)
            leader_score = last.smoothed[leader]
        shown_for = None
        if last is not None and self._shown_since is not None:
            shown_for = max(0.0, last.t_end - self._shown_since)
        silent_for = None
        if last is not None and not last.is_speech and self._last_speech_t is not None:
            silent_for = max(0.0, last.t_end - self._last_speech_t)
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
            level_span_s=level_span_s,
            leader=leader,
            leader_score=leader_score,
            shown_for_s=shown_for,
            median_delay_s=self.median_delay_s,
            min_dwell_s=self.min_dwell_s,
            hysteresis=self.hysteresis,
            silent_for_s=silent_for,
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
