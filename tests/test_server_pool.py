"""The analysis worker pool under an event loop that makes its readers non-blocking (uvloop does)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from emostream.audio.codecs import mulaw_encode
from emostream.config import Config, apply_overrides
from emostream.server.analysis import CallSpec
from emostream.server.pool import ProcessPool

uvloop = pytest.importorskip("uvloop", reason="uvloop (an optional speed-up of the server's event loop) is missing")
pytest.importorskip("starlette", reason="the [server] extra is not installed")

pytestmark = pytest.mark.slow


def _spec(call_id: str) -> CallSpec:
    return CallSpec(
        call_id=call_id,
        source="ingest",
        rate_hz=8000,
        channels=1,
        default_roles=("customer",),
        encoding="mulaw",
        per_track=False,
        identity={"call_id": call_id},
    )


def _run(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(make())


def test_many_large_requests_in_flight_reach_the_worker_and_come_back(model_arg: str) -> None:
    """Requests pile up in the request pipe (far more than its 64 kB buffer) while the loop reads replies.

    With one duplex pipe, uvloop's reader switched the shared file to non-blocking mode and the
    sender thread's writes failed once the pipe was full: the worker's calls stalled for good.
    """
    cfg = apply_overrides(Config(), {"model": {"name": model_arg}})
    tone = (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 220 / 8000)).astype(np.float32)
    second = mulaw_encode(tone).tobytes()  # 1 s of 8 kHz μ-law: 8 kB per request

    async def scenario() -> list[int]:
        pool = ProcessPool(cfg, 1)
        try:
            await pool.wait_ready()
            calls = [f"pool-{i}" for i in range(4)]
            for call in calls:
                await pool.open(_spec(call))
            feeds = [pool.feed(call, [second]) for _ in range(40) for call in calls]  # 1.3 MB at once
            results = await asyncio.wait_for(asyncio.gather(*feeds), 120)
            finished = [await pool.finish(call, {}, True) for call in calls]
            return [len(events) for events in results] + [len(summary) for _, summary in finished]
        finally:
            pool.close()

    counts = _run(scenario)
    assert len(counts) == 164 and sum(counts[:160]) >= 4 * 70  # every request answered, hops for each call
