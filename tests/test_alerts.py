"""Alert rules on synthetic score sequences, and the dispatcher against local command/HTTP targets."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emostream import schema
from emostream.alerts.delivery import AlertDelivery, AlertDispatcher, AlertOutput
from emostream.alerts.rules import AlertEvent, AlertRule, AlertRules
from emostream.engine.channels import ChannelPlan
from emostream.engine.events import HopResult
from emostream.engine.stats import ChannelStats
from emostream.errors import ConfigError

HOP_S = 0.5


def hop(i: int, angry: float | None, *, channel: int = 0, role: str = "customer", sad: float = 0.0) -> HopResult:
    """Hop ``i`` (t_end = 2 + i * 0.5 s); ``angry=None`` is a hop without speech."""
    t_end = 2.0 + i * HOP_S
    smoothed = None if angry is None else {"neutral": max(0.0, 1 - angry - sad), "angry": angry, "sad": sad}
    return HopResult(
        t_start=t_end - 2.0,
        t_end=t_end,
        speech_ratio=0.0 if angry is None else 1.0,
        is_speech=angry is not None,
        scores=smoothed,
        smoothed=smoothed,
        emotion=None,
        confidence=None,
        latency_ms=1.0,
        channel=channel,
        role=role,
    )


def run(rules: AlertRules, angry: list[float | None], **kw) -> list[tuple[int, AlertEvent]]:
    out = []
    for i, a in enumerate(angry):
        out.extend((i, e) for e in rules.process(hop(i, a, **kw)))
    return out


ANGRY = AlertRule(name="angry", emotions=("angry",), threshold=0.6, min_duration_s=5.0, clear_threshold=0.4)


def test_fires_once_after_min_duration_and_clears_below_clear_threshold():
    rules = AlertRules([ANGRY])
    #        0..11 above (11 hops after the first = 5.5 s), then in the hysteresis band, then below.
    seq: list[float | None] = [0.7] * 12 + [0.5] * 4 + [0.3] + [0.7] * 3
    events = run(rules, seq)
    assert [(i, e.state) for i, e in events] == [(10, "fired"), (16, "cleared")]
    fired = events[0][1]
    assert fired.t_start == 2.0 and fired.t_end == 2.0 + 10 * HOP_S  # span = 5.0 s
    assert fired.score == pytest.approx(0.7) and fired.peak == pytest.approx(0.7)
    record = fired.to_dict()
    assert record["type"] == "alert" and record["rule"] == "angry" and record["channel"] == 0
    assert record["role"] == "customer" and record["scores"]["angry"] == 0.7
    assert json.loads(json.dumps(record)) == record


def test_no_refire_until_cleared_then_refires():
    rules = AlertRules([ANGRY])
    # Fires at hop 10; dips to 0.5 (above clear 0.4) do not re-arm; only a drop below 0.4 does.
    seq: list[float | None] = [0.7] * 11 + [0.5, 0.7, 0.5] + [0.7] * 12 + [0.2] + [0.7] * 11
    events = run(rules, seq)
    assert [(i, e.state) for i, e in events] == [(10, "fired"), (26, "cleared"), (37, "fired")]
    assert rules.active(0) == ("angry",)


def test_run_broken_by_low_score_restarts():
    rules = AlertRules([ANGRY])
    seq: list[float | None] = [0.7] * 10 + [0.59] + [0.7] * 10
    assert run(rules, seq) == []
    assert rules.active(0) == ()


def test_short_silence_keeps_run_long_silence_restarts_it():
    rules = AlertRules([ANGRY])
    # A 1 s pause (two silent hops) inside the run keeps it; the run spans t_end 2.0 .. 7.0.
    seq: list[float | None] = [0.7] * 5 + [None, None] + [0.7] * 4
    assert [(i, e.state) for i, e in run(rules, seq)] == [(10, "fired")]
    rules.reset()
    # A 3 s pause (> max_gap_s = 2 s) restarts it: no alert within the same number of hops.
    seq = [0.7] * 5 + [None] * 6 + [0.7] * 5
    assert run(rules, seq) == []


def test_clear_after_s_needs_sustained_low_score():
    rule = AlertRule(name="a", emotions=("angry",), threshold=0.6, min_duration_s=1.0, clear_after_s=2.0)
    rules = AlertRules([rule])
    seq: list[float | None] = [0.8] * 3 + [0.1] * 3 + [0.8] + [0.1] * 5
    events = run(rules, seq)
    # Fires at hop 2 (span 1 s); the first low run (hops 3-5, 1 s) is too short; the second
    # (hops 7..11) clears at hop 11, 2 s after hop 7.
    assert [(i, e.state) for i, e in events] == [(2, "fired"), (11, "cleared")]
    assert events[1][1].t_start == 2.0 + 7 * HOP_S


def test_sum_and_max_combine_several_emotions():
    both = {"angry": 0.35, "sad": 0.35}
    summed = AlertRule(name="s", emotions=("angry", "sad"), threshold=0.6, min_duration_s=0.0)
    maxed = AlertRule(name="m", emotions=("angry", "sad"), threshold=0.6, min_duration_s=0.0, combine="max")
    assert summed.score(both) == pytest.approx(0.7)
    assert maxed.score(both) == pytest.approx(0.35)
    rules = AlertRules([summed, maxed])
    events = rules.process(hop(0, 0.35, sad=0.35))
    assert [e.rule for e in events] == ["s"]


def test_roles_and_channels_scope_rules_with_state_per_channel():
    rule = AlertRule(name="c", emotions=("angry",), threshold=0.6, min_duration_s=1.0, roles=("customer",))
    rules = AlertRules([rule])
    assert run(rules, [0.9] * 5, channel=1, role="agent") == []
    events = run(rules, [0.9] * 5, channel=0, role="customer")
    assert [(i, e.channel) for i, e in events] == [(2, 0)]
    assert rules.active(0) == ("c",) and rules.active(1) == ()
    only_ch2 = AlertRules([AlertRule(name="x", emotions=("angry",), min_duration_s=0.0, channels=(2,))])
    assert run(only_ch2, [0.9], channel=0) == []
    assert len(run(only_ch2, [0.9], channel=2)) == 1


def test_rule_validation_names_the_key():
    with pytest.raises(ConfigError, match="clear_threshold"):
        AlertRule(name="a", emotions=("angry",), threshold=0.5, clear_threshold=0.7)
    with pytest.raises(ConfigError, match="combine"):
        AlertRule(name="a", emotions=("angry",), combine="mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="emotions"):
        AlertRule(name="a", emotions=())
    with pytest.raises(ConfigError, match="colour is not a known key"):
        schema.build(AlertRule, {"name": "a", "emotions": ["angry"], "colour": "red"}, "[[alerts]]")
    with pytest.raises(ConfigError, match="unique"):
        AlertRules([ANGRY, ANGRY])
    rule = schema.build(AlertRule, {"name": "a", "emotions": "sad", "roles": ["customer"], "min_duration_s": 3}, "x")
    assert rule.emotions == ("sad",) and rule.roles == ("customer",) and rule.min_duration_s == 3
    with pytest.raises(ConfigError, match="webhook"):
        AlertOutput(webhook="ftp://x")


# ---- dispatcher -------------------------------------------------------------------------------


class _Server:
    """A local HTTP server on 127.0.0.1 (ephemeral port) with a programmable handler."""

    def __init__(self, status: int = 200, gate: threading.Event | None = None, hold_s: float = 30.0) -> None:
        self.status = status
        self.gate = gate
        self.hold_s = hold_s
        self.bodies: list[dict] = []
        self.requests = 0
        self.first_request = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                with server.lock:
                    server.requests += 1
                server.first_request.set()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if server.gate is not None:
                    server.gate.wait(server.hold_s)
                if server.status == 200:
                    with server.lock:
                        server.bodies.append(json.loads(body))
                try:
                    self.send_response(server.status)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory() -> Iterator:
    servers: list[_Server] = []

    def make(**kw) -> _Server:
        servers.append(_Server(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


def _fired(i: int = 0, channel: int = 0) -> AlertEvent:
    rules = AlertRules([AlertRule(name=f"r{i}", emotions=("angry",), min_duration_s=0.0)])
    return rules.process(hop(i, 0.9, channel=channel))[0]


def test_good_webhook_receives_the_alert_json(server_factory):
    srv = server_factory()
    dispatcher = AlertDispatcher(AlertOutput(webhook=srv.url, timeout_s=5.0))
    events = [_fired(i) for i in range(3)]
    assert all(dispatcher.submit(e) for e in events)
    assert dispatcher.close(timeout=10.0)
    assert srv.bodies == [e.to_dict() for e in events]
    assert (dispatcher.stats.delivered, dispatcher.stats.failed, dispatcher.stats.dropped) == (3, 0, 0)


def test_slow_webhook_never_blocks_submit_and_queue_bounds_hold(server_factory):
    gate = threading.Event()
    srv = server_factory(gate=gate)
    dispatcher = AlertDispatcher(AlertOutput(webhook=srv.url, timeout_s=30.0, retries=0, queue_size=5))
    assert dispatcher.submit(_fired(0))
    assert srv.first_request.wait(10.0)  # the worker is now stuck in the slow POST
    # The audio path keeps going: 200 hops' worth of alerts all return while the server hangs.
    results = [dispatcher.submit(_fired(i + 1)) for i in range(200)]
    assert len(results) == 200
    assert results.count(True) == 5 and results.count(False) == 195
    assert dispatcher.stats.submitted == 201 and dispatcher.stats.dropped == 195
    assert not gate.is_set()  # every submit above returned before the server answered once
    gate.set()
    assert dispatcher.close(timeout=10.0)
    assert dispatcher.stats.delivered == 6 and srv.requests == 6
    assert [b["rule"] for b in srv.bodies] == ["r0", "r1", "r2", "r3", "r4", "r5"]


def test_webhook_timeout_is_retried_then_counted_as_failed(server_factory):
    gate = threading.Event()
    srv = server_factory(gate=gate, hold_s=5.0)
    dispatcher = AlertDispatcher(AlertOutput(webhook=srv.url, timeout_s=0.2, retries=1, backoff_s=0.01))
    assert dispatcher.submit(_fired())
    assert dispatcher.close(timeout=10.0)
    assert dispatcher.stats.failed == 1 and dispatcher.stats.delivered == 0
    assert dispatcher.stats.attempts == 2 and srv.requests == 2
    assert "timed out" in dispatcher.stats.errors[-1]


def test_failing_webhook_is_retried_with_backoff(server_factory):
    srv = server_factory(status=500)
    dispatcher = AlertDispatcher(AlertOutput(webhook=srv.url, timeout_s=5.0, retries=2, backoff_s=0.01))
    for i in range(2):
        assert dispatcher.submit(_fired(i))
    assert dispatcher.close(timeout=10.0)
    assert srv.requests == 6 and dispatcher.stats.attempts == 6
    assert dispatcher.stats.failed == 2 and dispatcher.stats.delivered == 0
    assert "500" in dispatcher.stats.errors[-1]


def test_command_gets_alert_json_on_stdin(tmp_path: Path):
    out = tmp_path / "alerts.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    dispatcher = AlertDispatcher(AlertOutput(command=(sys.executable, "-c", script), timeout_s=20.0))
    events = [_fired(0, channel=1), _fired(1, channel=1)]
    for e in events:
        assert dispatcher.submit(e)
    assert dispatcher.close(timeout=60.0)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [e.to_dict() for e in events]
    assert dispatcher.stats.delivered == 2


def test_failing_command_is_counted_not_raised():
    dispatcher = AlertDispatcher(
        AlertOutput(command=(sys.executable, "-c", "raise SystemExit(3)"), timeout_s=20.0, retries=1, backoff_s=0.0)
    )
    assert dispatcher.submit(_fired())
    assert dispatcher.close(timeout=60.0)
    assert dispatcher.stats.failed == 1 and dispatcher.stats.attempts == 2


def test_cleared_events_are_only_delivered_when_asked(server_factory):
    srv = server_factory()
    rules = AlertRules([AlertRule(name="a", emotions=("angry",), min_duration_s=0.0)])
    fired = rules.process(hop(0, 0.9))[0]
    cleared = rules.process(hop(1, 0.1))[0]
    assert cleared.state == "cleared"
    quiet = AlertDispatcher(AlertOutput(webhook=srv.url))
    assert quiet.submit(fired) and not quiet.submit(cleared)
    assert quiet.close(timeout=10.0)
    chatty = AlertDispatcher(AlertOutput(webhook=srv.url, notify_clear=True))
    assert chatty.submit(cleared)
    assert chatty.close(timeout=10.0)
    assert [b["state"] for b in srv.bodies] == ["fired", "cleared"]
    assert not chatty.submit(fired)  # closed dispatchers refuse new work


def test_rules_are_checked_against_the_model_labels():
    with pytest.raises(ConfigError, match="furious"):
        AlertRules([AlertRule(name="x", emotions=("furious",))], labels=("neutral", "angry"))
    assert AlertRules([ANGRY], labels=("neutral", "angry")).rules == (ANGRY,)


def test_channel_statistics_follow_the_alert_events_of_their_channel():
    rule = AlertRule(name="a", emotions=("angry",), min_duration_s=0.5, clear_threshold=0.3)
    rules = AlertRules([rule])
    stats = [
        ChannelStats(ChannelPlan(i, "customer", f"c{i}", True), ("neutral", "angry", "sad"), HOP_S) for i in (0, 1)
    ]
    emitted: list[AlertEvent] = []

    def feed(h: HopResult) -> None:
        stats[h.channel].on_hop(h)
        for event in rules.process(h):
            stats[event.channel].on_alert(event)
            emitted.append(event)

    feed(hop(0, 0.9, channel=1))
    feed(hop(0, 0.1, channel=0))
    assert emitted == [] and stats[1].active_alerts == ()
    feed(hop(1, 0.9, channel=1))
    assert [e.state for e in emitted] == ["fired"] and emitted[0].channel == 1
    assert stats[1].active_alerts == ("a",) and stats[1].alerts_fired == 1 and stats[0].active_alerts == ()
    feed(hop(2, 0.2, channel=1))
    assert [e.state for e in emitted] == ["fired", "cleared"]
    assert stats[1].active_alerts == () and stats[1].summary().alerts == 1


def test_delivery_observer_submits_only_alert_events(tmp_path: Path):
    out = tmp_path / "delivered.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    delivery = AlertDelivery(AlertOutput(command=(sys.executable, "-c", script)))
    fired = AlertEvent("a", "fired", 0, "customer", 1.0, 6.0, ("angry",), 0.6, 0.8, 0.9, {"angry": 0.8})
    delivery.on_event(hop(0, 0.9))
    delivery.on_event(fired)
    delivery.on_end(object())
    assert delivery.dispatcher.stats.delivered == 1
    assert [json.loads(line)["rule"] for line in out.read_text().splitlines()] == ["a"]


def test_arousal_rule_fires_on_sustained_agitation_and_uncertain_hops_never_fire():
    rule = AlertRule(name="agitated", on="arousal", threshold=0.8, min_duration_s=1.0)
    rules = AlertRules([rule], labels=("neutral", "angry", "sad"))

    def aroused(i: int, value: float, *, uncertain: bool = False) -> HopResult:
        return dataclasses.replace(hop(i, 0.5), arousal=value, uncertain=uncertain)

    assert [e for i in range(3) for e in rules.process(aroused(i, 0.9, uncertain=True))] == []  # never on uncertain
    events = [e for i in range(3, 6) for e in rules.process(aroused(i, 0.9))]
    assert [(e.state, e.on, e.t_start, e.t_end) for e in events] == [("fired", "arousal", 3.5, 4.5)]
    assert events[0].to_dict()["on"] == "arousal" and events[0].score == pytest.approx(0.9)
    with pytest.raises(ConfigError, match="an arousal rule takes no emotions"):
        AlertRule(name="x", on="arousal", emotions=("angry",))
    with pytest.raises(ConfigError, match="or set on = 'arousal'"):
        AlertRule(name="x")


def test_unset_threshold_and_duration_take_the_measured_defaults_of_the_rules_kind() -> None:
    from emostream.alerts.rules import DEFAULTS_BY_KIND

    emotion = AlertRule(name="a", emotions=("angry",))
    arousal = AlertRule(name="b", on="arousal")
    assert (emotion.threshold, emotion.min_duration_s) == DEFAULTS_BY_KIND["emotions"] == (0.4, 2.0)
    assert (arousal.threshold, arousal.min_duration_s) == DEFAULTS_BY_KIND["arousal"] == (0.8, 5.0)
    given = AlertRule(name="c", on="arousal", threshold=0.9, min_duration_s=1.0)
    assert (given.threshold, given.min_duration_s) == (0.9, 1.0)
    with pytest.raises(ConfigError, match="clear_threshold"):  # checked against the resolved threshold
        AlertRule(name="d", emotions=("angry",), clear_threshold=0.5)
