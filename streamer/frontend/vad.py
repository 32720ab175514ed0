"""Speech gating with the WebRTC voice-activity detector (or, opt-in, Silero's).

:class:`VadGate` cuts a stream into VAD frames of ``frame_ms`` (10, 20 or 30 ms) and
returns one decision per frame. The detector is webrtcvad (``engine = "webrtc"``, the
default: cheap, and robust to steady noise from about 10 dB SNR) or Silero VAD
(``engine = "silero"``, :mod:`emostream.frontend.silero`: also rejects noise as loud as the
speech, at more than the fast model's whole CPU budget). By default a speech-level gate
(``speech_level_margin_db``) also drops heard frames far below the speech around them, such
as noise in the pauses after a quiet tail, which webrtcvad alone takes for speech (docs/vad.md).
A hang-over keeps a decision "speech" for
``hangover_ms`` after the detector last heard speech, so short pauses inside a
sentence are not cut out. Decisions depend only on the past, so a stream cut into
any chunks gives the same decisions as the whole signal.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import _webrtcvad  # webrtcvad's C module: its Python wrapper checks each call and imports importlib.metadata
import numpy as np
import numpy.typing as npt

from emostream.audio.codecs import float_to_pcm16_bytes
from emostream.errors import ConfigError, InvalidSettingError
from emostream.frontend import silero

VAD_RATES_HZ: tuple[int, ...] = (8000, 16000, 32000, 48000)
VAD_FRAME_MS: tuple[int, ...] = (10, 20, 30)
NOISE_FLOOR_RISE_DB_PER_S = 1.0
SPEECH_LEVEL_FALL_DB_PER_S = 0.5
"""How fast the speech-level reference of ``speech_level_margin_db`` falls when nothing louder is heard."""
VadEngine = Literal["webrtc", "silero"]
VAD_ENGINES: tuple[str, ...] = ("webrtc", "silero")


@dataclass(frozen=True, kw_only=True)
class VadConfig:
    """Settings of the speech gate.

    ``aggressiveness`` 0 (keeps most audio as speech) to 3 (strictest);
    ``min_speech_ratio`` is the share of a window's VAD frames that must be speech
    for the window to be classified. ``min_level_dbfs`` (None = off) also requires a VAD
    frame's RMS level to reach that many dB below full scale before it counts as heard
    speech: webrtcvad alone takes steady low-level noise (a fan, line hiss) for speech.
    ``noise_floor_margin_db`` (None = off) is the adaptive version of that gate: a frame
    counts only if its level is at least that many dB above the running noise floor
    (the floor follows a quieter frame at once and rises by ``NOISE_FLOOR_RISE_DB_PER_S``
    otherwise, so it settles on the level of the pauses whatever the room).
    ``speech_level_margin_db`` (None = off; default 25) drops heard frames more than that many
    dB below the speech level: the level of the loudest frame the detector heard, falling by
    ``SPEECH_LEVEL_FALL_DB_PER_S`` (0.5 dB/s) while nothing louder comes. Noise in the pauses of
    a conversation is far below the speech around it (webrtcvad hears pink noise 35 dB below
    the speech as speech; docs/vad.md has the measurements), so this rejects it at the cost of a
    few array operations per block, while the hang-over keeps the quiet frames inside speech.
    ``engine`` picks the detector: ``"webrtc"`` (``aggressiveness`` applies) or ``"silero"``
    (a frame is heard when Silero's speech probability reaches ``silero_threshold``; 16 kHz
    models only, needs the ``[silero]`` extra).
    """

    frame_ms: int = 20
    aggressiveness: int = 2
    hangover_ms: int = 200
    min_speech_ratio: float = 0.3
    min_level_dbfs: float | None = None
    noise_floor_margin_db: float | None = None
    engine: VadEngine = "webrtc"
    silero_threshold: float = 0.5
    speech_level_margin_db: float | None = 22.0

    def __post_init__(self) -> None:
        if self.engine not in VAD_ENGINES:
            raise InvalidSettingError("engine", f"is {self.engine!r}; expected one of {VAD_ENGINES}")
        if not 0.0 < self.silero_threshold < 1.0:
            raise InvalidSettingError("silero_threshold", f"is {self.silero_threshold}; expected between 0 and 1")
        if self.frame_ms not in VAD_FRAME_MS:
            raise InvalidSettingError("frame_ms", f"is {self.frame_ms}; webrtcvad accepts only {VAD_FRAME_MS}")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise InvalidSettingError("aggressiveness", f"is {self.aggressiveness}; expected 0, 1, 2 or 3")
        if self.hangover_ms < 0:
            raise InvalidSettingError("hangover_ms", f"is {self.hangover_ms}; expected 0 or more")
        if not 0.0 <= self.min_speech_ratio <= 1.0:
            raise InvalidSettingError("min_speech_ratio", f"is {self.min_speech_ratio}; expected 0.0 to 1.0")
        if self.min_level_dbfs is not None and not -120.0 <= self.min_level_dbfs <= 0.0:
            raise InvalidSettingError("min_level_dbfs", f"is {self.min_level_dbfs}; expected -120 to 0 dBFS (or unset)")
        if self.speech_level_margin_db is not None and not 0.0 < self.speech_level_margin_db <= 120.0:
            raise InvalidSettingError(
                "speech_level_margin_db",
                f"is {self.speech_level_margin_db}; expected more than 0 and up to 120 dB below the speech (or unset)",
            )
        if self.noise_floor_margin_db is not None and not 0.0 <= self.noise_floor_margin_db <= 60.0:
            raise InvalidSettingError(
                "noise_floor_margin_db",
                f"is {self.noise_floor_margin_db}; expected 0 to 60 dB above the floor (or unset)",
            )

    def frame_samples(self, sample_rate_hz: int) -> int:
        """VAD frame length in samples at ``sample_rate_hz``."""
        return self.frame_ms * sample_rate_hz // 1000

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in model metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VadConfig:
        """Build from metadata or config; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"vad settings have unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


class VadGate:
    """Incremental WebRTC VAD with hang-over.

    ``process(chunk)`` takes float32 mono samples at ``sample_rate_hz`` and returns a
    bool array, one entry per VAD frame completed by the chunk (True = speech).
    """

    def __init__(self, cfg: VadConfig, sample_rate_hz: int) -> None:
        if sample_rate_hz not in VAD_RATES_HZ:
            raise ConfigError(
                f"the VAD runs at {sample_rate_hz} Hz; webrtcvad accepts {VAD_RATES_HZ}. "
                "Resample the audio first (the streaming engine does this for you)"
            )
        self.cfg = cfg
        self.sample_rate_hz = sample_rate_hz
        self.frame_samples = cfg.frame_samples(sample_rate_hz)
        self._hangover_frames = cfg.hangover_ms // cfg.frame_ms
        self._vad = _new_webrtc_vad(cfg.aggressiveness)
        self._needs_levels = any(
            v is not None for v in (cfg.min_level_dbfs, cfg.noise_floor_margin_db, cfg.speech_level_margin_db)
        )
        self._level_gates = cfg.min_level_dbfs is not None or cfg.noise_floor_margin_db is not None
        self._ranges: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
        if cfg.engine == "silero":
            silero.check_available(sample_rate_hz)
        self._silero = silero.SileroDetector() if cfg.engine == "silero" else None
        self._frames_done = 0
        self._pending = np.zeros(self.frame_samples, dtype=np.float32)
        self._pending_len = 0
        self._frames_since_speech = self._hangover_frames + 1
        self._rise_db = NOISE_FLOOR_RISE_DB_PER_S * cfg.frame_ms / 1000.0
        self._fall_db = SPEECH_LEVEL_FALL_DB_PER_S * cfg.frame_ms / 1000.0
        self._floor_db: float | None = None
        self._speech_db: float | None = None  # the speech-level reference after the last frame

    def reset(self) -> None:
        """Forget buffered samples, the hang-over state and the noise floor."""
        self._vad = _new_webrtc_vad(self.cfg.aggressiveness)
        if self._silero is not None:
            self._silero.reset()
        self._frames_done = 0
        self._pending_len = 0
        self._frames_since_speech = self._hangover_frames + 1
        self._floor_db = None
        self._speech_db = None

    def _ranges_of(self, n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """``arange(n)`` and the speech level's fall over frames 1..n (dB), made once per block size (read-only)."""
        ranges = self._ranges.get(n)
        if ranges is None:
            index = np.arange(n)
            steps = np.arange(1, n + 1, dtype=np.float64) * self._fall_db
            index.flags.writeable = steps.flags.writeable = False
            ranges = self._ranges[n] = (index, steps)
        return ranges

    def _loud_enough(self, levels: npt.NDArray[np.float64] | None, n_frames: int) -> npt.NDArray[np.bool_] | None:
        """Per frame: loud enough for the level gates (None: no level gate set, every frame is)."""
        cfg = self.cfg
        if levels is None or not self._level_gates:
            return None
        loud = np.ones(n_frames, dtype=bool) if cfg.min_level_dbfs is None else levels >= cfg.min_level_dbfs
        if cfg.noise_floor_margin_db is not None:
            loud &= self._above_floor(levels, cfg.noise_floor_margin_db)
        return loud

    def _above_floor(self, levels: npt.NDArray[np.float64], margin_db: float) -> npt.NDArray[np.bool_]:
        """Per frame: level >= running floor + margin; the floor is updated frame by frame (causal)."""
        out = np.zeros(levels.size, dtype=bool)
        if not levels.size:
            return out
        floor = float(levels[0]) if self._floor_db is None else self._floor_db
        for i, level in enumerate(levels.tolist()):
            floor = level if level < floor else min(level, floor + self._rise_db)
            out[i] = level >= floor + margin_db
        self._floor_db = floor
        return out

    def _near_speech_level(
        self, levels: npt.NDArray[np.float64], heard: npt.NDArray[np.bool_], margin_db: float
    ) -> npt.NDArray[np.bool_]:
        """Per frame: heard and within ``margin_db`` of the speech level (causal, vectorised).

        The reference after frame ``i`` is the highest ``level[j] - fall * (i - j)`` over heard
        frames ``j <= i`` (and the carried reference), i.e. a running maximum of
        ``level[j] + fall * j`` minus ``fall * i``.
        """
        n = levels.size
        if n == 0:
            return heard
        steps = self._ranges_of(n)[1]
        lifted = np.where(heard, levels + steps, -np.inf)
        if self._speech_db is not None:
            lifted[0] = max(lifted[0], self._speech_db)  # the carried reference, one frame older at frame 0
        reference = np.maximum.accumulate(lifted, out=lifted)
        reference -= steps
        last = float(reference[-1])
        self._speech_db = last if math.isfinite(last) else None
        reference -= margin_db  # in place: the lowest level still near the speech
        out: npt.NDArray[np.bool_] = levels >= reference
        out &= heard
        return out

    def process(self, chunk: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Feed samples; return the decisions of the VAD frames they complete."""
        new = np.asarray(chunk, dtype=np.float32).reshape(-1)
        samples = np.concatenate([self._pending[: self._pending_len], new]) if self._pending_len else new
        n_frames = samples.size // self.frame_samples
        used = n_frames * self.frame_samples
        self._pending_len = samples.size - used
        self._pending[: self._pending_len] = samples[used:]
        cfg = self.cfg
        levels = frame_levels_dbfs(samples, n_frames, self.frame_samples) if self._needs_levels else None
        heard = self._heard(new, samples[:used], n_frames, self._loud_enough(levels, n_frames))
        if levels is not None and cfg.speech_level_margin_db is not None:
            heard = self._near_speech_level(levels, heard, cfg.speech_level_margin_db)
        self._frames_done += n_frames
        return self._hang_over(heard)

    def _hang_over(self, heard: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Speech decisions: a frame is speech up to ``hangover_frames`` after the last heard frame (vectorised)."""
        n = heard.size
        index = self._ranges_of(n)[0]
        # the last heard frame at or before each; before any in this block, the one the carried count puts
        # before the block (frame -1 - frames_since_speech): frames since = index - that frame either way
        since = np.where(heard, index, -1 - self._frames_since_speech)
        np.maximum.accumulate(since, out=since)
        np.subtract(index, since, out=since)
        if n:
            self._frames_since_speech = int(since[-1])
        out: npt.NDArray[np.bool_] = since <= self._hangover_frames
        return out

    def _heard(
        self,
        new: npt.NDArray[np.float32],
        framed: npt.NDArray[np.float32],
        n_frames: int,
        loud: npt.NDArray[np.bool_] | None,
    ) -> npt.NDArray[np.bool_]:
        """Per frame of ``framed`` (``n_frames`` frames): loud enough (``loud``; None: all are) and taken for speech.

        Silero sees every stream sample once (``new``, the chunk as it came) on its own grid;
        webrtcvad hears only the loud frames (its noise model adapts to what it hears).
        """
        if self._silero is not None:
            probabilities = self._silero.frame_probabilities(new, self._frames_done, n_frames, self.frame_samples)
            heard_silero: npt.NDArray[np.bool_] = probabilities >= self.cfg.silero_threshold
            return heard_silero if loud is None else loud & heard_silero
        pcm = memoryview(float_to_pcm16_bytes(framed))
        size = self.frame_samples
        step = 2 * size
        rate = self.sample_rate_hz
        vad = self._vad
        frames = range(n_frames) if loud is None else np.flatnonzero(loud).tolist()
        heard = np.zeros(n_frames, dtype=bool)
        heard[[i for i in frames if _webrtcvad.process(vad, rate, pcm[i * step : (i + 1) * step], size)]] = True
        return heard


def frame_levels_dbfs(samples: npt.NDArray[np.float32], n_frames: int, frame_samples: int) -> npt.NDArray[np.float64]:
    """RMS level in dBFS of each of ``n_frames`` consecutive frames (floored at -200 dB), shape (n_frames,)."""
    frames = samples[: n_frames * frame_samples].reshape(n_frames, frame_samples).astype(np.float64)
    np.multiply(frames, frames, out=frames)
    power = np.add.reduce(frames, axis=1)  # np.mean(frames**2, axis=1): the same sums and division, no wrapper
    np.true_divide(power, frame_samples, out=power)
    power += 1e-20
    return 10.0 * np.log10(power)


def _new_webrtc_vad(aggressiveness: int) -> object:
    """A fresh webrtcvad detector in mode ``aggressiveness`` (what ``webrtcvad.Vad(aggressiveness)`` holds)."""
    vad = _webrtcvad.create()
    _webrtcvad.init(vad)
    _webrtcvad.set_mode(vad, aggressiveness)
    return vad


def speech_flags(signal: npt.ArrayLike, cfg: VadConfig, sample_rate_hz: int) -> npt.NDArray[np.bool_]:
    """Whole-signal VAD decisions, one per complete VAD frame."""
    return VadGate(cfg, sample_rate_hz).process(signal)
