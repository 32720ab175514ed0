"""The analysis worker of ``emostream serve`` alone: CPU per call-second of calls fed as the server feeds them.

The call is ``bench_serve``'s (the demo as a two-party call, customer on the inbound track,
agent on the outbound one, 8 kHz μ-law, 20 ms per track and message), given to
:class:`~emostream.server.analysis.CallAnalysis` objects without the event loop or the load
client. Each request is answered as a worker answers it (``feed_published``: the events, their
records and JSON text):

* ``--mode per-hop`` (the server since issue 16's second round): one request when the next hop
  can come out (each reply says at which input total);
* ``--mode trickle`` (the server before): a request at each window's end, then every 20 ms
  message alone until the hop comes out (soxr's output blocks hold it back up to 104 ms).

How the requests come (issue 16's eleventh round; per-hop only):

* ``--calls N``: N calls, call ``i`` starting ``i / 10`` s after the first (``bench_serve``'s
  arrivals), their requests interleaved in the order their audio would arrive; at 50 calls on
  two workers a worker holds 25;
* ``--pace tight`` (default): each request right after the previous one; ``--pace real``: each
  at the time its last 20 ms message would arrive, sleeping in between, as a worker of the
  server gets them;
* ``--gap-ms G`` (tight, direct): G ms of sleep before each request (``--spin``: of busy waiting
  instead), only the requests' own CPU time counted (``time.thread_time`` around each): the same
  work, back to back or after a pause;
* ``--via direct`` (default): in this process (CPU: user + sys of this process,
  ``time.process_time``); ``--via pool``: through a one-worker
  :class:`~emostream.server.pool.ProcessPool` (pickled requests and replies on its pipes), CPU of
  the worker process from ``/proc``.

``python -m benchmarks.serve_worker [--model fast] [--mode per-hop] [--seconds 120] [--calls 1]
[--pace tight] [--via direct]`` prints the CPU time per second of call audio analysed and the
requests per call-second, after one warm-up pass (one call, tight, in the process that
measures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_serve import ARRIVALS_PER_S, call_audio
from emostream.apps.threads import bound_math_threads
from emostream.config import Config, apply_overrides
from emostream.engine.plan import SessionPlan, make_plan
from emostream.server.analysis import CallAnalysis, CallSpec, Chunk

RATE_HZ = 8000
MESSAGE_FRAMES = 160  # 20 ms


def call_spec(index: int = 0) -> CallSpec:
    """The spec of benchmark call ``index`` (a Twilio call, two μ-law tracks at 8 kHz)."""
    return CallSpec(f"MZworker{index:04d}", "twilio", RATE_HZ, 2, ("customer", "agent"), "mulaw", True, {})


def message_chunks(tracks: dict[str, bytes], start: int, end: int) -> list[Chunk]:
    """The 20 ms messages (one byte string per track) of input frames ``start`` to ``end``."""
    inbound, outbound = tracks["inbound"], tracks["outbound"]
    step = MESSAGE_FRAMES
    return [(inbound[p : p + step], outbound[p : p + step]) for p in range(start, end, step)]


def feed_call(plan: SessionPlan, tracks: dict[str, bytes], mode: str) -> list[tuple[int, int]]:
    """Analyse one call as the server feeds it in ``mode``; returns each request's input frames ``(start, end)``."""
    inbound = tracks["inbound"]
    analysis = CallAnalysis(plan, call_spec(), 10.0)
    due = round(plan.timing.window_times_s(0)[1] * RATE_HZ)
    position, start = 0, 0
    requests: list[tuple[int, int]] = []
    while position < len(inbound):
        position = min(position + MESSAGE_FRAMES, len(inbound))
        if position < due:
            continue
        published, next_hop_frames = analysis.feed_published(message_chunks(tracks, start, position))
        requests.append((start, position))
        start = position
        if mode == "per-hop":
            due = max(due, next_hop_frames)
            continue
        ends = [t_end for _, _, _, t_end, alert in published if alert is None]  # the hops' window ends
        if ends:  # trickle: the next window's end; until the hop is out, every message goes alone
            due = max(due, round((max(ends) + plan.timing.hop_s) * RATE_HZ))
    analysis.finish({}, flush=True)
    return requests


@dataclass(frozen=True)
class Request:
    """One feed of the interleaved calls: when its audio is complete (s after the first call started), whose, what."""

    at_s: float
    call: int
    chunks: list[Chunk]
    audio_s: float


def interleaved(tracks: dict[str, bytes], bounds: list[tuple[int, int]], calls: int) -> list[Request]:
    """The requests of ``calls`` calls that start ``1 / ARRIVALS_PER_S`` s apart, in the order they fall due.

    Every call is the same audio, so each has the request boundaries ``bounds`` (input frames) of one call."""
    chunks = [message_chunks(tracks, start, end) for start, end in bounds]
    requests = [
        Request(i / ARRIVALS_PER_S + end / RATE_HZ, i, chunks[k], (end - start) / RATE_HZ)
        for i in range(calls)
        for k, (start, end) in enumerate(bounds)
    ]
    return sorted(requests, key=lambda r: (r.at_s, r.call))


def run_direct(plan: SessionPlan, requests: list[Request], calls: int, real: bool) -> float:
    """Feed ``requests`` in this process (sleeping until each one's time when ``real``); CPU seconds (user + sys)."""
    analyses = [CallAnalysis(plan, call_spec(i), 10.0) for i in range(calls)]
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    for request in requests:
        if real and (wait := started_wall + request.at_s - time.perf_counter()) > 0:
            time.sleep(wait)
        analyses[request.call].feed_published(request.chunks)
    return time.process_time() - started_cpu


def run_gaps(plan: SessionPlan, requests: list[Request], calls: int, gap_s: float, spin: bool) -> float:
    """Feed ``requests`` with a pause of ``gap_s`` before each (a sleep, or busy waiting when ``spin``);
    the CPU seconds of the feeds alone (this thread's, around each)."""
    analyses = [CallAnalysis(plan, call_spec(i), 10.0) for i in range(calls)]
    cpu_s = 0.0
    for request in requests:
        if spin:
            until = time.perf_counter() + gap_s
            while time.perf_counter() < until:
                pass
        else:
            time.sleep(gap_s)
        started = time.thread_time()
        analyses[request.call].feed_published(request.chunks)
        cpu_s += time.thread_time() - started
    return cpu_s


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_pool(cfg: Config, warm_up: list[Request], requests: list[Request], calls: int, real: bool) -> float:
    """Feed ``requests`` through a one-worker ProcessPool (after a tight warm-up pass); the worker's CPU seconds."""
    from emostream.server.pool import ProcessPool

    pool = ProcessPool(cfg, 1)
    try:
        await pool.wait_ready()
        pid = pool._workers[0].process.pid  # a benchmark reads the worker's /proc entry
        if pid is None:
            raise RuntimeError("the analysis worker did not start")
        await pool.open(call_spec(calls))
        await asyncio.gather(*(pool.feed_soon(call_spec(calls).call_id, r.chunks) for r in warm_up))
        for i in range(calls):
            await pool.open(call_spec(i))
        loop = asyncio.get_running_loop()
        started_cpu, started = process_cpu_s(pid), loop.time()
        futures = []
        for request in requests:
            if real and (wait := started + request.at_s - loop.time()) > 0:
                await asyncio.sleep(wait)
            futures.append(pool.feed_soon(call_spec(request.call).call_id, request.chunks))
        await asyncio.gather(*futures)
        return process_cpu_s(pid) - started_cpu
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_worker", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="fast", help="model name or .json path (default fast)")
    parser.add_argument("--mode", choices=("per-hop", "trickle"), default="per-hop")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of call (default 120)")
    parser.add_argument("--calls", type=int, default=1, help="calls interleaved, 0.1 s apart (default 1; per-hop)")
    parser.add_argument("--pace", choices=("tight", "real"), default="tight", help="requests back to back or in time")
    parser.add_argument("--via", choices=("direct", "pool"), default="direct", help="this process or a pool worker")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause before each request (tight, direct)")
    parser.add_argument("--spin", action="store_true", help="with --gap-ms: busy-wait the pause instead of sleeping")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    if args.mode == "trickle" and (args.calls > 1 or args.pace == "real" or args.via == "pool"):
        parser.error("--mode trickle runs one call, tight, in this process")
    if args.gap_ms < 0 or (args.gap_ms and (args.pace == "real" or args.via == "pool" or args.mode == "trickle")):
        parser.error("--gap-ms is a pause (>= 0 ms) between per-hop requests sent tight, in this process")
    bound_math_threads()  # as `emostream serve` does for its workers (one BLAS thread; the voice encoders' products)
    cfg = apply_overrides(Config(), {"model": {"name": args.model}})
    plan = make_plan(cfg)
    tracks = call_audio(args.seconds)
    bounds = feed_call(plan, tracks, args.mode)  # warm-up; its request boundaries are every call's
    label = f"{args.model} {args.mode}"
    if args.mode == "trickle":
        started = time.process_time()
        n_requests = len(feed_call(plan, tracks, args.mode))
        cpu_s, audio_s = time.process_time() - started, args.seconds
    else:
        requests = interleaved(tracks, bounds, args.calls)
        real, gap = args.pace == "real", ""
        if args.via == "pool":
            cpu_s = asyncio.run(run_pool(cfg, interleaved(tracks, bounds, 1), requests, args.calls, real))
        elif args.gap_ms:
            cpu_s = run_gaps(plan, requests, args.calls, args.gap_ms / 1000, args.spin)
            gap = f", {args.gap_ms:g} ms {'busy-waited' if args.spin else 'slept'} before each request (feeds only)"
        else:
            cpu_s = run_direct(plan, requests, args.calls, real)
        n_requests, audio_s = len(requests), sum(r.audio_s for r in requests)
        label += f", {args.calls} call(s), {args.pace}, {args.via}{gap}"
    print(
        f"{label}: {cpu_s / audio_s:.5f} CPU s per call-second, "
        f"{n_requests / audio_s:.1f} requests per call-second ({audio_s:g} s of call, load {os.getloadavg()[0]:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
