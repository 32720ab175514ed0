"""Alert rules on smoothed emotion scores or arousal.

:class:`AlertRules` runs in the processing thread: ``process(hop)`` takes each channel's
:class:`~emostream.engine.events.HopResult` and returns the :class:`AlertEvent` values that hop
caused. A rule's *score* on a hop is the smoothed probability of its emotion, or, for
several emotions, their **sum** (``combine = "sum"``, the default: "angry or disgusted")
or their **max** (``combine = "max"``: "the strongest of them"); a rule with
``on = "arousal"`` scores the hop's arousal (0 calm .. 1 agitated) instead, e.g.
"customer arousal >= 0.8 for 5 s".

Firing: a rule fires once when its score has stayed ``>= threshold`` on consecutive
speech hops whose ``t_end`` values span at least ``min_duration_s`` (the span runs from
the ``t_end`` of the first qualifying hop to that of the current hop; with 0.5 s hops, 5 s
takes 11 hops). Hops without speech (``smoothed`` None or ``is_speech`` False) and
*uncertain* hops neither extend nor break the run, unless such a gap exceeds ``max_gap_s``,
which restarts it: an alert never fires on an uncertain reading.

Clearing (hysteresis): a fired rule stays *active* and cannot fire again until its score
has been ``< clear_threshold`` (default: ``threshold``) on speech hops spanning at least
``clear_after_s`` (0 = the first such hop clears it). Clearing emits an event with
``state = "cleared"``.

These rules are pure (no threads, no I/O); :mod:`emostream.alerts.delivery` sends the
events on to a command or a webhook.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from emostream.engine.events import HopResult
from emostream.errors import ConfigError, InvalidSettingError

log = logging.getLogger(__name__)

COMBINE_MODES: tuple[str, ...] = ("sum", "max")
DEFAULTS_BY_KIND: dict[str, tuple[float, float]] = {"emotions": (0.4, 2.0), "arousal": (0.8, 5.0)}
"""(threshold, min_duration_s) of a rule that does not set them, by its ``on``.

Chosen by ``python -m benchmarks.alert_eval --phone`` with the v4.1 ``accurate`` models of
corpora the model never heard (docs/alerts.md): angry >= 0.4 for 2 s was the angry rule that
fired most on angry stretches (50 / 33 / 33 % of RAVDESS / nEMO / ASED speakers) and on no calm
one; no arousal rule measured stayed silent on every calm stretch, arousal >= 0.8 for 5 s came
closest (calm 42 / 0 / 8 %, angry 92 / 33 / 100 %).
"""


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    """One alert rule; see the module docstring for the firing and clearing semantics.

    ``roles``/``channels``: the rule applies to hops whose role is in ``roles`` and whose
    channel index is in ``channels``; an empty tuple means any. Times in seconds of audio.
    ``threshold`` and ``min_duration_s`` left unset (NaN) take the measured defaults of the
    rule's kind (:data:`DEFAULTS_BY_KIND`): emotion rules 0.4 for 2 s, arousal rules 0.8 for 5 s.
    """

    name: str = ""
    emotions: tuple[str, ...] = ()
    threshold: float = math.nan
    min_duration_s: float = math.nan
    combine: Literal["sum", "max"] = "sum"
    on: Literal["emotions", "arousal"] = "emotions"
    clear_threshold: float | None = None
    clear_after_s: float = 0.0
    max_gap_s: float = 2.0
    roles: tuple[str, ...] = ()
    channels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        threshold, min_duration_s = DEFAULTS_BY_KIND.get(self.on, DEFAULTS_BY_KIND["emotions"])
        if math.isnan(self.threshold):
            object.__setattr__(self, "threshold", threshold)
        if math.isnan(self.min_duration_s):
            object.__setattr__(self, "min_duration_s", min_duration_s)
        checks: list[tuple[bool, str, str]] = [
            (bool(self.name), "name", "is empty; give the rule a short name such as 'customer_angry'"),
            (self.on in ("emotions", "arousal"), "on", f"is {self.on!r}; expected 'emotions' or 'arousal'"),
            (
                self.on == "arousal" or len(self.emotions) > 0,
                "emotions",
                "is empty; list one or more emotions, e.g. ['angry'], or set on = 'arousal'",
            ),
            (
                self.on == "emotions" or not self.emotions,
                "emotions",
                f"is {list(self.emotions)} with on = 'arousal'; an arousal rule takes no emotions",
            ),
            (self.combine in COMBINE_MODES, "combine", f"is {self.combine!r}; expected 'sum' or 'max'"),
            (0.0 < self.threshold <= 2.0, "threshold", f"is {self.threshold}; expected a score above 0"),
            (self.min_duration_s >= 0, "min_duration_s", f"is {self.min_duration_s}; expected 0 s or more"),
            (self.clear_after_s >= 0, "clear_after_s", f"is {self.clear_after_s}; expected 0 s or more"),
            (self.max_gap_s > 0, "max_gap_s", f"is {self.max_gap_s}; expected more than 0 s"),
            (
                self.clear_threshold is None or 0.0 <= self.clear_threshold <= self.threshold,
                "clear_threshold",
                f"is {self.clear_threshold}; expected 0 to threshold ({self.threshold}) for hysteresis",
            ),
            (all(c >= 0 for c in self.channels), "channels", f"is {self.channels!r}; expected 0-based indices"),
        ]
        for ok, key, message in checks:
            if not ok:
                raise InvalidSettingError(key, message)

    @property
    def effective_clear_threshold(self) -> float:
        """The score below which an active rule clears."""
        return self.threshold if self.clear_threshold is None else self.clear_threshold

    def applies_to(self, channel: int, role: str) -> bool:
        """Whether this rule watches ``channel`` with ``role``."""
        return (not self.roles or role in self.roles) and (not self.channels or channel in self.channels)

    def score_of(self, hop: HopResult) -> float:
        """The rule's score on one hop: arousal, or its emotions' smoothed probabilities combined."""
        if self.on == "arousal":
            return 0.0 if hop.arousal is None else hop.arousal
        return self.score(hop.smoothed or {})

    def score(self, smoothed: dict[str, float]) -> float:
        """The rule's score on one hop's smoothed probabilities (missing labels count 0)."""
        values = [float(smoothed.get(e, 0.0)) for e in self.emotions]
        return sum(values) if self.combine == "sum" else max(values)


@dataclass(frozen=True)
class AlertEvent:
    """A rule firing (``state = "fired"``) or clearing (``"cleared"``) on one channel.

    ``t_start``: when the qualifying run (fired) or the below-clear run (cleared) began, s;
    ``t_end``: the hop that completed it, s. ``score``: the rule's score on that hop,
    ``peak``: the highest score during the run, ``scores``: the hop's smoothed probabilities.
    """

    rule: str
    state: Literal["fired", "cleared"]
    channel: int
    role: str
    t_start: float
    t_end: float
    emotions: tuple[str, ...]
    threshold: float
    score: float
    peak: float
    scores: dict[str, float]
    on: str = "emotions"
    source: str | None = None  # stamped by the Session: its source, session (or call) id, wall-clock time
    session_id: str | None = None
    wall_time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSONL ``alert`` record (also the command's stdin and the webhook body)."""
        return {
            "type": "alert",
            "source": self.source,
            "session_id": self.session_id,
            "time": self.wall_time,
            "rule": self.rule,
            "state": self.state,
            "channel": self.channel,
            "role": self.role,
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "on": self.on,
            "emotions": list(self.emotions),
            "threshold": self.threshold,
            "score": round(self.score, 4),
            "peak": round(self.peak, 4),
            "scores": {k: round(float(v), 4) for k, v in self.scores.items()},
        }


@dataclass
class _RuleState:
    active: bool = False
    run_start: float | None = None
    last_t: float | None = None
    peak: float = 0.0
    below_since: float | None = None


class AlertRules:
    """The rules with per-(rule, channel) state; owned by the processing thread."""

    def __init__(
        self, rules: Iterable[AlertRule], labels: Sequence[str] | None = None, *, hidden: Sequence[str] = ()
    ) -> None:
        """``labels``: the shown labels the rules' emotions must be among (None = no check); ``hidden``: the
        model's labels, when [labels] shows fewer, so that a rule naming a hidden one says how to fix it."""
        self.rules: tuple[AlertRule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"alert rule names must be unique; {duplicates} appear more than once")
        if labels is not None:
            for rule in self.rules:
                unknown = [e for e in rule.emotions if e not in labels]
                if unknown and set(unknown) <= set(hidden):
                    raise ConfigError(
                        f"alert rule {rule.name!r}: emotions {unknown} are not shown ([labels] show: "
                        f"{', '.join(labels)}); add them to [labels] show (or --labels), or drop them from the rule"
                    )
                if unknown:
                    raise ConfigError(
                        f"alert rule {rule.name!r}: emotions {unknown} are not labels of the model; "
                        f"known labels: {', '.join(labels)}"
                    )
        self._state: dict[tuple[str, int], _RuleState] = {}

    def reset(self) -> None:
        """Forget all runs and active alerts (a new stream)."""
        self._state.clear()

    def active(self, channel: int) -> tuple[str, ...]:
        """Names of the rules currently active (fired, not cleared) on ``channel``."""
        return tuple(r.name for r in self.rules if self._state.get((r.name, channel), _RuleState()).active)

    def process(self, hop: HopResult) -> list[AlertEvent]:
        """Update every rule that applies to the hop's channel; return the events it caused."""
        if hop.smoothed is None or not hop.is_speech or hop.uncertain:
            return []
        events: list[AlertEvent] = []
        for rule in self.rules:
            if rule.applies_to(hop.channel, hop.role):
                state = self._state.setdefault((rule.name, hop.channel), _RuleState())
                event = _step(rule, state, hop)
                if event is not None:
                    events.append(event)
        return events


def _step(rule: AlertRule, st: _RuleState, hop: HopResult) -> AlertEvent | None:
    score = rule.score_of(hop)
    t = hop.t_end
    gap = st.last_t is not None and t - st.last_t > rule.max_gap_s
    st.last_t = t
    if st.active:
        if score >= rule.effective_clear_threshold:
            st.below_since = None
            return None
        if st.below_since is None or gap:
            st.below_since = t
        if t - st.below_since < rule.clear_after_s:
            return None
        start, st.active, st.below_since, st.run_start = st.below_since, False, None, None
        return _event(rule, "cleared", hop, start=start, score=score, peak=st.peak)
    if score < rule.threshold:
        st.run_start = None
        return None
    if st.run_start is None or gap:
        st.run_start, st.peak = t, score
    st.peak = max(st.peak, score)
    if t - st.run_start < rule.min_duration_s:
        return None
    st.active, st.below_since = True, None
    return _event(rule, "fired", hop, start=st.run_start, score=score, peak=st.peak)


def _event(
    rule: AlertRule, state: Literal["fired", "cleared"], hop: HopResult, *, start: float, score: float, peak: float
) -> AlertEvent:
    return AlertEvent(
        rule=rule.name,
        state=state,
        channel=hop.channel,
        role=hop.role,
        t_start=start,
        t_end=hop.t_end,
        emotions=rule.emotions,
        on=rule.on,
        threshold=rule.threshold,
        score=score,
        peak=peak,
        scores=dict(hop.smoothed or {}),
    )
