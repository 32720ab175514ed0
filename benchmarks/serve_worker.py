"""The analysis worker of ``emostream serve`` alone: CPU per call-second of one call fed as the server feeds it.

The call is ``bench_serve``'s (the demo as a two-party call, customer on the inbound track,
agent on the outbound one, 8 kHz μ-law, 20 ms per track and message), given to one
:class:`~emostream.server.analysis.CallAnalysis` in this process, without the event loop, the
pipes or other calls:

* ``--mode per-hop`` (the server since issue 16's second round): one request when the next hop
  can come out (each reply says at which input total);
* ``--mode trickle`` (the server before): a request at each window's end, then every 20 ms
  message alone until the hop comes out (soxr's output blocks hold it back up to 104 ms).

``python -m benchmarks.serve_worker [--model fast] [--mode per-hop] [--seconds 120]`` prints the
CPU time (user + sys of this process, ``time.process_time``) per second of call and the
requests per second of call, after one warm-up pass.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.bench_serve import call_audio
from emostream.apps.threads import bound_math_threads
from emostream.config import Config, apply_overrides
from emostream.engine.events import HopResult
from emostream.engine.plan import SessionPlan, make_plan
from emostream.server.analysis import CallAnalysis, CallSpec

RATE_HZ = 8000
MESSAGE_FRAMES = 160  # 20 ms


def feed_call(plan: SessionPlan, tracks: dict[str, bytes], mode: str) -> int:
    """Analyse one call as the server feeds it in ``mode``; returns the number of requests."""
    inbound, outbound = tracks["inbound"], tracks["outbound"]
    spec = CallSpec("MZworker", "twilio", RATE_HZ, 2, ("customer", "agent"), "mulaw", True, {})
    analysis = CallAnalysis(plan, spec, 10.0)
    due = round(plan.timing.window_times_s(0)[1] * RATE_HZ)
    position, requests = 0, 0
    chunks: list[tuple[bytes, bytes]] = []
    while position < len(inbound):
        end = position + MESSAGE_FRAMES
        chunks.append((inbound[position:end], outbound[position:end]))
        position = end
        if position < due:
            continue
        fed = analysis.feed(chunks)
        chunks, requests = [], requests + 1
        if mode == "per-hop":
            due = max(due, fed.next_hop_frames)
            continue
        ends = [e.t_end for e in fed.events if isinstance(e, HopResult)]
        if ends:  # trickle: the next window's end; until the hop is out, every message goes alone
            due = max(due, round((max(ends) + plan.timing.hop_s) * RATE_HZ))
    analysis.finish({}, flush=True)
    return requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_worker", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="fast", help="model name or .json path (default fast)")
    parser.add_argument("--mode", choices=("per-hop", "trickle"), default="per-hop")
    parser.add_argument("--seconds", type=float, default=120.0, help="seconds of call (default 120)")
    args = parser.parse_args(argv)
    bound_math_threads()  # as `emostream serve` does for its workers (one BLAS thread; the voice encoders' products)
    plan = make_plan(apply_overrides(Config(), {"model": {"name": args.model}}))
    tracks = call_audio(args.seconds)
    feed_call(plan, tracks, args.mode)  # warm-up
    started = time.process_time()
    requests = feed_call(plan, tracks, args.mode)
    cpu_s = time.process_time() - started
    print(
        f"{args.model} {args.mode}: {cpu_s / args.seconds:.5f} CPU s per call-second, "
        f"{requests / args.seconds:.1f} requests per call-second ({args.seconds:g} s of call)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
