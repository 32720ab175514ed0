"""Alert rules on smoothed emotion scores, and their non-blocking delivery.

:class:`AlertRules` runs in the processing thread: ``process(hop)`` takes each channel's
:class:`~emostream.engine.events.HopResult` and returns the :class:`AlertEvent` values that hop
caused. A rule's *score* on a hop is the smoothed probability of its emotion, or, for
several emotions, their **sum** (``combine = "sum"``, the default: "angry or disgusted")
or their **max** (``combine = "max"``: "the strongest of them").

Firing: a rule fires once when its score has stayed ``>= threshold`` on consecutive
speech hops whose ``t_end`` values span at least ``min_duration_s`` (the span runs from
the ``t_end`` of the first qualifying hop to that of the current hop; with 0.5 s hops, 5 s
takes 11 hops). Hops without speech (``smoothed`` None or ``is_speech`` False) neither
extend nor break the run, unless the silence gap exceeds ``max_gap_s``, which restarts it.

Clearing (hysteresis): a fired rule stays *active* and cannot fire again until its score
has been ``< clear_threshold`` (default: ``threshold``) on speech hops spanning at least
``clear_after_s`` (0 = the first such hop clears it). Clearing emits an event with
``state = "cleared"``.

:class:`AlertDispatcher` hands events to an optional command (the alert JSON on stdin)
and/or an HTTP webhook (JSON POST) from one worker thread behind a bounded queue:
``submit()`` never blocks (a full queue drops the event and counts it), and delivery
failures are logged and counted, never raised into the audio path.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import shlex
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from emostream.engine.events import HopResult
from emostream.errors import ConfigError

log = logging.getLogger(__name__)

COMBINE_MODES: tuple[str, ...] = ("sum", "max")


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    """One alert rule; see the module docstring for the firing and clearing semantics.

    ``roles``/``channels``: the rule applies to hops whose role is in ``roles`` and whose
    channel index is in ``channels``; an empty tuple means any. Times in seconds of audio.
    """

    name: str
    emotions: tuple[str, ...]
    threshold: float = 0.6
    min_duration_s: float = 5.0
    combine: Literal["sum", "max"] = "sum"
    clear_threshold: float | None = None
    clear_after_s: float = 0.0
    max_gap_s: float = 2.0
    roles: tuple[str, ...] = ()
    channels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        problem = rule_problem(self)
        if problem is not None:
            key, message = problem
            raise ConfigError(f"alert rule {self.name!r}: {key} {message}")

    @property
    def effective_clear_threshold(self) -> float:
        """The score below which an active rule clears."""
        return self.threshold if self.clear_threshold is None else self.clear_threshold

    def applies_to(self, channel: int, role: str) -> bool:
        """Whether this rule watches ``channel`` with ``role``."""
        return (not self.roles or role in self.roles) and (not self.channels or channel in self.channels)

    def score(self, smoothed: dict[str, float]) -> float:
        """The rule's score on one hop's smoothed probabilities (missing labels count 0)."""
        values = [float(smoothed.get(e, 0.0)) for e in self.emotions]
        return sum(values) if self.combine == "sum" else max(values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertRule:
        """Build from a TOML ``[[alerts]]`` table (lists become tuples; a single emotion may be a string)."""
        values = dict(data)
        for key in ("emotions", "roles", "channels"):
            if isinstance(values.get(key), str):
                values[key] = (values[key],)
            elif isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"[[alerts]] {unknown[0]} is not a known key; known keys: {', '.join(sorted(known))}")
        if "name" not in values or "emotions" not in values:
            raise ConfigError("[[alerts]] needs a name and emotions, e.g. name = 'angry', emotions = ['angry']")
        return cls(**values)


def rule_problem(rule: Any) -> tuple[str, str] | None:
    """The first invalid setting of an :class:`AlertRule`-like object as (key, message), or None.

    Shared with the config loader, whose ``[[alerts]]`` tables have the same keys.
    """
    checks: list[tuple[bool, str, str]] = [
        (
            all(isinstance(e, str) for e in rule.emotions),
            "emotions",
            f"is {rule.emotions!r}; expected emotion names such as ['angry', 'disgust']",
        ),
        (all(isinstance(r, str) for r in rule.roles), "roles", f"is {rule.roles!r}; expected role names"),
        (
            all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in rule.channels),
            "channels",
            f"is {rule.channels!r}; expected 0-based channel indices",
        ),
        (bool(rule.name), "name", "is empty; give the rule a short name such as 'customer_angry'"),
        (len(rule.emotions) > 0, "emotions", "is empty; list one or more emotions, e.g. ['angry']"),
        (rule.combine in COMBINE_MODES, "combine", f"is {rule.combine!r}; expected 'sum' or 'max'"),
        (0.0 < rule.threshold <= 2.0, "threshold", f"is {rule.threshold}; expected a score above 0"),
        (rule.min_duration_s >= 0, "min_duration_s", f"is {rule.min_duration_s}; expected 0 s or more"),
        (rule.clear_after_s >= 0, "clear_after_s", f"is {rule.clear_after_s}; expected 0 s or more"),
        (rule.max_gap_s > 0, "max_gap_s", f"is {rule.max_gap_s}; expected more than 0 s"),
        (
            rule.clear_threshold is None or 0.0 <= rule.clear_threshold <= rule.threshold,
            "clear_threshold",
            f"is {rule.clear_threshold}; expected 0 to threshold ({rule.threshold}) for hysteresis",
        ),
    ]
    for ok, key, message in checks:
        if not ok:
            return key, message
    return None


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

    def to_json(self) -> dict[str, Any]:
        """The JSONL ``alert`` record (also the command's stdin and the webhook body)."""
        return {
            "type": "alert",
            "rule": self.rule,
            "state": self.state,
            "channel": self.channel,
            "role": self.role,
            "t_start": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
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

    def __init__(self, rules: Iterable[AlertRule], labels: Sequence[str] | None = None) -> None:
        self.rules: tuple[AlertRule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"alert rule names must be unique; {duplicates} appear more than once")
        if labels is not None:
            for rule in self.rules:
                unknown = [e for e in rule.emotions if e not in labels]
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
        if hop.smoothed is None or not hop.is_speech:
            return []
        events: list[AlertEvent] = []
        for rule in self.rules:
            if rule.applies_to(hop.channel, hop.role):
                state = self._state.setdefault((rule.name, hop.channel), _RuleState())
                event = _step(rule, state, hop, hop.smoothed)
                if event is not None:
                    events.append(event)
        return events


def _step(rule: AlertRule, st: _RuleState, hop: HopResult, smoothed: dict[str, float]) -> AlertEvent | None:
    score = rule.score(smoothed)
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
        threshold=rule.threshold,
        score=score,
        peak=peak,
        scores=dict(hop.smoothed or {}),
    )


@dataclass(frozen=True, kw_only=True)
class AlertOutput:
    """Where fired alerts go besides the JSONL stream.

    ``command``: program run per alert with the alert JSON on stdin (a string is split
    shell-style, no shell is used); ``webhook``: http(s) URL receiving a JSON POST;
    ``timeout_s`` per attempt; ``retries`` extra attempts after a failure, waiting
    ``backoff_s * 2**k`` between them; ``queue_size`` alerts waiting at most (more are
    dropped and counted); ``notify_clear`` also delivers ``cleared`` events.
    """

    command: str | tuple[str, ...] | None = None
    webhook: str | None = None
    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    queue_size: int = 100
    notify_clear: bool = False

    def __post_init__(self) -> None:
        problem = output_problem(self)
        if problem is not None:
            raise ConfigError(f"[alerts_output] {problem[0]} {problem[1]}")

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere to deliver alerts."""
        return bool(self.command) or self.webhook is not None

    def argv(self) -> list[str] | None:
        """The command as an argument list, or None."""
        if not self.command:
            return None
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


def output_problem(out: Any) -> tuple[str, str] | None:
    """The first invalid setting of an :class:`AlertOutput`-like object as (key, message), or None."""
    checks: list[tuple[bool, str, str]] = [
        (
            out.webhook is None or str(out.webhook).startswith(("http://", "https://")),
            "webhook",
            f"is {out.webhook!r}; expected an http:// or https:// URL",
        ),
        (
            out.command is None or isinstance(out.command, str) or all(isinstance(a, str) for a in out.command),
            "command",
            f"is {out.command!r}; expected a command line or a list of arguments",
        ),
        (out.timeout_s > 0, "timeout_s", f"is {out.timeout_s}; expected more than 0 s"),
        (0 <= out.retries <= 10, "retries", f"is {out.retries}; expected 0 to 10"),
        (out.backoff_s >= 0, "backoff_s", f"is {out.backoff_s}; expected 0 s or more"),
        (1 <= out.queue_size <= 100000, "queue_size", f"is {out.queue_size}; expected 1 to 100000"),
    ]
    for ok, key, message in checks:
        if not ok:
            return key, message
    return None


@dataclass
class DispatchStats:
    """Counters of an :class:`AlertDispatcher` (read them after ``close()`` for exact values)."""

    submitted: int = 0
    dropped: int = 0
    delivered: int = 0
    failed: int = 0
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


_STOP = object()


class AlertDispatcher:
    """Delivers alert events from a bounded queue on one daemon worker thread."""

    def __init__(self, output: AlertOutput) -> None:
        self.output = output
        self.stats = DispatchStats()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=output.queue_size)
        self._abort = threading.Event()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
        self._worker.start()

    def submit(self, event: AlertEvent) -> bool:
        """Queue ``event`` for delivery without blocking; False if it was dropped (queue full or closed)."""
        if self._closed or (event.state == "cleared" and not self.output.notify_clear):
            return False
        self.stats.submitted += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 100 == 0:  # no log flood in the audio path
                log.warning(
                    "alert queue full (%d): dropped %s alert on channel %d (%d dropped so far)",
                    self.output.queue_size,
                    event.rule,
                    event.channel,
                    self.stats.dropped,
                )
            return False
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued, waiting at most ``timeout`` s; True if the worker finished."""
        if not self._closed:
            self._closed = True
            self._put_stop(timeout)
        self._worker.join(timeout)
        if self._worker.is_alive():
            self._abort.set()  # give up pending retries; the daemon thread ends after its current attempt
            return False
        return True

    def _put_stop(self, timeout: float) -> None:
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            self._abort.set()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._abort.is_set():
                return
            if isinstance(item, AlertEvent):
                self._deliver(item)

    def _deliver(self, event: AlertEvent) -> None:
        body = json.dumps(event.to_json()).encode("utf-8")
        targets: list[tuple[str, Callable[[], None]]] = []
        argv = self.output.argv()
        if argv:
            targets.append(("command", lambda: self._run_command(argv, body)))
        if self.output.webhook is not None:
            url = self.output.webhook
            targets.append(("webhook", lambda: self._post(url, body)))
        ok = all([self._with_retries(name, action) for name, action in targets])
        if ok:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1

    def _with_retries(self, name: str, action: Callable[[], None]) -> bool:
        for attempt in range(self.output.retries + 1):
            if attempt and self._abort.wait(self.output.backoff_s * 2 ** (attempt - 1)):
                return False
            self.stats.attempts += 1
            try:
                action()
                return True
            except (OSError, http.client.HTTPException, subprocess.SubprocessError, ValueError) as exc:
                message = f"alert {name} attempt {attempt + 1}/{self.output.retries + 1} failed: {exc}"
                log.warning(message)
                self.stats.errors = [*self.stats.errors[-9:], message]
        return False

    def _run_command(self, argv: Sequence[str], body: bytes) -> None:
        subprocess.run(argv, input=body, timeout=self.output.timeout_s, check=True, capture_output=True)

    def _post(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "emostream"}
        )
        with urllib.request.urlopen(request, timeout=self.output.timeout_s) as response:
            response.read()


class AlertTarget(Protocol):
    """What :class:`AlertMonitor` updates per channel (a ChannelPipeline has these attributes)."""

    channel: int
    active_alerts: tuple[str, ...]
    alerts_fired: int


class AlertMonitor:
    """Runs the rules on each block's hops in the processing thread (``Engine(on_hops=monitor)``).

    Every event goes to ``emit`` (e.g. ``JsonlSink.write`` of ``event.to_json()``) and to the
    dispatcher; each target's ``active_alerts`` (shown by the dashboard) and ``alerts_fired``
    (the session summary's count) are kept current. Nothing here blocks on delivery.
    """

    def __init__(
        self,
        rules: AlertRules,
        targets: Sequence[AlertTarget] = (),
        *,
        dispatcher: AlertDispatcher | None = None,
        emit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.rules = rules
        self.targets = {t.channel: t for t in targets}
        self.dispatcher = dispatcher
        self.emit = emit
        self.events: list[AlertEvent] = []

    def __call__(self, hops: Sequence[HopResult]) -> None:
        """Process one block's hops."""
        for hop in hops:
            for event in self.rules.process(hop):
                self._handle(event)

    def _handle(self, event: AlertEvent) -> None:
        self.events.append(event)
        if self.emit is not None:
            self.emit(event.to_json())
        if self.dispatcher is not None:
            self.dispatcher.submit(event)
        target = self.targets.get(event.channel)
        if target is not None:
            target.active_alerts = self.rules.active(event.channel)
            if event.state == "fired":
                target.alerts_fired += 1

    def close(self, timeout: float = 5.0) -> None:
        """Deliver queued alerts (at most ``timeout`` s) and report drops/failures via logging."""
        if self.dispatcher is None:
            return
        finished = self.dispatcher.close(timeout)
        stats = self.dispatcher.stats
        if not finished or stats.dropped or stats.failed:
            log.warning(
                "alert delivery: %d delivered, %d failed, %d dropped (queue full)%s",
                stats.delivered,
                stats.failed,
                stats.dropped,
                "" if finished else ", gave up waiting for the rest",
            )


def build_monitor(
    rules: Sequence[AlertRule],
    output: AlertOutput,
    labels: Sequence[str],
    targets: Sequence[AlertTarget],
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> AlertMonitor | None:
    """An :class:`AlertMonitor` for ``rules`` (None without rules); a dispatcher only if ``output`` has a target."""
    if not rules:
        return None
    dispatcher = AlertDispatcher(output) if output.enabled else None
    return AlertMonitor(AlertRules(rules, labels), targets, dispatcher=dispatcher, emit=emit)
