"""One call's analysis: its :class:`~emostream.engine.session.Session`, the channel runs, the summary.

A :class:`CallAnalysis` is owned by one analysis worker (a thread of the server, or a
worker process: :mod:`emostream.server.pool`) and used by one request at a time. It takes
the call's audio as it arrived (encoded bytes: decoding happens here, off the event
loop), returns the events, and at the end flushes and builds the summary in the format of
``emostream calls`` (:func:`emostream.apps.calls.analysis.call_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.alerts.rules import AlertEvent
from emostream.apps.calls.analysis import ChannelRun, call_summary, collect_events
from emostream.audio.codecs import decode_raw
from emostream.engine.events import Event, HopResult
from emostream.engine.plan import SessionPlan
from emostream.engine.session import Session
from emostream.server.events import EventHub

Chunk = bytes | tuple[bytes, ...]
"""Audio as received: interleaved samples (``/ingest``), or one byte string per track (``/twilio``, equal lengths)."""


@dataclass(frozen=True)
class CallSpec:
    """What a call is: id, source (``twilio``/``ingest``), input rate, channels, default roles, encoding
    (a raw ``--format`` name), whether chunks come per track, and ``identity`` (the summary's ``input``)."""

    call_id: str
    source: str
    rate_hz: int
    channels: int
    default_roles: tuple[str, ...]
    encoding: str
    per_track: bool
    identity: dict[str, Any]


@dataclass(frozen=True)
class FeedResult:
    """What one feed of a call brought: its events, and the input total its next hop needs.

    ``next_hop_frames``: input frames since the call's start after which the next hop comes out
    (:meth:`~emostream.engine.session.Session.input_frames_for_next_hop`); the call hands its
    audio over when that much has arrived.
    """

    events: list[Event]
    next_hop_frames: int


PublishedEvent = tuple[dict[str, Any], str, bool, float, AlertEvent | None]
"""A hop or alert as the server publishes it: its record (the ``--jsonl`` record plus ``call_id``), that record's
JSON text (:meth:`EventHub.encode`), whether the hop's window was speech (False for an alert), the event's
``t_end`` (s, unrounded: the hop latency metric) and, for an alert, its event (the alert delivery takes it)."""

Published = tuple[list[PublishedEvent], int]
"""What a feed of a call brings as the server publishes it: its events and the input total its next hop needs
(:class:`FeedResult`). Made where the call is analysed, so the event loop neither converts nor encodes them;
plain tuples, dicts and strings pickle in a fraction of the time of the event objects."""


def publishable(events: Sequence[Event], call_id: str) -> list[PublishedEvent]:
    """The hops and alerts of ``events`` as the server publishes them (other events are not published)."""
    out: list[PublishedEvent] = []
    encode = EventHub.encode
    for event in events:
        if isinstance(event, HopResult):
            record = event.to_dict()
            record["call_id"] = call_id
            out.append((record, encode(record), event.is_speech, event.t_end, None))
        elif isinstance(event, AlertEvent):
            record = event.to_dict()
            record["call_id"] = call_id
            out.append((record, encode(record), False, event.t_end, event))
    return out


def join_chunks(chunks: Sequence[Chunk], tracks: int | None) -> Chunk:
    """Chunks as one: ``tracks`` byte strings (one per track), or for ``tracks`` None the interleaved bytes."""
    if tracks is not None:
        return tuple(b"".join(c[i] for c in chunks if isinstance(c, tuple)) for i in range(tracks))
    return b"".join(c for c in chunks if isinstance(c, bytes))


def decode_chunks(chunks: Sequence[Chunk], spec: CallSpec) -> npt.NDArray[np.float32]:
    """Chunks as one (n, channels) float32 block."""
    whole = join_chunks(chunks, spec.channels if spec.per_track else None)
    if isinstance(whole, tuple):
        columns = [decode_raw(t, spec.encoding) for t in whole]
        return np.stack(columns, axis=1) if len(columns) > 1 else columns[0].reshape(-1, 1)
    return decode_raw(whole, spec.encoding).reshape(-1, spec.channels)


class CallAnalysis:
    """The analysis state of one live call (see the module docstring)."""

    def __init__(self, plan: SessionPlan, spec: CallSpec, bin_s: float) -> None:
        self.plan = plan
        self.spec = spec
        self.bin_s = bin_s
        self.session = Session(
            plan,
            input_rate_hz=spec.rate_hz,
            channels=spec.channels,
            default_roles=spec.default_roles,
            strict=False,
            source=spec.source,
            session_id=spec.call_id,
            levels=False,  # the level meters serve the dashboard's views; a call has none
        )
        pairs = zip(self.session.channel_plans, self.session.stats, strict=True)
        self.runs = [ChannelRun(plan=p, stats=s, hops=[], alerts=[]) for p, s in pairs]

    @property
    def channels(self) -> list[dict[str, Any]]:
        """The channels as ``<call info>`` lists them: index, role, name, analysed."""
        return [
            {"channel": p.index, "role": p.role, "name": p.name, "analysed": p.analysed}
            for p in self.session.channel_plans
        ]

    def feed(self, chunks: Sequence[Chunk]) -> FeedResult:
        """Analyse the chunks (in order): the events they completed and where the next hop is.

        AudioInputError for refused samples.
        """
        events = self._collect(self.session.feed(decode_chunks(chunks, self.spec)))
        return FeedResult(events, self.session.input_frames_for_next_hop())

    def feed_published(self, chunks: Sequence[Chunk]) -> Published:
        """:meth:`feed`, its events as the server publishes them (:data:`Published`)."""
        fed = self.feed(chunks)
        return publishable(fed.events, self.spec.call_id), fed.next_hop_frames

    def finish(self, extra: dict[str, Any], *, flush: bool = True) -> tuple[list[Event], dict[str, Any]]:
        """End of the call: the last events (``flush``) and the summary, with ``extra`` fields added."""
        events = self._collect(self.session.flush()) if flush else []
        summary = call_summary(
            self.spec.call_id,
            self.spec.identity,
            self.spec.rate_hz,
            self.session.audio_s,
            self.runs,
            labels=self.plan.labels,
            bin_s=self.bin_s,
        )
        summary["model"] = self.plan.model_name
        summary.update(extra)
        return events, summary

    def _collect(self, events: list[Event]) -> list[Event]:
        collect_events(events, self.runs)
        return events
