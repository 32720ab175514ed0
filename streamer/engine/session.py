"""One session's analysis, single-threaded and without I/O: audio blocks in, events out.

:class:`Session` resamples (n, channels) blocks from the input rate to the model's with
one stateful resampler, feeds each channel's :class:`~emostream.engine.pipeline.ChannelPipeline`
its column, runs the alert rules on every hop and returns the resulting events (hop
results and alert events) in time order. Its :class:`~emostream.engine.stats.ChannelStats`
observe those same events. The live engine (a thread around a source), the call batch and
the Python API (:class:`emostream.Monitor`) all run a Session; what they do with the
events (JSON lines, dashboard, delivery) is up to their observers.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from emostream.alerts.rules import AlertEvent
from emostream.audio.resample import StreamResampler
from emostream.engine.channels import ChannelPlan
from emostream.engine.checks import InputChecker
from emostream.engine.events import ChannelView, Event, HopResult
from emostream.engine.plan import SessionPlan
from emostream.engine.stats import ChannelStats, LevelMeter
from emostream.errors import AudioInputError, ConfigError

MAX_CHUNK_S = 4.0  # pipelines get at most this much audio per call (see Session._analyse)
DEFAULT_LEVEL_SPAN_S = 2.0  # the level meter's span before the first window


def new_session_id() -> str:
    """A fresh session id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


class Session:
    """Analysis of ``channels`` input channels at ``input_rate_hz``; see the module docstring.

    ``default_roles`` name the channels without a ``[[channels]]`` entry; ``strict=False``
    ignores ``[[channels]]`` entries the input does not have (batch mode). ``levels=False``:
    no level meters (:meth:`views` then gives NaN levels: "not measured"), for users that
    never ask for views, such as the server's call analysis.
    """

    def __init__(
        self,
        plan: SessionPlan,
        *,
        input_rate_hz: int,
        channels: int,
        default_roles: Sequence[str] = (),
        strict: bool = True,
        source: str = "api",
        session_id: str | None = None,
        levels: bool = True,
    ) -> None:
        if input_rate_hz <= 0:
            raise ConfigError(f"the input rate is {input_rate_hz} Hz; expected a positive rate such as 16000")
        if not 1 <= channels <= 32:
            raise ConfigError(f"the input has {channels} channels; expected 1 to 32")
        self.plan = plan
        self.source = source
        self.session_id = session_id or new_session_id()
        self.input_rate_hz = input_rate_hz
        self.channels = channels
        self.channel_plans: tuple[ChannelPlan, ...] = plan.channel_plans(channels, default_roles, strict=strict)
        self.pipelines = [plan.pipeline(p) for p in self.channel_plans]
        smoothing = plan.config.smoothing
        self.stats = [
            ChannelStats(
                p,
                plan.labels,
                plan.timing.hop_s,
                plan.config.output.timeline_seconds,
                min_dwell_s=smoothing.min_dwell_s,
                hysteresis=smoothing.hysteresis,
            )
            for p in self.channel_plans
        ]
        self._meters = [
            LevelMeter(plan.sample_rate_hz, 2 * DEFAULT_LEVEL_SPAN_S + 1.0) if levels else None
            for _ in self.channel_plans
        ]
        self._chunk = max(1, round(plan.sample_rate_hz * MAX_CHUNK_S))
        self._rules = plan.alert_rules()
        self._resampler = StreamResampler(input_rate_hz, plan.sample_rate_hz, channels)
        self.checker = InputChecker(input_rate_hz, channels)
        self.input_frames = 0

    @property
    def warnings(self) -> list[str]:
        """Problems noticed in the input that did not stop the analysis (see :mod:`emostream.engine.checks`)."""
        return self.checker.warnings

    @property
    def audio_s(self) -> float:
        """Seconds of input audio fed since the start (or the last reset)."""
        return self.input_frames / self.input_rate_hz

    def input_frames_for_next_hop(self) -> int:
        """The input total (frames since the start) whose analysis brings out the next hop of some channel.

        The resampler's blocks are counted in (:meth:`~emostream.audio.resample.StreamResampler.input_needed`):
        feeding up to this total gives the hop, feeding less does not. The live server hands a call's
        audio to its analysis at that point, in one request rather than message by message.
        """
        needed = min(p.samples_to_next_hop for p in self.pipelines)
        return self._resampler.input_needed(self._resampler.frames_out + needed)

    def reset(self, session_id: str | None = None) -> None:
        """Start a new stream (a new call): pipelines, alert state, statistics and the resampler.

        The new stream's events carry ``session_id`` (e.g. the call's key), else a new uuid4.
        """
        self.session_id = session_id or new_session_id()
        for pipeline in self.pipelines:
            pipeline.reset()
        for stats in self.stats:
            stats.reset()
        for meter in self._meters:
            if meter is not None:
                meter.reset()
        self._rules.reset()
        self._resampler.reset()
        self.checker.reset()
        self.input_frames = 0

    def feed(self, block: npt.ArrayLike) -> list[Event]:
        """Feed (n, channels) float32 samples in [-1, 1] at the input rate; return the events they completed.

        Every block passes :class:`~emostream.engine.checks.InputChecker` first: non-finite or
        implausible samples raise :class:`~emostream.errors.AudioInputError` (nothing of
        the block is analysed); a constant signal adds a warning to :attr:`warnings`.
        """
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 1 and self.channels == 1:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise AudioInputError(
                f"an audio block of shape {x.shape} was given; expected (frames, {self.channels}) for "
                f"{self.channels} channel(s)"
            )
        self.checker.check(x, self.input_frames)
        self.input_frames += x.shape[0]
        return self._analyse(self._resampler.process(x), final=False)

    def flush(self) -> list[Event]:
        """End of stream: the resampler's tail and a last (silence-padded) window per channel."""
        return self._analyse(self._resampler.flush(), final=True)

    def _analyse(self, audio: npt.NDArray[np.float32], *, final: bool) -> list[Event]:
        # Pipelines get the audio in chunks of at most MAX_CHUNK_S (4 s: a file's whole block), so the VAD
        # and the STFT frames of all the windows a block completes run in one call each instead of once per
        # window (the STFT in batches of at most 128 frames into kept buffers: its temporaries stay bounded).
        # Against 0.25 s chunks, the whole CLI on the looped demo: 6 % fewer instructions (309 s), 60 % fewer
        # page faults and about a fifth less CPU (617 s; docs/performance.md, issue 16's fifteenth round).
        # The windows are the same whatever the chunks (stream == batch).
        hops: list[HopResult] = []
        chunk = self._chunk
        for pipeline, meter in zip(self.pipelines, self._meters, strict=True):
            column = audio[:, pipeline.channel]
            if self.channels > 1:  # one contiguous copy: the stages below read it many times
                column = np.ascontiguousarray(column)
            if meter is not None:  # whole: its state runs on from chunk to chunk, the same sums either way
                meter.feed(column)
            for start in range(0, column.shape[0], chunk):
                hops += pipeline.process(column[start : start + chunk])
            if final:
                hops += pipeline.flush()
        hops.sort(key=lambda hop: (hop.t_end, hop.channel))  # time order across channels, whatever the block size
        events: list[Event] = []
        now = datetime.now(UTC).isoformat(timespec="milliseconds") if hops else None
        src, sid = self.source, self.session_id
        hops = [dataclasses.replace(hop, source=src, session_id=sid, wall_time=now) for hop in hops]
        for hop in hops:
            stats = self.stats[hop.channel]
            stats.on_hop(hop)
            events.append(hop)
            for fired in self._rules.process(hop):
                alert = dataclasses.replace(fired, source=src, session_id=sid, wall_time=now)
                stats.on_alert(alert)
                events.append(alert)
        return events

    def views(self) -> tuple[ChannelView, ...]:
        """Dashboard snapshots of every channel."""
        return tuple(self._view(stats, meter) for stats, meter in zip(self.stats, self._meters, strict=True))

    def _view(self, stats: ChannelStats, meter: LevelMeter | None) -> ChannelView:
        """The channel's snapshot, its level measured over the span its speech dot describes (NaN: no meter)."""
        last = stats.last
        if meter is None:
            return stats.view(float("nan"), DEFAULT_LEVEL_SPAN_S)
        if last is None:
            return stats.view(meter.level_db(None, DEFAULT_LEVEL_SPAN_S), DEFAULT_LEVEL_SPAN_S)
        span = max(0.01, last.t_end - max(0.0, last.t_start))
        return stats.view(meter.level_db(last.t_end, span), span)

    def alert_events(self, events: Sequence[Event]) -> list[AlertEvent]:
        """The alert events among ``events``."""
        return [e for e in events if isinstance(e, AlertEvent)]
