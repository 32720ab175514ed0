"""The event loop's own work per Twilio media message: WebSocket frame to the call's queued audio, alone.

One process, no sockets: uvicorn's protocol as ``emostream serve`` runs it
(:class:`~emostream.server.wsframes.FastFrameProtocol`) on a fake transport, the ``/twilio``
media receiver, the track aligner and a :class:`~emostream.server.calls.Call` whose analysis
pool answers at once with no events (so requests are counted, not analysed). ``--calls`` calls'
frames arrive interleaved, two tracks per 20 ms as ``bench_serve`` sends them, each read
holding one call's pair of messages (as the server reads them on loopback).

``python -m benchmarks.twilio_path [--calls 50] [--seconds 20] [--rounds 7]`` prints the CPU
time (``time.process_time``) per media message, the median, the least and each round, and the requests
sent. Paired runs of two checkouts compare the media path without the server's other work.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from benchmarks.bench_serve import call_audio, ws_frame
from emostream.config import Config, apply_overrides
from emostream.engine.plan import make_plan
from emostream.server.analysis import CallSpec, Chunk, FeedResult
from emostream.server.calls import CallRegistry
from emostream.server.config import ServerConfig
from emostream.server.events import EventHub
from emostream.server.metrics import ServerMetrics
from emostream.server.streams import _media_receiver
from emostream.server.twilio import TrackAligner, stream_messages
from emostream.server.wsframes import RECEIVER_EXTENSION, FastFrameProtocol

HANDSHAKE = (
    b"GET /twilio HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)


class _AnsweringPool:
    """An analysis pool that answers every feed at once: no events, the next hop 0.5 s further on."""

    ordered = True

    def __init__(self) -> None:
        self.requests = 0
        self.frames: dict[str, int] = {}

    def _result(self, call_id: str, chunks: Sequence[Chunk]) -> FeedResult:
        self.requests += 1
        n = self.frames.get(call_id, 0) + sum(len(c[0]) if isinstance(c, tuple) else len(c) for c in chunks)
        self.frames[call_id] = n
        return FeedResult([], n + 4000)

    async def open(self, spec: CallSpec) -> list[dict[str, Any]]:
        return [{"channel": i, "role": r, "name": r, "analysed": i == 0} for i, r in enumerate(spec.default_roles)]

    def feed_soon(self, call_id: str, chunks: Sequence[Chunk]) -> asyncio.Future[tuple[list[Any], int]]:
        """The pool's call since the tenth round: (events as published, next hop's input total)."""
        future: asyncio.Future[tuple[list[Any], int]] = asyncio.get_running_loop().create_future()
        fed = self._result(call_id, chunks)
        future.set_result((fed.events, fed.next_hop_frames))
        return future

    async def feed(self, call_id: str, chunks: Sequence[Chunk]) -> FeedResult:
        """The pool's call before the tenth round (to run this harness on an earlier checkout)."""
        return self._result(call_id, chunks)

    async def finish(self, call_id: str, extra: dict[str, Any], flush: bool) -> tuple[list[Any], dict[str, Any]]:
        return [], {"duration_s": 0.0, **extra}

    def close(self) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await asyncio.Event().wait()


async def _round(n_calls: int, seconds: float, reads: list[bytes], pool: _AnsweringPool) -> tuple[float, int]:
    """CPU seconds to take ``n_calls`` calls' ``reads`` (one call's pair of messages each) and the messages taken."""
    loop = asyncio.get_running_loop()
    plan = make_plan(apply_overrides(Config(), {"model": {"name": "fast"}}))
    registry = CallRegistry(plan, ServerConfig(), hub=EventHub(1000), metrics=ServerMetrics(), pool=pool)  # type: ignore[arg-type]
    config = uvicorn.Config(_app, ws_max_size=65536, log_level="critical")
    config.load()
    protos, calls = [], []
    for i in range(n_calls):
        proto = FastFrameProtocol(config, ServerState(), {}, loop)
        proto.connection_made(_Transport())  # type: ignore[arg-type]
        proto.data_received(HANDSHAKE)
        for _ in range(5):
            await asyncio.sleep(0)
        spec = CallSpec(f"MZpath{i}", "twilio", 8000, 2, ("customer", "agent"), "mulaw", True, {})
        call = await registry.open(spec, lambda code, reason: None)
        proto.scope["extensions"][RECEIVER_EXTENSION]["set"](  # type: ignore[index]
            _media_receiver(call, TrackAligner(("inbound", "outbound")))
        )
        protos.append(proto)
        calls.append(call)
    messages = 0
    started = time.process_time()
    for read in reads:
        for proto in protos:
            proto.data_received(read)
            messages += 2
        await asyncio.sleep(0)  # one turn of the loop per 20 ms of every call: requests go, replies come
    cpu_s = time.process_time() - started
    for proto in protos:
        for task in list(proto.tasks):
            task.cancel()
    for call in calls:
        await registry.end(call, "stop")
    return cpu_s, messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.twilio_path", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    _, frames, _ = stream_messages(call_audio(args.seconds), stream_sid="MZbench")
    reads = [b"".join(ws_frame(text.encode()) for text in group) for group in frames]
    per_message = []
    for _ in range(args.rounds):
        pool = _AnsweringPool()
        cpu_s, messages = asyncio.run(_round(args.calls, args.seconds, reads, pool))
        per_message.append(1e6 * cpu_s / messages)
    print(
        f"media path: {statistics.median(per_message):.2f} us CPU per message, least {min(per_message):.2f} "
        f"(median of {args.rounds} rounds: "
        + " ".join(f"{v:.2f}" for v in per_message)
        + f"), {pool.requests} requests per round"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
