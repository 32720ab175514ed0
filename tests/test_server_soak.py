"""A short soak of ``emostream serve`` under unauthenticated idle sockets (benchmarks/serve_soak.py, issue 18).

60 idle sockets without a token (silent TCP, an upgrade request sent a byte a second,
``/twilio`` sending ``connected`` every second) are kept open while 4 real Twilio-format
calls stream in real time: every real call must complete (close 1000), no audio dropped,
every idle socket closed within its 2 s deadline (plus 1 s), no traceback in the log.
The full soak (2 min, 200 sockets, 20 calls): ``python -m benchmarks.serve_soak``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from benchmarks.serve_soak import parser, run

pytestmark = pytest.mark.slow


def test_real_calls_go_on_while_idle_sockets_are_closed_at_their_deadline() -> None:
    argv = "--seconds 20 --baseline-seconds 0 --after-seconds 0 --idle 60 --calls 4 --call-seconds 6 --deadline 2"
    args = parser().parse_args(argv.split())
    out = run(args)
    (attack,) = out["phases"]
    assert attack["calls_completed"] >= 8 and attack["calls_failed"] == []
    assert attack["dropped_audio_s"] == 0
    lifetimes = attack["idle_lifetimes"]
    assert set(lifetimes) == {"silent", "dribble", "twilio_no_token"}
    assert all(k["closed"] >= 5 and k["within_deadline"] for k in lifetimes.values()), lifetimes
    assert out["tracebacks_in_log"] == 0
