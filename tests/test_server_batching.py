"""How a live call's audio reaches its analysis: one request per hop, at the input total the hop needs.

Twilio sends 20 ms per track and message. The analysis resamples 8 kHz to 16 kHz with soxr,
which gives its output in blocks (104 ms of audio), so a window's end arriving is not yet its
hop: the session says at which input total its next hop comes out, and the call sends its
audio then, in one request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette")

from test_server_support import ANGRY, fast_plan, mulaw_clip

from emostream.alerts.rules import AlertEvent
from emostream.engine.events import HopResult
from emostream.engine.plan import SessionPlan
from emostream.engine.session import Session
from emostream.server.analysis import CallSpec, Chunk, Published, PublishedEvent, publishable
from emostream.server.calls import CallRegistry
from emostream.server.config import ServerConfig
from emostream.server.events import EventHub
from emostream.server.metrics import ServerMetrics
from emostream.server.pool import AnalysisError, ThreadPool

__all__ = ["fast_plan"]
FRAME = 160  # 20 ms of 8 kHz audio: one Twilio media message


def test_the_session_says_at_which_input_total_its_next_hop_comes_out(fast_plan: SessionPlan) -> None:
    """One frame short of the total: no hop; at the total: the hop, for any chunking (8 kHz stereo)."""
    rng = np.random.default_rng(7)
    session = Session(fast_plan, input_rate_hz=8000, channels=2, default_roles=("customer", "agent"))
    audio = np.repeat((0.2 * rng.standard_normal(8000 * 12)).astype(np.float32)[:, None], 2, axis=1)
    for _ in range(20):
        need = session.input_frames_for_next_hop()
        assert need > session.input_frames
        while session.input_frames < need - 1:
            n = min(int(rng.integers(1, 2000)), need - 1 - session.input_frames)
            start = session.input_frames
            assert not [e for e in session.feed(audio[start : start + n]) if isinstance(e, HopResult)]
        start = session.input_frames
        hops = [e for e in session.feed(audio[start : start + 1]) if isinstance(e, HopResult)]
        assert {h.channel for h in hops} == {0, 1}


class CountingPool(ThreadPool):
    """The thread pool, counting each feed request and the hops it brought."""

    def __init__(self, plan: SessionPlan) -> None:
        super().__init__(plan, 10.0)
        self.feeds: list[tuple[int, int]] = []  # (frames sent, hops back)

    def feed_soon(self, call_id: str, chunks: Sequence[Chunk]) -> asyncio.Future[Published]:
        future = super().feed_soon(call_id, chunks)
        frames = sum(len(c[0]) if isinstance(c, tuple) else len(c) for c in chunks)

        def count(done: asyncio.Future[Published]) -> None:
            events, _ = done.result()
            self.feeds.append((frames, sum(record["type"] == "hop" for record, *_ in events)))

        future.add_done_callback(count)
        return future


def test_a_call_paced_like_twilio_sends_its_audio_once_per_hop(fast_plan: SessionPlan) -> None:
    """20 ms messages, each analysed before the next arrives (the analysis keeps up): one request per hop,
    each bringing the hops of both channels; before, every message after a window's end went on its own."""
    codes = mulaw_clip(ANGRY, 8.0)

    async def scenario() -> tuple[CountingPool, int]:
        pool = CountingPool(fast_plan)
        hub = EventHub(10000)
        records = hub.subscribe()
        registry = CallRegistry(fast_plan, ServerConfig(), hub=hub, metrics=ServerMetrics(), pool=pool)
        spec = CallSpec("MZbatch", "twilio", 8000, 2, ("customer", "agent"), "mulaw", True, {})
        call = await registry.open(spec, lambda code, reason: None)
        for i in range(0, len(codes), FRAME):
            chunk = codes[i : i + FRAME]
            call.push((chunk, chunk), len(chunk))
            await _settled(call)
        pool.feeds.append((-1, -1))  # the end: what follows is the flush
        await registry.end(call, "stop")
        pool.close()
        hops = 0
        while not records.queue.empty():
            hops += '"type":"hop"' in records.queue.get_nowait()
        return pool, hops

    pool, hops_published = asyncio.run(scenario())
    during = pool.feeds[: pool.feeds.index((-1, -1))]
    hop_pairs = sum(h for _, h in during) // 2
    assert hop_pairs >= 14  # 8 s of audio: hops every 0.5 s from 1 s on, both channels
    assert len(during) <= hop_pairs + 1  # the first request goes at the window's end, before soxr's block
    assert all(h in (0, 2) for _, h in during)
    assert hops_published >= sum(h for _, h in during)  # every hop reached the hub (and the flush's last ones)


async def _settled(call: Any) -> None:
    """Wait until the call has nothing due and no request under way."""
    for _ in range(2000):
        if not call._inflight and not call._due():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the call's analysis did not settle")


def test_a_feed_is_published_as_the_records_and_json_the_event_loop_made_before() -> None:
    """The worker makes each hop's and alert's record (its ``--jsonl`` record plus ``call_id``) and that record's
    JSON text; other events are not published. The alert keeps its event (the alert delivery takes it)."""
    hop = HopResult(
        t_start=0.5, t_end=2.123456, speech_ratio=0.61234, is_speech=True, scores={"angry": np.float32(0.712345)},
        smoothed={"angry": 0.6}, emotion="angry", confidence=0.7123456, latency_ms=1.23456, channel=1,
        role="agent", arousal=0.8, source="twilio", session_id="MZ1", wall_time="2026-12-04T12:00:00.000+00:00",
    )  # fmt: skip
    alert = AlertEvent(
        rule="angry", state="fired", channel=1, role="agent", t_start=0.5, t_end=2.0, emotions=("angry",),
        threshold=0.5, score=0.71234, peak=0.8, scores={"angry": 0.71234},
    )  # fmt: skip
    published = publishable([hop, "not published", alert], "MZ1")
    assert len(published) == 2
    for (record, text, is_speech, t_end, event), source in zip(published, (hop, alert), strict=True):
        assert record == {**source.to_dict(), "call_id": "MZ1"}
        assert text == EventHub.encode({**source.to_dict(), "call_id": "MZ1"})
        assert t_end == source.t_end and is_speech is (source is hop)
        assert event is (None if source is hop else alert)


class HeldPool:
    """An ordered analysis pool whose replies the test gives, in any order: each feed's future is kept."""

    ordered = True

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Published]] = []
        self.finished: list[bool] = []

    async def open(self, spec: CallSpec) -> list[dict[str, Any]]:
        return [{"channel": 0, "role": "customer", "name": "customer", "analysed": True}]

    async def feed(self, call_id: str, chunks: Sequence[Chunk]) -> Published:
        return await self.feed_soon(call_id, chunks)

    def feed_soon(self, call_id: str, chunks: Sequence[Chunk]) -> asyncio.Future[Published]:
        self.futures.append(asyncio.get_running_loop().create_future())
        return self.futures[-1]

    async def finish(self, call_id: str, extra: dict[str, Any], flush: bool) -> tuple[list[Any], dict[str, Any]]:
        self.finished.append(flush)
        return [], {"call": call_id, "duration_s": 3.0, **extra}

    def close(self) -> None:
        pass


def _hop_item(t_end: float) -> PublishedEvent:
    record = {"type": "hop", "channel": 0, "t_end": t_end, "emotion": "calm", "uncertain": False, "call_id": "MZheld"}
    return record, EventHub.encode(record), True, t_end, None


def _held_spec() -> CallSpec:
    """A one-track 8 kHz mu-law Twilio call, as the held-pool tests open it."""
    return CallSpec("MZheld", "twilio", 8000, 1, ("customer",), "mulaw", True, {})


def _held_call(plan: SessionPlan, pool: HeldPool, stops: list[tuple[int, str]]) -> tuple[CallRegistry, EventHub, Any]:
    hub = EventHub(1000)
    server = ServerConfig(max_backlog_s=10.0)
    registry = CallRegistry(plan, server, hub=hub, metrics=ServerMetrics(), pool=pool)  # type: ignore[arg-type]
    return registry, hub, lambda code, reason: stops.append((code, reason))


async def _open_held_call(
    plan: SessionPlan, pool: HeldPool, stops: list[tuple[int, str]]
) -> tuple[CallRegistry, Any, Any]:
    """A registry on ``pool``, a subscriber to its records (opened first) and the call it opened."""
    registry, hub, stop = _held_call(plan, pool, stops)
    records = hub.subscribe()
    return registry, records, await registry.open(_held_spec(), stop)


def test_replies_that_come_back_out_of_order_are_published_in_the_order_sent(fast_plan: SessionPlan) -> None:
    """Three requests under way (1 s of audio each); the replies resolve last first: the records still
    come out in the order the audio was sent, and only once the first reply is in."""

    async def scenario() -> tuple[list[str], list[str], int]:
        pool = HeldPool()
        stops: list[tuple[int, str]] = []
        registry, records, call = await _open_held_call(fast_plan, pool, stops)
        second = b"\xff" * 8000
        for _ in range(3):
            call.push((second,), len(second))
        sent = len(pool.futures)
        for k in (2, 1):
            pool.futures[k].set_result(([_hop_item(float(k + 1))], 8000 * (k + 2)))
        await asyncio.sleep(0)
        early = [records.queue.get_nowait() for _ in range(records.queue.qsize())]
        pool.futures[0].set_result(([_hop_item(1.0)], 16000))
        await registry.end(call, "stop")
        texts = [records.queue.get_nowait() for _ in range(records.queue.qsize())]
        return early, [t for t in texts if '"type":"hop"' in t], sent

    early, hops, sent = asyncio.run(scenario())
    assert sent == 3
    assert [t for t in early if '"type":"hop"' in t] == []
    assert hops == [_hop_item(t)[1] for t in (1.0, 2.0, 3.0)]


def test_an_analysis_error_ends_the_call_and_drops_the_requests_after_it(fast_plan: SessionPlan) -> None:
    """The first of two requests is refused: the call's connection is closed with 1007 and the message, the
    second request's reply (already in) is not published, and the call's end asks for no flush."""

    async def scenario() -> tuple[list[tuple[int, str]], list[str], list[bool], str]:
        pool = HeldPool()
        stops: list[tuple[int, str]] = []
        registry, records, call = await _open_held_call(fast_plan, pool, stops)
        second = b"\xff" * 8000
        call.push((second,), len(second))
        call.push((second,), len(second))
        pool.futures[1].set_result(([_hop_item(2.0)], 24000))
        pool.futures[0].set_exception(AnalysisError("samples are not finite"))
        await asyncio.sleep(0)
        summary = await registry.end(call, "stop")
        texts = [records.queue.get_nowait() for _ in range(records.queue.qsize())]
        return stops, texts, pool.finished, summary["end_reason"]

    stops, texts, finished, end_reason = asyncio.run(scenario())
    assert stops == [(1007, "samples are not finite")]
    assert not [t for t in texts if '"type":"hop"' in t]
    assert finished == [False]
    assert end_reason == "error: samples are not finite"


def test_a_bug_while_publishing_a_reply_comes_out_when_the_call_ends(fast_plan: SessionPlan) -> None:
    """An unexpected error in a reply's callback is not lost in the event loop's log: ending the call raises it."""

    async def scenario() -> None:
        pool = HeldPool()
        registry, _, stop = _held_call(fast_plan, pool, [])
        call = await registry.open(_held_spec(), stop)
        call.push((b"\xff" * 8000,), 8000)
        pool.futures[0].set_result(([("not", "a", "record")], 16000))  # type: ignore[list-item]
        await asyncio.sleep(0)
        await registry.end(call, "stop")

    with pytest.raises(ValueError, match="unpack"):
        asyncio.run(scenario())
