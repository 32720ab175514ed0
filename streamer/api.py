"""The Python API: emostream inside another program.

::

    import emostream
    model = emostream.load_model()                 # shipped default; or "cnn", or a path to a model JSON
    mon = emostream.Monitor(model, sample_rate_hz=8000, channels=2, roles=("customer", "agent"))
    for event in mon.feed(block):                  # int16 or float32, (frames,) or (frames, channels)
        print(event.to_dict())                     # the same hop/alert records as --jsonl
    mon.close(); mon.summary()
    result = emostream.analyze_file("call.wav")    # .emotion, .scores

A :class:`Monitor` runs the same session as the live command line (the plan from the
config, the stateful resampler, the per-channel pipelines, smoothing, alert rules and
statistics), so the same audio gives the same readings in any block size. Audio at any
rate is resampled inside. Nothing is written anywhere: what to do with the events is
the caller's business. While a call into the API works, the math libraries (OpenBLAS)
use one thread, as in the command line (:mod:`emostream.apps.threads`); the program's own
setting is back when the call returns (unless it set ``OPENBLAS_NUM_THREADS`` or the like:
then that is used throughout).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from emostream.apps.analyze import FileResult
from emostream.apps.analyze import analyze_file as _analyze_file
from emostream.apps.threads import math_threads_limited
from emostream.config import Config, load_config
from emostream.engine.events import Event, HopResult, SessionSummary
from emostream.engine.plan import SessionPlan, make_plan
from emostream.engine.session import Session
from emostream.errors import AudioInputError, ConfigError
from emostream.inference.metadata import DEFAULT_MODEL
from emostream.inference.model import EmotionModel

PCM16_SCALE = 32768.0


def load_model(name_or_path: str | Path | None = None, *, num_threads: int = 1) -> EmotionModel:
    """A shipped model by name (default ``accurate``; ``fast``, ``cnn``, ...) or a model by its .json/.tflite path.

    Raises :class:`~emostream.errors.ModelError` (exit code 5 on the command line) for a
    missing, corrupt or mismatched model.
    """
    return EmotionModel.load(DEFAULT_MODEL if name_or_path is None else name_or_path, num_threads)


def _config(config: Config | str | Path | None) -> Config:
    if isinstance(config, Config):
        return config
    return load_config(config) if config is not None else Config()


def _plan(model: EmotionModel | str | Path | None, config: Config | str | Path | None) -> SessionPlan:
    cfg = _config(config)
    if model is None or isinstance(model, str | Path):
        name = cfg.model.name if model is None else model
        model = EmotionModel.load(name, cfg.model.num_threads)
    return make_plan(cfg, model)


def _conversion_hint(dtype: np.dtype[np.generic]) -> str:
    """How to turn samples of ``dtype`` into float32 in [-1, 1] (or what to do when they are not PCM)."""
    bits = 8 * dtype.itemsize
    half = str(2 ** (bits - 1)) if bits <= 16 else f"2**{bits - 1}"
    if dtype.kind == "i":
        return f"Convert it first: block.astype(np.float32) / {half} for {dtype} PCM"
    if dtype.kind == "u":  # unsigned PCM (8-bit WAV) is centred on half its range
        return f"Convert it first: (block.astype(np.float32) - {half}) / {half} for {dtype} PCM"
    if dtype.kind == "f":
        return "Convert it first: block.astype(np.float32)"
    return "Give the samples as a numeric array (int16 PCM or float32)"


def as_float_block(block: npt.ArrayLike, channels: int) -> npt.NDArray[np.float32]:
    """``block`` as float32 (frames, channels) in [-1, 1]: int16 is scaled by 1/32768, floats pass as they are.

    Raises AudioInputError for another dtype or shape, naming what was given.
    """
    x = np.asarray(block)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / np.float32(PCM16_SCALE)
    elif x.dtype in (np.float32, np.float64):
        x = x.astype(np.float32, copy=False)
    else:
        raise AudioInputError(
            f"an audio block of dtype {x.dtype} was given; expected int16 PCM or float32 samples in [-1, 1]. "
            f"{_conversion_hint(x.dtype)}"
        )
    if x.ndim == 1 and channels == 1:
        return x.reshape(-1, 1)
    if x.ndim == 1 and x.size % channels == 0:
        return x.reshape(-1, channels)  # interleaved frames
    if x.ndim == 2 and x.shape[1] == channels:
        return x
    raise AudioInputError(
        f"an audio block of shape {x.shape} was given; expected (frames,) or (frames, {channels}) for "
        f"{channels} channel(s)"
    )


class Monitor:
    """Streaming emotion monitoring of ``channels`` channels at ``sample_rate_hz``.

    ``model``: an :class:`EmotionModel` from :func:`load_model`, a model name or path, or
    None for ``[model] name`` of the config. ``roles``: the role of each channel (e.g.
    ``("customer", "agent")``; ``agent`` channels are only metered unless
    ``[privacy] allow_agent_analysis``), else ``[[channels]]`` of the config, else
    ``speaker``. ``config``: a :class:`~emostream.config.Config`, a path to a TOML file or
    None for the built-in defaults.
    """

    def __init__(
        self,
        model: EmotionModel | str | Path | None = None,
        *,
        sample_rate_hz: int = 16000,
        channels: int = 1,
        roles: Sequence[str] = (),
        config: Config | str | Path | None = None,
    ) -> None:
        if isinstance(roles, str):
            raise ConfigError(f"roles is the string {roles!r}; give one role per channel, e.g. ({roles!r},)")
        if roles and len(roles) != channels:
            raise ConfigError(f"{len(roles)} roles given for {channels} channel(s); give one role per channel")
        self.plan = _plan(model, config)
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self._session = Session(self.plan, input_rate_hz=sample_rate_hz, channels=channels, default_roles=roles)
        self._hops = 0
        self._closed = False

    @property
    def labels(self) -> tuple[str, ...]:
        """The shown emotion labels ([labels] of the config; the model's own with show = "all"), in score order."""
        return self.plan.labels

    def feed(self, block: npt.ArrayLike) -> list[Event]:
        """Feed audio (int16 or float32; (frames,) or (frames, channels); any length); return the events it completed.

        Events are :class:`~emostream.engine.events.HopResult` (one per channel and
        analysis window) and :class:`~emostream.alerts.rules.AlertEvent`, in time order;
        ``event.to_dict()`` is the ``--jsonl`` record.
        """
        if self._closed:
            raise AudioInputError("this Monitor was closed; call reset() to start a new stream, or make a new Monitor")
        with math_threads_limited():
            return self._count(self._session.feed(as_float_block(block, self.channels)))

    def close(self) -> list[Event]:
        """End of stream: the events of the audio still held (a last, silence-padded window)."""
        if self._closed:
            return []
        self._closed = True
        with math_threads_limited():
            return self._count(self._session.flush())

    def reset(self) -> None:
        """Start a new stream (a new call) with the same settings."""
        self._session.reset()
        self._hops = 0
        self._closed = False

    def summary(self) -> SessionSummary:
        """Totals so far: audio seconds, hops, per channel speech time, time per emotion and alerts."""
        return SessionSummary(
            source="api",
            duration_s=self._session.audio_s,
            hops=self._hops,
            channels=tuple(s.summary() for s in self._session.stats),
            exit_reason="closed" if self._closed else "running",
        )

    def _count(self, events: list[Event]) -> list[Event]:
        self._hops += sum(1 for e in events if isinstance(e, HopResult))
        return events


def analyze_file(
    path: str | Path, model: EmotionModel | str | Path | None = None, *, config: Config | str | Path | None = None
) -> FileResult:
    """One emotion for a whole file (as ``emostream analyze``): ``.emotion``, ``.confidence``, ``.scores``.

    Raises :class:`~emostream.errors.AudioInputError` for an unreadable, empty or too short file.
    """
    plan = _plan(model, config)
    with math_threads_limited():
        return _analyze_file(path, plan)
