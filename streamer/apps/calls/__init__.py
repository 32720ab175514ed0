"""Batch analysis of recorded calls (``emostream calls``): analysis, batch runner, reports, command.

Each call file (WAV/FLAC/OGG, any rate, G.711 WAV included; one party per channel) runs
through one session (:mod:`~emostream.apps.calls.analysis`); the batch runner
(:mod:`~emostream.apps.calls.batch`) handles worker processes, resume and progress (or Ray
tasks with ``--ray``: :mod:`~emostream.apps.calls.cluster`, imported only then); the
report writer (:mod:`~emostream.apps.calls.reports`) writes JSON, PNG and CSV. No audio is written.
"""

from emostream.apps.calls.analysis import CallAnalyzer, CallJob, ChannelRun
from emostream.apps.calls.batch import BatchOptions, BatchResult, find_calls, run_batch
from emostream.apps.calls.command import cmd_calls, register

__all__ = [
    "BatchOptions",
    "BatchResult",
    "CallAnalyzer",
    "CallJob",
    "ChannelRun",
    "cmd_calls",
    "find_calls",
    "register",
    "run_batch",
]
