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

from emostream.engine.events import HopResult
from emostream.engine.plan import SessionPlan
from emostream.engine.session import Session
from emostream.server.analysis import CallSpec, Chunk, Published
from emostream.server.calls import CallRegistry
from emostream.server.config import ServerConfig
from emostream.server.events import EventHub
from emostream.server.metrics import ServerMetrics
from emostream.server.pool import ThreadPool

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
