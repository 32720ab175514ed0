"""Analysis of one recorded call: a file in, its summary (JSON-ready dict) and channel runs out.

The call is read in blocks of ``CHUNK_S`` seconds (memory does not grow with its length)
and fed to a :class:`~emostream.engine.session.Session` (the same resampling, pipelines,
alert rules and statistics as a live run), and summarised per channel from the session's statistics:
speech time, time and share per shown emotion, peaks, alerts and a coarse timeline.
Roles come from ``[[channels]]``; without them a stereo call is channel 0 =
``customer``, channel 1 = ``agent`` and a mono call is ``mixed``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.alerts.rules import AlertEvent
from emostream.audio.files import AudioBlocks
from emostream.config import Config
from emostream.engine.channels import ChannelPlan
from emostream.engine.events import HopResult
from emostream.engine.plan import make_plan
from emostream.engine.session import Session
from emostream.engine.stats import ChannelStats

STEREO_ROLES: tuple[str, ...] = ("customer", "agent")
MONO_ROLES: tuple[str, ...] = ("mixed",)
SUMMARY_VERSION = 2
CHUNK_S = 10.0


@dataclass(frozen=True)
class CallJob:
    """One input file and the name of its outputs (``OUT/<key>.json``)."""

    path: Path
    key: str


@dataclass
class ChannelRun:
    """One channel's results: its plan, statistics, every hop and its alert records."""

    plan: ChannelPlan
    stats: ChannelStats
    hops: list[HopResult]
    alerts: list[dict[str, Any]]


class CallAnalyzer:
    """Loads the model once and analyses call files with it (one per worker process)."""

    def __init__(self, cfg: Config, bin_s: float = 10.0, fingerprint: str = "") -> None:
        self.plan = make_plan(cfg)
        self.bin_s = bin_s
        self.fingerprint = fingerprint

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's labels."""
        return self.plan.labels

    def analyze(self, job: CallJob) -> tuple[dict[str, Any], list[ChannelRun]]:
        """Summary dict of one call (see :func:`summarize`) and its channel runs; AudioInputError if unreadable."""
        with AudioBlocks(job.path, CHUNK_S) as blocks:
            rate, n_channels = blocks.rate_in, blocks.channels
            defaults = STEREO_ROLES if n_channels == 2 else MONO_ROLES
            session = Session(
                self.plan,
                input_rate_hz=rate,
                channels=n_channels,
                default_roles=defaults,
                strict=False,
                source=f"file {job.path.name}",
                session_id=job.key,
            )
            pairs = zip(session.channel_plans, session.stats, strict=True)
            runs = [ChannelRun(plan=p, stats=s, hops=[], alerts=[]) for p, s in pairs]
            for block in blocks:
                collect_events(session.feed(block), runs)
            collect_events(session.flush(), runs)
        summary = summarize(job, rate, blocks.duration_s, runs, labels=self.labels, bin_s=self.bin_s)
        summary["model"] = self.plan.model_name
        summary["settings"] = self.fingerprint
        return summary, runs


def collect_events(events: Sequence[object], runs: Sequence[ChannelRun]) -> None:
    """File each hop and alert of ``events`` under its channel's run (what the summary is built from)."""
    for event in events:
        if isinstance(event, HopResult):
            runs[event.channel].hops.append(event)
        elif isinstance(event, AlertEvent):
            runs[event.channel].alerts.append(event.to_dict())


def summarize(
    job: CallJob,
    rate_hz: int,
    duration_s: float,
    runs: Sequence[ChannelRun],
    *,
    labels: Sequence[str],
    bin_s: float,
) -> dict[str, Any]:
    """The call's summary JSON: input identity (for resume), duration and one entry per channel."""
    stat = job.path.stat()
    identity = {"path": str(job.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return call_summary(job.key, identity, rate_hz, duration_s, runs, labels=labels, bin_s=bin_s)


def call_summary(
    key: str,
    identity: dict[str, Any],
    rate_hz: int,
    duration_s: float,
    runs: Sequence[ChannelRun],
    *,
    labels: Sequence[str],
    bin_s: float,
) -> dict[str, Any]:
    """A call's summary JSON from any source: ``identity`` describes the input (a file, a live stream)."""
    return {
        "version": SUMMARY_VERSION,
        "call": key,
        "input": identity,
        "rate_hz": rate_hz,
        "duration_s": round(duration_s, 3),
        "channels": [_channel_summary(run, labels, bin_s, duration_s) for run in runs],
    }


def _channel_summary(run: ChannelRun, labels: Sequence[str], bin_s: float, duration_s: float) -> dict[str, Any]:
    stats = run.stats
    peaks = {k: {"score": round(p.score, 4), "t": round(p.t_s, 3)} for k, p in stats.peaks.items()}
    hop_s = stats.hop_s
    emotion_s = stats.emotion_seconds
    total = sum(emotion_s.values())
    shares = {k: v / total for k, v in emotion_s.items()} if total > 0 else {}
    return {
        "channel": run.plan.index,
        "role": run.plan.role,
        "name": run.plan.name,
        "analysed": run.plan.analysed,
        "speech_s": round(stats.speech_seconds, 3),
        "emotion_s": {k: round(v, 3) for k, v in emotion_s.items()},
        "shares": {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
        "dominant": max(shares, key=lambda k: shares[k]) if shares else None,
        "peaks": peaks,
        "alerts": run.alerts,
        "timeline": _timeline(run.hops, labels, bin_s, duration_s, hop_s=hop_s, analysed=run.plan.analysed),
    }


def _timeline(
    hops: Sequence[HopResult], labels: Sequence[str], bin_s: float, duration_s: float, *, hop_s: float, analysed: bool
) -> list[dict[str, Any]]:
    """Bins of ``bin_s`` seconds: speech time, the most shown emotion and mean smoothed scores."""
    n_bins = max(1, math.ceil(duration_s / bin_s))
    ends = [h.t_end for h in hops]  # increasing
    bins: list[dict[str, Any]] = []
    for b in range(n_bins):
        lo, hi = b * bin_s, min((b + 1) * bin_s, duration_s)
        first = bisect.bisect_right(ends, lo)
        last = len(hops) if b == n_bins - 1 else bisect.bisect_right(ends, hi)
        inside = hops[first:last]
        entry: dict[str, Any] = {"t_start": round(lo, 3), "t_end": round(hi, 3)}
        entry["speech_s"] = round(sum(h.speech_ratio for h in inside) * hop_s, 3)
        if analysed:
            shown = [h.emotion for h in inside if h.is_speech and h.emotion is not None]
            # most shown; a tie goes to the label shown last (max keeps the first maximum it meets).
            # Not max(set(...)): set order follows string hashing, which differs between processes.
            entry["emotion"] = max(reversed(shown), key=shown.count) if shown else None
            speech = [h.smoothed for h in inside if h.is_speech and h.smoothed is not None]
            entry["scores"] = {k: round(float(np.mean([s[k] for s in speech])), 4) for k in labels} if speech else None
        bins.append(entry)
    return bins
