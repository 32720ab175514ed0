"""The one feature front-end of emostream, shared by training and the runtime.

Audio (float32 mono at ``FeatureConfig.sample_rate_hz``, values in [-1, 1]) is cut
into short STFT frames (``frame_ms`` long every ``frame_hop_ms``, no centring, so
frame ``j`` covers samples ``[o + j * hop_samples, o + j * hop_samples + frame_samples)`` with
``o = frame_offset_samples``, 0 unless the config has a speech embedding and front-end version 2). Each frame gets one
float32 power spectrum (with pitch, one ``2 * n_fft``-point FFT serves the pitch tracker, the
features and, with an embedding and front-end version 2, the embedding's log-mel). Each frame
is turned once into a row of per-frame features (see
:func:`frame_feature_names`); models then see either

* ``feature_set="summary"``: the speech-masked mean and standard deviation of every
  per-frame feature over an analysis window (:func:`summary_vector`), or
* ``feature_set="frames"``: the window's MFCC frames as a (frames, n_mfcc) matrix
  (:func:`frames_matrix`).

With ``FeatureConfig.embedding`` set (summary set only), the summary model input is fused:
the summary statistics above, followed by the pooled speech embeddings of the window
(:mod:`emostream.frontend.embedding`, :func:`~emostream.frontend.embedding.pooled_feature_names`),
which :class:`emostream.frontend.windowing.WindowExtractor` computes beside the frame rows.

:class:`FrameFeaturizer` computes the per-frame rows incrementally from chunks of any
size; :func:`frame_features` is the whole-signal equivalent and gives the same rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError
from emostream.frontend.embedding import (
    MEL_FRAME_OFFSET_SAMPLES,
    MEL_HOP_SAMPLES,
    MEL_SPAN_SAMPLES,
    MEL_WINDOW_SAMPLES,
    SAMPLE_RATE_HZ,
    EmbeddingConfig,
    pooled_feature_names,
)
from emostream.frontend.pitch import PitchTables, frame_pitch, pitch_from_autocorrelation
from emostream.frontend.voice import BLOCK_SAMPLES as VOICE_BLOCK_SAMPLES
from emostream.frontend.voice import SAMPLE_RATE_HZ as VOICE_RATE_HZ
from emostream.frontend.voice import VoiceConfig, voice_feature_names
from emostream.frontend.whisper import SAMPLE_RATE_HZ as WHISPER_RATE_HZ
from emostream.frontend.whisper import WhisperConfig, whisper_feature_names
from emostream.schema import refuse_unknown_keys

FloatArray = npt.NDArray[np.float32]
FeatureSet = Literal["summary", "frames"]
FEATURE_SETS: tuple[str, ...] = ("summary", "frames")

CONTRAST_EDGES_HZ: tuple[float, ...] = (0.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)
CHROMA_FMIN_HZ = 65.0
ROLLOFF_FRACTION = 0.85
CONTRAST_QUANTILE = 0.02
_EPS = 1e-10
FRONTEND_VERSION = 2
"""The front-end arithmetic of new configs (``FeatureConfig.frontend_version``); see :data:`FRONTEND_VERSIONS`.

Both versions use one float32 spectrum per STFT frame for the handcrafted features and the pitch
tracker (the same values as the float64 arithmetic of earlier releases to float32 rounding).
They differ only with a speech embedding. 1 (model JSONs without the key): the embedding's log-mel
comes from its own float64 512-point DFT of its own frames (openWakeWord's grid, 56 samples after
the STFT frames). 2: the STFT frames start ``MEL_FRAME_OFFSET_SAMPLES`` (56) later, so they are the
embedding's mel frames, and the log-mel is made from their float32 spectrum: one spectrum per frame
for everything. The two give different model inputs, so a model runs with the version it was trained on.
"""
FRONTEND_VERSIONS: tuple[int, ...] = (1, 2)
_BATCH_FRAMES = 128  # frames per FFT call (the buffers' rows)
_N_SPECTRAL = 6 + 12 + len(CONTRAST_EDGES_HZ)  # the summary set's spectral columns after the MFCCs


@dataclass(frozen=True)
class SummaryLayout:
    """Where a summary config's model input puts its parts: the statistics, the deltas' stds, then the embeddings.

    ``summary``: length of the statistics (2 * n_frame_features); ``delta_columns``: the frame columns whose
    changes follow them (empty without deltas); ``size``: the whole input's length.
    """

    summary: int
    delta_columns: list[int]
    size: int


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Settings of the front-end; saved in every model's metadata.

    Window and hop sizes are in milliseconds and must come to whole numbers of samples;
    the analysis window and its hop must be whole numbers of STFT hops.

    ``embedding``: the pretrained speech-embedding part of a fused summary input (None =
    off). It needs the summary feature set, 16 kHz and a 10 ms frame hop; with front-end version 2
    also 25 ms frames and ``n_fft = 512``: STFT frame ``j`` then starts at sample ``56 + 160 j`` (see
    :attr:`frame_offset_samples`) and is the embedder's mel frame ``j``, so one spectrum serves both.
    ``voice``: the pretrained voice encoder's embedding of each window's last 1.6 s, fused after
    the statistics and the speech embedding (None = off; summary set at 16 kHz only, see
    :mod:`emostream.frontend.voice`).
    ``whisper``: the mean and std of a Whisper encoder's layers over each speech window, fused last
    (None = off; summary set at 16 kHz, window and hop whole multiples of its ``chunk_ms``; see
    :mod:`emostream.frontend.whisper`).
    ``frontend_version``: the front-end arithmetic (see :data:`FRONTEND_VERSION`); a model records it
    and this runtime refuses versions it does not implement (:data:`FRONTEND_VERSIONS`).
    """

    sample_rate_hz: int = 16000
    frame_ms: float = 25.0
    frame_hop_ms: float = 10.0
    n_fft: int = 512
    n_mels: int = 40
    n_mfcc: int = 20
    fmin_hz: float = 40.0
    fmax_hz: float = 8000.0
    window_ms: float = 2000.0
    window_hop_ms: float = 500.0
    feature_set: FeatureSet = "summary"
    pitch: bool = False
    deltas: bool = False
    embedding: EmbeddingConfig | None = None
    voice: VoiceConfig | None = None
    whisper: WhisperConfig | None = None
    frontend_version: int = FRONTEND_VERSION

    def __post_init__(self) -> None:
        self._check()

    def _check(self) -> None:
        if self.frontend_version not in FRONTEND_VERSIONS:
            raise ConfigError(
                f"frontend_version is {self.frontend_version!r}; this runtime implements front-end versions "
                f"{', '.join(map(str, FRONTEND_VERSIONS))}: retrain the model with this version of emostream "
                "(`emostream train`), or run it with the release it was made with"
            )
        if self.sample_rate_hz <= 0:
            raise ConfigError(f"sample_rate_hz is {self.sample_rate_hz}; expected a positive rate such as 16000")
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"feature_set is {self.feature_set!r}; expected one of {FEATURE_SETS}")
        for name in ("frame_ms", "frame_hop_ms", "window_ms", "window_hop_ms"):
            samples = getattr(self, name) * self.sample_rate_hz / 1000.0
            if samples <= 0 or abs(samples - round(samples)) > 1e-6:
                raise ConfigError(
                    f"{name} = {getattr(self, name)} ms is {samples:g} samples at {self.sample_rate_hz} Hz; "
                    "expected a positive whole number of samples"
                )
        if self.frame_samples > self.n_fft:
            raise ConfigError(
                f"frame_ms gives {self.frame_samples} samples, more than n_fft = {self.n_fft}; raise n_fft"
            )
        for name, total in (("window_ms", self.window_samples), ("window_hop_ms", self.window_hop_samples)):
            if total % self.hop_samples:
                raise ConfigError(
                    f"{name} ({total} samples) is not a multiple of frame_hop_ms ({self.hop_samples} samples); "
                    "pick sizes that divide evenly"
                )
        if self.window_samples < self.frame_samples + self.frame_offset_samples:
            raise ConfigError(f"window_ms = {self.window_ms} is shorter than one frame ({self.frame_ms} ms)")
        if not 0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ConfigError(
                f"fmin_hz = {self.fmin_hz}, fmax_hz = {self.fmax_hz}; expected 0 <= fmin < fmax <= "
                f"{self.sample_rate_hz / 2} (half the sample rate)"
            )
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(f"n_mfcc = {self.n_mfcc}; expected 1 <= n_mfcc <= n_mels ({self.n_mels})")
        self._check_fused()

    def _check_fused(self) -> None:
        if self.embedding is not None:
            self._check_embedding()
        if self.voice is not None:
            self._check_voice()
        if self.whisper is not None:
            self._check_whisper(self.whisper)

    def _check_whisper(self, whisper: WhisperConfig) -> None:
        if self.feature_set != "summary" or self.sample_rate_hz != WHISPER_RATE_HZ:
            raise ConfigError(
                f"the whisper encoder is set with feature_set = {self.feature_set!r} and sample_rate_hz = "
                f"{self.sample_rate_hz}; it is fused into the summary statistics at {WHISPER_RATE_HZ} Hz only: use "
                f"feature_set = 'summary' and sample_rate_hz = {WHISPER_RATE_HZ}, or drop the whisper encoder"
            )
        chunk = whisper.chunk_samples
        for name, total in (("window_ms", self.window_samples), ("window_hop_ms", self.window_hop_samples)):
            if total % chunk:
                raise ConfigError(
                    f"{name} = {getattr(self, name):g} is not a whole multiple of the whisper chunk_ms "
                    f"({whisper.chunk_ms:g} ms): each window must be whole chunks on the stream's chunk grid; "
                    f"use a {name} that is a multiple of {whisper.chunk_ms:g} ms, or another chunk_ms"
                )

    def _check_voice(self) -> None:
        if self.feature_set != "summary" or self.sample_rate_hz != VOICE_RATE_HZ:
            raise ConfigError(
                f"the voice encoder is set with feature_set = {self.feature_set!r} and sample_rate_hz = "
                f"{self.sample_rate_hz}; it is fused into the summary statistics at {VOICE_RATE_HZ} Hz only: use "
                f"feature_set = 'summary' and sample_rate_hz = {VOICE_RATE_HZ}, or drop the voice encoder"
            )
        if self.window_samples < VOICE_BLOCK_SAMPLES:
            raise ConfigError(
                f"window_ms = {self.window_ms:g} is shorter than the voice encoder's block "
                f"({VOICE_BLOCK_SAMPLES} samples); use window_ms >= 1615 or drop the voice encoder"
            )

    def _check_embedding(self) -> None:
        if self.feature_set != "summary":
            raise ConfigError(
                f"the speech embedding is set with feature_set = {self.feature_set!r}; it is fused into the summary "
                "statistics only: use feature_set = 'summary' or drop the embedding"
            )
        if self.sample_rate_hz != SAMPLE_RATE_HZ or self.hop_samples != MEL_HOP_SAMPLES:
            raise ConfigError(
                f"the speech embedding is set with sample_rate_hz = {self.sample_rate_hz} and frame_hop_ms = "
                f"{self.frame_hop_ms:g} ({self.hop_samples} samples); it needs {SAMPLE_RATE_HZ} Hz and a "
                f"{MEL_HOP_SAMPLES}-sample (10 ms) hop so its mel frames line up with the STFT frames: "
                "use those or drop the embedding"
            )
        if self.shared_mel and (self.frame_samples != MEL_WINDOW_SAMPLES or self.n_fft != MEL_SPAN_SAMPLES):
            raise ConfigError(
                f"the speech embedding is set with frame_ms = {self.frame_ms:g} ({self.frame_samples} samples) and "
                f"n_fft = {self.n_fft}; its log-mel comes from the same spectrum, which needs "
                f"{MEL_WINDOW_SAMPLES}-sample (25 ms) frames and n_fft = {MEL_SPAN_SAMPLES}: use those, "
                "frontend_version 1, or drop the embedding"
            )

    @cached_property  # frozen: computed once (the front-end reads these per hop)
    def frame_samples(self) -> int:
        """STFT frame length in samples."""
        return round(self.frame_ms * self.sample_rate_hz / 1000.0)

    @cached_property
    def shared_mel(self) -> bool:
        """The embedding's log-mel comes from the STFT frames' spectra (an embedding and front-end version 2)."""
        return self.embedding is not None and self.frontend_version >= 2

    @cached_property
    def frame_offset_samples(self) -> int:
        """Samples before STFT frame 0: 56 with :attr:`shared_mel` (frame ``j`` is then mel frame ``j``), else 0."""
        return MEL_FRAME_OFFSET_SAMPLES if self.shared_mel else 0

    @cached_property
    def hop_samples(self) -> int:
        """STFT hop in samples."""
        return round(self.frame_hop_ms * self.sample_rate_hz / 1000.0)

    @cached_property
    def window_samples(self) -> int:
        """Analysis window length in samples."""
        return round(self.window_ms * self.sample_rate_hz / 1000.0)

    @cached_property
    def window_hop_samples(self) -> int:
        """Hop between analysis windows in samples."""
        return round(self.window_hop_ms * self.sample_rate_hz / 1000.0)

    @cached_property
    def frames_per_window(self) -> int:
        """Number of STFT frames that fit entirely inside one analysis window."""
        return 1 + (self.window_samples - self.frame_samples - self.frame_offset_samples) // self.hop_samples

    @cached_property
    def frames_per_window_hop(self) -> int:
        """STFT frames between the starts of two successive analysis windows."""
        return self.window_hop_samples // self.hop_samples

    @cached_property
    def summary_layout(self) -> SummaryLayout:
        """Where :func:`model_input` puts the parts of a summary config's input (computed once)."""
        return SummaryLayout(
            summary=2 * len(frame_feature_names(self)),
            delta_columns=_delta_columns(self) if self.deltas else [],
            size=len(summary_feature_names(self)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in model metadata.

        ``embedding`` is a nested dict (:meth:`EmbeddingConfig.to_dict`); without an embedding
        the key is left out. ``frontend_version`` is always written, so the training cache keys on it
        and a model records the front-end it was trained with.
        """
        nested = ("embedding", "voice", "whisper")
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in nested}
        if self.embedding is not None:
            data["embedding"] = self.embedding.to_dict()
        if self.voice is not None:
            data["voice"] = self.voice.to_dict()
        if self.whisper is not None:  # only when set: the configs and cache keys of other models keep their form
            data["whisper"] = self.whisper.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Build from metadata; unknown or missing keys raise :class:`ConfigError`.

        ``embedding`` may be absent or null (no embedding, as in models made before it existed)
        or a dict for :meth:`EmbeddingConfig.from_dict`. Without ``frontend_version`` the dict is
        version 1 (made before the key existed).
        """
        refuse_unknown_keys(cls, data, "feature config")
        values = dict(data)
        values.setdefault("frontend_version", 1)
        embedding = values.pop("embedding", None)
        voice = values.pop("voice", None)
        whisper = values.pop("whisper", None)
        for name, value in (("embedding", embedding), ("voice", voice), ("whisper", whisper)):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"feature config {name} is {value!r}; expected a dict of {name} settings or null")
        try:
            return cls(
                **values,
                embedding=None if embedding is None else EmbeddingConfig.from_dict(embedding),
                voice=None if voice is None else VoiceConfig.from_dict(voice),
                whisper=None if whisper is None else WhisperConfig.from_dict(whisper),
            )
        except TypeError as exc:
            raise ConfigError(f"feature config {data} is invalid: {exc}") from exc


def frame_feature_names(cfg: FeatureConfig) -> list[str]:
    """Names of the per-frame feature columns, in order.

    Summary feature set: ``n_mfcc`` MFCCs, zero-crossing rate (fraction), RMS level
    (dBFS), spectral centroid, bandwidth and roll-off (Hz), flatness (0..1), 12 chroma
    bins (0..1) and 7 spectral-contrast bands (dB). Frames feature set: the MFCCs only.
    With ``pitch``, both sets end with F0 (semitones above 100 Hz, 0 when unvoiced) and
    voicing strength (0..1), see :mod:`emostream.frontend.pitch`.
    """
    mfcc = [f"mfcc_{i:02d}" for i in range(cfg.n_mfcc)]
    pitch = ["f0_st", "voicing"] if cfg.pitch else []
    if cfg.feature_set == "frames":
        return mfcc + pitch
    spectral = ["zcr", "rms_db", "centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness"]
    chroma = [f"chroma_{name}" for name in ("c", "cs", "d", "ds", "e", "f", "fs", "g", "gs", "a", "as", "b")]
    contrast = [f"contrast_{i}" for i in range(len(CONTRAST_EDGES_HZ))]
    return mfcc + spectral + chroma + contrast + pitch


def _delta_columns(cfg: FeatureConfig) -> list[int]:
    """Frame columns whose frame-to-frame changes the summary describes: the MFCCs and the RMS level."""
    return [*range(cfg.n_mfcc), frame_feature_names(cfg).index("rms_db")]


def summary_feature_names(cfg: FeatureConfig) -> list[str]:
    """Names of the :func:`model_input` columns of a summary model.

    Each frame feature's mean, then each one's std (F0 statistics over voiced speech
    frames only), then with ``deltas`` the std of the frame-to-frame change of each MFCC
    and of the RMS level; with an ``embedding``, the pooled embedding statistics
    (``emb_mean_00`` .. ``emb_max_95``, :func:`~emostream.frontend.embedding.pooled_feature_names`);
    with ``voice``, the voice embedding (``voice_000`` .. ``voice_255``, then any layer means,
    :func:`~emostream.frontend.voice.voice_feature_names`); with ``whisper``, per layer the mean then the
    std of its rows (``whisper_l{k}_mean_{i}``, ``whisper_l{k}_std_{i}``,
    :func:`~emostream.frontend.whisper.whisper_feature_names`).
    """
    names = frame_feature_names(cfg)
    columns = [f"{n}_mean" for n in names] + [f"{n}_std" for n in names]
    if cfg.deltas:
        columns += [f"{names[i]}_delta_std" for i in _delta_columns(cfg)]
    if cfg.embedding is not None:
        columns += pooled_feature_names(cfg.embedding)
    if cfg.voice is not None:
        columns += voice_feature_names(cfg.voice)
    if cfg.whisper is not None:
        columns += whisper_feature_names(cfg.whisper)
    return columns


class _Tables:
    """Filterbanks and matrices derived from a config, built once."""

    def __init__(self, cfg: FeatureConfig) -> None:
        freqs_hz = np.asarray(np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate_hz), dtype=np.float64)
        window = np.hanning(cfg.frame_samples + 1)[:-1]  # periodic Hann
        self.window = window.astype(np.float32)
        self.window64 = window
        self.pitch = PitchTables(window, cfg.sample_rate_hz) if cfg.pitch else None
        # One spectrum per frame: with pitch, its 2 * n_fft-point FFT also gives the n_fft-point
        # spectrum at every other bin (a frame no longer than n_fft is zero-padded either way).
        self.shared = self.pitch is not None and self.pitch.n_fft == 2 * cfg.n_fft
        self.fft_size = self.pitch.n_fft if self.pitch is not None and self.shared else cfg.n_fft
        self.freqs_hz = freqs_hz.astype(np.float32)
        self.freqs_sq = (freqs_hz**2).astype(np.float32)
        self.mel_fb_t = np.ascontiguousarray(_mel_filterbank(cfg, freqs_hz).T, dtype=np.float32)
        self.dct_t = np.ascontiguousarray(_dct_matrix(cfg.n_mels, cfg.n_mfcc).T, dtype=np.float32)
        self.chroma_fb_t = np.ascontiguousarray(_chroma_filterbank(freqs_hz).T, dtype=np.float32)
        self.contrast_bands = _contrast_bands(freqs_hz, cfg.sample_rate_hz / 2)
        # The bands are consecutive runs of bins: one min/max reduceat covers every band whose
        # quantile is a single bin; the few wider bands (quantile > 1 bin) are sorted on their own.
        self.contrast_lo = int(self.contrast_bands[0][0])
        self.contrast_hi = int(self.contrast_bands[-1][-1]) + 1
        self.contrast_starts = np.array([int(b[0]) - self.contrast_lo for b in self.contrast_bands], dtype=np.intp)
        self.contrast_sorted = [
            (i, slice(int(b[0]), int(b[-1]) + 1), _contrast_count(b.size))
            for i, b in enumerate(self.contrast_bands)
            if _contrast_count(b.size) > 1
        ]


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_filterbank(cfg: FeatureConfig, freqs_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Triangular, area-normalised mel filters, shape (n_mels, n_fft // 2 + 1)."""
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(cfg.fmin_hz)), _hz_to_mel(np.array(cfg.fmax_hz)), cfg.n_mels + 2)
    )
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs_hz[None, :] - lower) / (centre - lower)
    falling = (upper - freqs_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))


def _dct_matrix(n_in: int, n_out: int) -> npt.NDArray[np.float64]:
    """Orthonormal DCT-II, shape (n_out, n_in)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    mat = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    mat[0] /= np.sqrt(2.0)
    return mat


def _chroma_filterbank(freqs_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each FFT bin above CHROMA_FMIN_HZ shared between its two nearest pitch classes, shape (12, bins)."""
    fb = np.zeros((12, freqs_hz.size))
    valid = freqs_hz >= CHROMA_FMIN_HZ
    pitch_class = np.mod(12.0 * np.log2(freqs_hz[valid] / 440.0) + 9.0, 12.0)  # 0 = C
    for c in range(12):
        dist = np.abs(pitch_class - c)
        dist = np.minimum(dist, 12.0 - dist)
        fb[c, valid] = np.maximum(0.0, 1.0 - dist)
    return fb


def _contrast_bands(freqs_hz: npt.NDArray[np.float64], nyquist_hz: float) -> list[npt.NDArray[np.intp]]:
    """Bin indices of each octave band of the spectral contrast."""
    edges = [*CONTRAST_EDGES_HZ, nyquist_hz + 1.0]
    return [np.flatnonzero((freqs_hz >= lo) & (freqs_hz < hi)) for lo, hi in itertools.pairwise(edges)]


def _frames_view(samples: FloatArray, cfg: FeatureConfig, n_frames: int) -> FloatArray:
    """Strided (n_frames, frame_samples) read-only view of contiguous ``samples`` (no copy)."""
    view: FloatArray = np.ndarray(
        (n_frames, cfg.frame_samples),
        dtype=samples.dtype,
        buffer=samples,
        strides=(samples.itemsize * cfg.hop_samples, samples.itemsize),
    )
    view.flags.writeable = False
    return view


def _spectral_features(frames: FloatArray, power: FloatArray, tables: _Tables, out: FloatArray) -> None:
    """ZCR, RMS dB, centroid, bandwidth, roll-off, flatness, chroma and contrast into ``out`` (n, 25), float32.

    Each column is rounded to float32 once, as when they were stacked in float64 and cast.
    """
    signs = np.signbit(frames)
    out[:, 0] = np.count_nonzero(signs[:, 1:] != signs[:, :-1], axis=1) / np.float32(frames.shape[1])
    out[:, 1] = 10.0 * np.log10(np.einsum("ij,ij->i", frames, frames) / np.float32(frames.shape[1]) + _EPS)
    mag = np.sqrt(power)
    mag_sum = mag.sum(axis=1) + _EPS
    centroid = mag @ tables.freqs_hz / mag_sum
    out[:, 2] = centroid
    out[:, 3] = np.sqrt(np.maximum(0.0, mag @ tables.freqs_sq / mag_sum - centroid**2))
    cumulative = np.cumsum(mag, axis=1)
    out[:, 4] = tables.freqs_hz[np.argmax(cumulative >= ROLLOFF_FRACTION * cumulative[:, -1:], axis=1)]
    log_power = power + _EPS
    np.log(log_power, out=log_power)
    n_bins = power.shape[1]  # sum / n: the same float32 result as .mean(), without its Python overhead
    out[:, 5] = np.exp(log_power.sum(axis=1) / n_bins) / (power.sum(axis=1) / n_bins + _EPS)
    chroma = np.matmul(power, tables.chroma_fb_t)
    chroma /= np.maximum.reduce(chroma, axis=1, keepdims=True) + _EPS
    out[:, 6:18] = chroma
    out[:, 18:] = _spectral_contrast(power, tables)


def _contrast_count(n_bins: int) -> int:
    """Bins averaged for a band's peak and valley."""
    return max(1, round(CONTRAST_QUANTILE * n_bins))


def _spectral_contrast(power: FloatArray, tables: _Tables) -> FloatArray:
    """Peak-to-valley ratio in dB of each contrast band, shape (n, n_bands).

    Peak/valley = mean of the band's top/bottom ``_contrast_count`` bins (max/min when one bin).
    """
    span = power[:, tables.contrast_lo : tables.contrast_hi]
    valley = np.minimum.reduceat(span, tables.contrast_starts, axis=1)
    peak = np.maximum.reduceat(span, tables.contrast_starts, axis=1)
    for band, bins, count in tables.contrast_sorted:
        ordered = np.sort(power[:, bins], axis=1)
        valley[:, band] = ordered[:, :count].sum(axis=1) / count
        peak[:, band] = ordered[:, -count:].sum(axis=1) / count
    return (10.0 * (np.log10(peak + _EPS) - np.log10(valley + _EPS))).astype(np.float32, copy=False)


class FrameFeaturizer:
    """Per-frame features computed incrementally from chunks of any size.

    ``process(chunk)`` takes float32 mono samples at ``cfg.sample_rate_hz`` and returns
    the rows, shape (n_new_frames, n_frame_features), float32, of every frame that the
    chunk completed; frame ``j`` starts at sample ``cfg.frame_offset_samples + j * hop_samples``
    of the stream. The result equals :func:`frame_features` of the concatenated stream.
    :meth:`process_with_power` also returns the frames' ``n_fft``-point power spectra (what the
    speech embedding's log-mel is made from).
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.n_features = len(frame_feature_names(cfg))
        self._tables = _Tables(cfg)
        self._carry = np.zeros(cfg.frame_samples + cfg.hop_samples, dtype=np.float32)
        self.reset()

    @cached_property
    def _empty(self) -> FloatArray:
        return np.zeros((0, self.n_features), dtype=np.float32)

    @cached_property
    def _empty_power(self) -> FloatArray:
        return np.zeros((0, self.cfg.n_fft // 2 + 1), dtype=np.float32)

    def reset(self) -> None:
        """Forget buffered samples; the next chunk starts the stream (and frame 0) again."""
        self._carry_len = 0
        self._skip = self.cfg.frame_offset_samples

    def process(self, chunk: npt.ArrayLike) -> FloatArray:
        """Feed samples; return the feature rows of the frames they complete."""
        return self.process_with_power(chunk)[0]

    def process_with_power(self, chunk: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Feed samples; return the feature rows and the ``n_fft``-point power spectra of the frames they complete.

        Shapes (n_new_frames, n_frame_features) and (n_new_frames, n_fft // 2 + 1), float32; the power is
        that of the Hann-windowed float samples (not scaled to int16).
        """
        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self._skip:
            dropped = min(self._skip, samples.size)
            samples = samples[dropped:]
            self._skip -= dropped
        if self._carry_len:
            samples = np.concatenate([self._carry[: self._carry_len], samples])
        cfg = self.cfg
        n_frames = 0 if samples.size < cfg.frame_samples else 1 + (samples.size - cfg.frame_samples) // cfg.hop_samples
        consumed = n_frames * cfg.hop_samples
        rest = samples[consumed:]
        if rest.size > self._carry.size:
            self._carry = np.zeros(rest.size, dtype=np.float32)
        self._carry[: rest.size] = rest
        self._carry_len = rest.size
        if n_frames == 0:
            return self._empty, self._empty_power
        samples = np.ascontiguousarray(samples[: consumed - cfg.hop_samples + cfg.frame_samples])
        return self.compute(_frames_view(samples, cfg, n_frames))

    def frames_at(self, audio: FloatArray, audio_first: int, frames: npt.NDArray[np.intp]) -> FloatArray:
        """The samples of the given frames, shape (len(frames), frame_samples), float32.

        ``audio`` holds the stream's samples from global sample ``audio_first`` on (the stream counted
        from the last :meth:`reset`, the frame offset included); ``frames`` are global frame indices
        (frame ``j`` starts at sample ``frame_offset_samples + j * hop_samples``), ascending, all inside ``audio``.
        A run of consecutive frames is a read-only strided view of ``audio``; other frames are a copy of their rows.
        """
        cfg = self.cfg
        starts = cfg.frame_offset_samples + frames * cfg.hop_samples - audio_first
        if frames.size and (starts[0] < 0 or starts[-1] + cfg.frame_samples > audio.size):
            raise ValueError(f"frames {frames[0]}..{frames[-1]} are not all inside the audio held")
        if frames.size == 0:
            return np.zeros((0, cfg.frame_samples), dtype=np.float32)
        span = int(frames[-1] - frames[0]) + 1
        view = _frames_view(np.ascontiguousarray(audio[starts[0] :]), cfg, span)  # every frame of the span, no copy
        if span == frames.size:  # one run: the view itself
            return view
        picked: FloatArray = view[frames - frames[0]]  # the rows asked for (a copy of those rows only)
        return picked

    def power(self, frames: FloatArray) -> FloatArray:
        """The ``n_fft``-point power spectra of frames (n, frame_samples), float32 (n, n_fft // 2 + 1).

        The same values :meth:`compute` returns for them (the same FFT), so a frame's spectrum
        does not depend on which of the two made it.
        """
        out = np.empty((frames.shape[0], self.cfg.n_fft // 2 + 1), dtype=np.float32)
        for start in range(0, frames.shape[0], _BATCH_FRAMES):
            block = frames[start : start + _BATCH_FRAMES]
            full = self._power64(block)
            out[start : start + block.shape[0]] = full[:, ::2] if self._tables.shared else full
        return out

    def _power64(self, frames: FloatArray) -> npt.NDArray[np.float64]:
        """Power spectra of at most ``_BATCH_FRAMES`` frames, float64 (n, fft_size // 2 + 1), a view of a buffer.

        float64 FFTs into preallocated buffers: NumPy's float32 FFT and its FFTs into fresh arrays
        go through large temporaries, which cost more than the transform (page faults on every call).
        The spectrum's own input and the power are kept in the buffers until the next call.
        """
        n = frames.shape[0]
        buffers = _buffers(self._tables.fft_size, self.cfg.frame_samples)
        padded, spectrum, power = buffers.padded[:n], buffers.spectrum[:n], buffers.power[:n]
        np.multiply(frames, self._tables.window64, out=padded[:, : self.cfg.frame_samples])  # the rest stays 0
        np.fft.rfft(padded, axis=1, out=spectrum)
        np.square(spectrum.real, out=power)
        power += np.square(spectrum.imag, out=buffers.scratch[:n])
        return power

    def compute(self, frames: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Feature rows and ``n_fft``-point power spectra of frames (n, frame_samples): as from process_with_power."""
        if frames.shape[0] == 0:
            return self._empty, self._empty_power
        parts = [self._compute_block(frames[i : i + _BATCH_FRAMES]) for i in range(0, frames.shape[0], _BATCH_FRAMES)]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _compute_block(self, frames: FloatArray) -> tuple[FloatArray, FloatArray]:
        cfg, tables = self.cfg, self._tables
        full64 = self._power64(frames)
        power = np.ascontiguousarray(full64[:, ::2] if tables.shared else full64, dtype=np.float32)
        log_mel = power @ tables.mel_fb_t
        log_mel += np.float32(_EPS)  # in place: 10 log10(mel + eps), the same float32 operations
        np.log10(log_mel, out=log_mel)
        log_mel *= 10.0
        rows = np.empty((frames.shape[0], self.n_features), dtype=np.float32)
        rows[:, : cfg.n_mfcc] = log_mel @ tables.dct_t
        if cfg.feature_set == "summary":
            _spectral_features(frames, power, tables, rows[:, cfg.n_mfcc : cfg.n_mfcc + _N_SPECTRAL])
        if tables.pitch is not None:
            if tables.shared:  # the autocorrelation: an inverse FFT of the power, with a complex input (see pitch)
                n = frames.shape[0]
                buffers = _buffers(tables.fft_size, cfg.frame_samples)
                complex_power = buffers.complex_power[:n]
                complex_power.real = full64  # the imaginary part stays 0: nothing writes it
                ac = np.fft.irfft(complex_power, tables.pitch.n_fft, axis=1, out=buffers.autocorrelation[:n])
                f0_voicing = pitch_from_autocorrelation(ac, tables.pitch)
            else:
                f0_voicing = frame_pitch(frames * tables.window, tables.pitch)
            rows[:, -2], rows[:, -1] = f0_voicing
        return rows, power


class _Buffers:
    """Preallocated FFT buffers (``_BATCH_FRAMES`` rows), shared by the featurizers of one thread."""

    def __init__(self, fft_size: int) -> None:
        bins = fft_size // 2 + 1
        self.padded = np.zeros((_BATCH_FRAMES, fft_size))
        self.spectrum = np.zeros((_BATCH_FRAMES, bins), dtype=np.complex128)
        self.power = np.zeros((_BATCH_FRAMES, bins))
        self.scratch = np.zeros((_BATCH_FRAMES, bins))
        self.complex_power = np.zeros((_BATCH_FRAMES, bins), dtype=np.complex128)
        self.autocorrelation = np.zeros((_BATCH_FRAMES, fft_size))


_THREAD_BUFFERS = threading.local()


def _buffers(fft_size: int, frame_samples: int) -> _Buffers:
    """This thread's buffers for ``fft_size``-point FFTs of ``frame_samples``-sample frames.

    About 5 MB for 1024 points; used within one call only. One set per frame length, so the
    zero padding after the frames is never written.
    """
    held: dict[tuple[int, int], _Buffers] | None = getattr(_THREAD_BUFFERS, "by_size", None)
    if held is None:
        held = _THREAD_BUFFERS.by_size = {}
    key = (fft_size, frame_samples)
    if key not in held:
        held[key] = _Buffers(fft_size)
    return held[key]


def frame_features(signal: npt.ArrayLike, cfg: FeatureConfig) -> FloatArray:
    """Whole-signal per-frame features, shape (n_frames, n_frame_features), float32."""
    return FrameFeaturizer(cfg).process(signal)


def mean_std(data: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean and (population) standard deviation along axis 0 of float64 ``data``, which it overwrites.

    ``data``: shape (n, ...) with n >= 1, float64, C-contiguous; it holds the squared deviations on return.
    Returns two float64 arrays of shape ``data.shape[1:]``. The same arithmetic as ``data.mean(axis=0)`` and
    ``data.std(axis=0)`` (one sum for both, the divisions by the count, the same reductions), so the
    same bits, without their wrapper layers and the second pass over the mean.
    """
    n = data.shape[0]
    mean = np.add.reduce(data, axis=0, keepdims=True)  # keepdims: an array (also for 1-D data) to divide in place
    np.true_divide(mean, n, out=mean)
    np.subtract(data, mean, out=data)
    np.multiply(data, data, out=data)
    std = np.add.reduce(data, axis=0, keepdims=True)
    np.true_divide(std, n, out=std)
    np.sqrt(std, out=std)
    return mean.reshape(data.shape[1:]), std.reshape(data.shape[1:])


def summary_vector(frames: FloatArray, speech_mask: npt.NDArray[np.bool_] | None = None) -> FloatArray:
    """Mean and standard deviation of each column over the speech frames of a window.

    ``frames`` has shape (n_frames, n_frame_features); ``speech_mask`` (n_frames,) picks
    the frames that count. With fewer than two speech frames every frame counts.
    Returns shape (2 * n_frame_features,), float32: all means, then all stds.
    """
    out = np.empty(2 * frames.shape[1], dtype=np.float32)
    _summary_into(out, frames, speech_mask)
    return out


def _summary_into(out: FloatArray, frames: FloatArray, speech_mask: npt.NDArray[np.bool_] | None) -> None:
    """:func:`summary_vector` of ``frames`` written into ``out[: 2 * n_frame_features]`` (float32)."""
    if speech_mask is not None and int(np.count_nonzero(speech_mask)) >= 2:
        frames = frames[speech_mask]
    n = frames.shape[1]
    out[:n], out[n : 2 * n] = mean_std(frames.astype(np.float64))


def frames_matrix(frames: FloatArray) -> FloatArray:
    """The CNN's input for one window: its MFCC frames, shape (frames_per_window, n_mfcc), float32."""
    return np.array(frames, dtype=np.float32, copy=True)


def _voiced_f0_stats(frames: FloatArray, speech_mask: npt.NDArray[np.bool_] | None, f0_col: int) -> FloatArray:
    """Mean and std of F0 over the voiced speech frames (zeros when none is voiced), float32 (2,)."""
    voiced = frames[:, f0_col] != 0
    if speech_mask is not None:
        voiced &= speech_mask
    values = frames[voiced, f0_col].astype(np.float64)
    if values.size == 0:
        return np.zeros(2, dtype=np.float32)
    mean, std = mean_std(values)
    return np.array([mean, std], dtype=np.float32)


def _delta_std(frames: FloatArray, speech_mask: npt.NDArray[np.bool_] | None, columns: list[int]) -> FloatArray:
    """Std of frame-to-frame changes of ``columns`` between consecutive speech frames, float32."""
    picked = frames[:, columns]
    deltas = np.subtract(picked[1:], picked[:-1], dtype=np.float64)  # the float64 differences of the float32 values
    if speech_mask is not None:
        pairs = speech_mask[1:] & speech_mask[:-1]
        if int(np.count_nonzero(pairs)) >= 2:
            deltas = deltas[pairs]
    if deltas.shape[0] == 0:
        return np.zeros(len(columns), dtype=np.float32)
    return mean_std(deltas)[1].astype(np.float32)


def model_input(
    frames: FloatArray,
    speech_mask: npt.NDArray[np.bool_] | None,
    cfg: FeatureConfig,
    *,
    pooled_embedding: FloatArray | None = None,
    voice_embedding: FloatArray | None = None,
    whisper_part: FloatArray | None = None,
) -> FloatArray:
    """One window's model input for ``cfg.feature_set`` (before normalisation).

    Summary: shape (len(summary_feature_names(cfg)),); frames: (frames_per_window, n_frame_features).
    With ``cfg.embedding``, ``pooled_embedding`` (shape (cfg.embedding.pooled_dim,), float32, from
    :func:`~emostream.frontend.embedding.pool_embeddings`) is required and follows the statistics;
    without it, it must be None. With ``cfg.voice``, ``voice_embedding`` (shape (cfg.voice.dim,), float32, from
    :class:`~emostream.frontend.voice.VoiceEncoder`) is required and follows; without it, None. With
    ``cfg.whisper``, ``whisper_part`` (shape (cfg.whisper.dim,), float32, from
    :class:`~emostream.frontend.whisper.WhisperEncoder`) is required and ends the summary; without it, None.
    """
    if cfg.feature_set == "frames":
        return frames_matrix(frames)
    _check_embeddings(cfg, pooled_embedding, voice_embedding)
    _check_whisper_part(cfg, whisper_part)
    layout = cfg.summary_layout
    out = np.empty(layout.size, dtype=np.float32)
    _summary_into(out, frames, speech_mask)
    if cfg.pitch:
        n = frames.shape[1]
        f0_col = n - 2
        out[[f0_col, n + f0_col]] = _voiced_f0_stats(frames, speech_mask, f0_col)
    at = layout.summary
    if cfg.deltas:
        out[at : at + len(layout.delta_columns)] = _delta_std(frames, speech_mask, layout.delta_columns)
        at += len(layout.delta_columns)
    for tail in (pooled_embedding, voice_embedding, whisper_part):
        if tail is not None:
            out[at : at + tail.size] = tail
            at += tail.size
    return out


def _check_embeddings(
    cfg: FeatureConfig, pooled_embedding: FloatArray | None, voice_embedding: FloatArray | None
) -> None:
    """Raise ValueError unless the embeddings given are exactly those ``cfg`` fuses, in their shapes."""
    _check_part(
        "pooled_embedding", pooled_embedding, None if cfg.embedding is None else cfg.embedding.pooled_dim, "embedding"
    )
    _check_part("voice_embedding", voice_embedding, None if cfg.voice is None else cfg.voice.dim, "voice encoder")


def _check_whisper_part(cfg: FeatureConfig, whisper_part: FloatArray | None) -> None:
    """Raise ValueError unless ``whisper_part`` is given exactly when ``cfg`` fuses the whisper encoder, in shape."""
    _check_part("whisper_part", whisper_part, None if cfg.whisper is None else cfg.whisper.dim, "whisper encoder")


def _check_part(name: str, part: FloatArray | None, dim: int | None, what: str) -> None:
    """Raise ValueError unless ``part`` has shape (``dim``,), or is None when ``dim`` is None (no ``what`` fused)."""
    if dim is not None:
        if part is None or part.shape != (dim,):
            got = None if part is None else part.shape
            raise ValueError(f"{name} has shape {got}; this fused config needs ({dim},)")
    elif part is not None:
        raise ValueError(f"{name} given, but the feature config has no {what}")
