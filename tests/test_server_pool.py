"""The analysis worker pool under an event loop that makes its readers non-blocking (uvloop does)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from emostream.audio.codecs import mulaw_encode
from emostream.config import Config, apply_overrides
from emostream.server.analysis import CallSpec
from emostream.server.pool import AnalysisError, NoWorkerError, ProcessPool

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
            return [len(events) for events, _ in results] + [len(summary) for _, summary in finished]
        finally:
            pool.close()

    counts = _run(scenario)
    assert len(counts) == 164 and sum(counts[:160]) >= 4 * 70  # every request answered, hops for each call


def test_a_worker_that_stops_is_started_again_and_takes_new_calls(model_arg: str) -> None:
    """SIGKILL a worker: its call fails with AnalysisError, new calls are refused while none runs,
    then a new process takes its place and analyses new calls."""
    cfg = apply_overrides(Config(), {"model": {"name": model_arg}})
    tone = (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 220 / 8000)).astype(np.float32)
    second = mulaw_encode(tone).tobytes()
    restarts: list[float] = []

    async def scenario() -> tuple[str, str, int, int]:
        loop = asyncio.get_running_loop()
        pool = ProcessPool(cfg, 1, on_restart=lambda: restarts.append(loop.time()))
        try:
            await pool.wait_ready()
            await pool.open(_spec("before"))
            await pool.feed("before", [second])
            os.kill(pool._workers[0].process.pid, signal.SIGKILL)
            with pytest.raises(AnalysisError) as lost:
                await asyncio.wait_for(pool.feed("before", [second] * 5), 30)
            with pytest.raises(NoWorkerError) as refused:
                await pool.open(_spec("while-down"))
            deadline = loop.time() + 120
            while not restarts and loop.time() < deadline:
                await asyncio.sleep(0.1)
            await pool.open(_spec("after"))
            events, _ = await asyncio.wait_for(pool.feed("after", [second] * 3), 30)
            return str(lost.value), str(refused.value), len(events), pool.running
        finally:
            pool.close()

    lost, refused, n_events, running = _run(scenario)
    assert "analysis worker 0 stopped" in lost
    assert "no analysis worker is running" in refused
    assert len(restarts) == 1 and running == 1
    assert n_events > 0  # the new process analyses


def test_requests_queued_within_the_flush_delay_reach_the_worker_in_one_message(model_arg: str) -> None:
    """Feeds of four calls queued over several turns of the loop (each turn reads other sockets) go to the
    worker as one message: one wake-up of the worker for the calls whose hops fall due together."""
    cfg = apply_overrides(Config(), {"model": {"name": model_arg}})
    second = mulaw_encode((0.3 * np.sin(np.arange(8000) * 2 * np.pi * 220 / 8000)).astype(np.float32)).tobytes()

    async def scenario() -> tuple[list[int], int]:
        pool = ProcessPool(cfg, 1)
        try:
            await pool.wait_ready()
            calls = [f"flush-{i}" for i in range(4)]
            for call in calls:
                await pool.open(_spec(call))
            worker = pool._workers[0]
            sizes: list[int] = []
            flush = worker._flush

            def counting_flush() -> None:
                sizes.append(len(worker._batch))
                flush()

            worker._flush = counting_flush  # type: ignore[method-assign]
            feeds = []
            for call in calls:  # one feed per turn of the loop, as calls' audio arrives on their own sockets
                feeds.append(pool.feed_soon(call, [second]))
                await asyncio.sleep(0)
            results = await asyncio.wait_for(asyncio.gather(*feeds), 60)
            return sizes, len(results)
        finally:
            pool.close()

    sizes, answered = _run(scenario)
    assert answered == 4
    assert sizes == [4]  # one message of four requests (call_soon per turn made four of one)
