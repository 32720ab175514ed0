"""Pretrained speech embedding (openWakeWord's re-implementation of Google's speech_embedding).

Two vendored TFLite files (``emostream/models/speech_embedding/``, see the README there)
define the front-end: ``melspectrogram.tflite`` (log-mel spectrogram) and
``embedding_model.tflite`` (76 mel frames x 32 bins -> one 96-d embedding). Both are
loaded through :func:`emostream.inference.tflite.interpreter_class` and checked against the
sha256 in :class:`EmbeddingConfig`. With ``EmbeddingConfig(int8=True)`` the embedding model is
``embedding_model.int8.tflite`` instead: the same graph with int8 weights and activations
(float input and output), derived offline from the float file by
``python -m emostream.train.quantize_embedding`` (training side, TensorFlow); the runtime
only loads it.

Conventions (openWakeWord 0.5.1, ``openwakeword/utils.py``, class ``AudioFeatures``):

* audio: 16 kHz mono; the models take int16-scaled float32 (our float samples in [-1, 1]
  times 32768, so audio read as float from 16-bit PCM gives back the exact PCM values);
* mel frame ``j`` (10 ms hop) is computed from samples ``[160 j, 160 j + 512)``: a 400-point
  periodic Hann window centred in a 512-point DFT, power spectrum, 32 mel bands,
  ``10 log10(max(., 1e-10))`` dB, then openWakeWord's transform ``x / 10 + 2``;
* one embedding takes 76 consecutive mel frames. We index it by its **end frame** ``t``
  (exclusive): it reads mel frames ``t - 76 .. t - 1``, i.e. audio samples
  ``[160 (t - 76), 160 t + 352)`` (0.782 s). Times are therefore integer frame counts.

The mel model also floors its output at "its input's maximum minus 80 dB" (``top_db``).
That maximum depends on how much audio the model is given (openWakeWord's whole-clip and
streaming paths differ, as its ``_streaming_melspectrogram`` docstring notes), so it cannot
be honoured identically by a stream. Here the floor is taken per embedding input: each
76 x 32 block is floored at its own maximum minus 8 (80 dB after ``/10``) before the
embedding model sees it. That depends only on the embedding's own audio, so streaming and
whole-signal runs give the same embeddings, and it equals what openWakeWord computes for a
0.78 s clip. The log-mel itself is computed in numpy with the DFT kernels and mel
filterbank read from ``melspectrogram.tflite`` (the kernels are verified against the
analytic windowed DFT at load): the same arithmetic as the TFLite graph at a tenth of its
cost (see ``benchmarks/embedding_cost.py``), and independent of chunk boundaries.

:class:`SpeechEmbedder` takes audio chunks of any size, computes each mel frame once, and
computes embeddings only when asked (:meth:`SpeechEmbedder.embeddings`), caching those on
the stride grid so overlapping analysis windows reuse them. :func:`pool_embeddings` turns
a window's embeddings into one fixed-length vector.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, ModelError
from emostream.inference.tflite import interpreter_class, native_stderr_silenced
from emostream.schema import refuse_unknown_keys

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SAMPLE_RATE_HZ = 16000
PCM_SCALE = 32768.0
"""Float samples in [-1, 1] are multiplied by this to get the int16-scaled input of the models."""
MEL_HOP_SAMPLES = 160
"""One mel frame every 10 ms."""
MEL_SPAN_SAMPLES = 512
"""Samples read by one mel frame (the DFT length; the Hann window covers the middle 400)."""
MEL_BINS = 32
EMBEDDING_FRAMES = 76
"""Mel frames read by one embedding."""
EMBEDDING_DIM = 96
EMBEDDING_TAIL_FRAMES = -(-(MEL_SPAN_SAMPLES - MEL_HOP_SAMPLES) // MEL_HOP_SAMPLES)
"""Whole 10 ms frames the audio of an embedding ending at ``t`` reaches past ``t`` (352 samples -> 3)."""
TOP_DB = 80.0
AMIN = 1e-10
POOLINGS: tuple[str, ...] = ("mean", "std", "max", "min")

MEL_MODEL_FILE = "melspectrogram.tflite"
EMBEDDING_MODEL_FILE = "embedding_model.tflite"
EMBEDDING_MODEL_INT8_FILE = "embedding_model.int8.tflite"
MEL_MODEL_SHA256 = "96fa0adccb6e8cf95cb14465409a1a2898ee4a96a85bb9ed3c7eb0e68bf163e8"
EMBEDDING_MODEL_SHA256 = "c0aea21eb84a4ce90a08c870da41b7a7173b45269e6a3207c71d67c40f3a59d8"
EMBEDDING_MODEL_INT8_SHA256 = "445748b1f3de3bd6e3c510143dbbd1c74e31e5405c2a444554c3f7e1762ea3ab"
EMBEDDING_VARIANTS: tuple[str, ...] = ("float", "int8")
"""Embedding model files a config can run (:attr:`EmbeddingConfig.variant`); ``float`` is the default.

The float file is a continuous function of its input: a gain of 0.999 moves its embeddings by
about 3e-5 of their RMS. The int8 file quantises its activations, so it is piecewise constant
and the same gain moves them by about 5 % RMS, as much as its whole error against float, which
changes readings (issue 19 item 13; ``python -m benchmarks --only stability``, docs/stability.md).
"""
MEL_WINDOW_SAMPLES = 400
"""Samples under the Hann window of one mel frame."""
MEL_FRAME_OFFSET_SAMPLES = (MEL_SPAN_SAMPLES - MEL_WINDOW_SAMPLES) // 2
"""Where the window starts inside a mel frame's span (56).

Mel frame ``j`` windows samples ``[160 j + 56, 160 j + 456)``.
"""
_FFT_BINS = MEL_SPAN_SAMPLES // 2 + 1
_WINDOW_SAMPLES = MEL_WINDOW_SAMPLES
_KERNEL_TOLERANCE = 1e-5


@dataclass(frozen=True, kw_only=True)
class EmbeddingConfig:
    """Settings of the speech-embedding front-end; saved in the metadata of models that use it.

    ``stride_frames``: mel frames (10 ms) between the end frames of two embeddings on the
    grid (end frames that are multiples of it); openWakeWord's native stride is 8. The
    default 50 (two embeddings a second) is the native-8 cost / 6, the only measured stride
    that keeps the whole pipeline within CPU RTF 0.005 (``python -m benchmarks.embedding_cost``).
    ``min_speech_share``: an embedding is computed for a window only if at least this
    share of the 76 frames it reads are speech (0 computes all of them).
    ``max_batch``: embeddings computed in one TFLite invoke at most.
    ``history_frames``: mel frames (and cached embeddings) kept behind the newest frame.
    ``pooling``: statistics of a window's embeddings, in order (see :func:`pool_embeddings`).
    ``mel_model_sha256`` / ``embedding_model_sha256``: expected digests of the two vendored files.
    ``int8``: run ``embedding_model.int8.tflite`` (int8 weights and activations, derived from
    the vendored float model by ``python -m emostream.train.quantize_embedding``; about a third
    of the float model's CPU time, embeddings within cosine ~0.99 of the float ones, see the
    README in ``models/speech_embedding/``) instead of the float model; its digest is
    ``embedding_model_int8_sha256``. Embeddings differ from the float model's, so a model
    trained on one variant must run with the same one (the setting is saved in its metadata).
    New models use the float file (the default): int8 readings change on inaudible changes
    (see :data:`EMBEDDING_VARIANTS`); the int8 file stays for the models trained on it.
    """

    stride_frames: int = 50
    min_speech_share: float = 0.5
    max_batch: int = 8
    history_frames: int = 500
    pooling: tuple[str, ...] = ("mean", "std", "max")
    mel_model_sha256: str = MEL_MODEL_SHA256
    embedding_model_sha256: str = EMBEDDING_MODEL_SHA256
    int8: bool = False
    embedding_model_int8_sha256: str = EMBEDDING_MODEL_INT8_SHA256

    def __post_init__(self) -> None:
        if not 1 <= self.stride_frames <= 1000:
            raise ConfigError(f"embedding stride_frames is {self.stride_frames}; expected 1 to 1000 (native 8)")
        if not 0.0 <= self.min_speech_share <= 1.0:
            raise ConfigError(f"embedding min_speech_share is {self.min_speech_share}; expected 0.0 to 1.0")
        if not 1 <= self.max_batch <= 256:
            raise ConfigError(f"embedding max_batch is {self.max_batch}; expected 1 to 256")
        if self.history_frames < EMBEDDING_FRAMES:
            raise ConfigError(
                f"embedding history_frames is {self.history_frames}; expected at least {EMBEDDING_FRAMES} "
                "(one embedding's input), typically the analysis window plus one window hop"
            )
        if (
            not self.pooling
            or any(p not in POOLINGS for p in self.pooling)
            or len(set(self.pooling)) != len(self.pooling)
        ):
            raise ConfigError(f"embedding pooling is {self.pooling}; expected distinct names from {POOLINGS}")
        if not isinstance(self.int8, bool):
            raise ConfigError(f"embedding int8 is {self.int8!r}; expected true or false")
        for name in ("mel_model_sha256", "embedding_model_sha256", "embedding_model_int8_sha256"):
            value = getattr(self, name)
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ConfigError(f"embedding {name} is {value!r}; expected 64 lower-case hex digits")

    @property
    def pooled_dim(self) -> int:
        """Length of :func:`pool_embeddings`' output."""
        return EMBEDDING_DIM * len(self.pooling)

    @property
    def variant(self) -> str:
        """The embedding file this config runs, one of :data:`EMBEDDING_VARIANTS`."""
        return "int8" if self.int8 else "float"

    @property
    def embedding_model_file(self) -> str:
        """File name of the embedding model this config runs (float or int8)."""
        return EMBEDDING_MODEL_INT8_FILE if self.int8 else EMBEDDING_MODEL_FILE

    @property
    def embedding_model_file_sha256(self) -> tuple[str, str]:
        """Expected sha256 of :attr:`embedding_model_file` and the setting that holds it."""
        if self.int8:
            return self.embedding_model_int8_sha256, "embedding_model_int8_sha256"
        return self.embedding_model_sha256, "embedding_model_sha256"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in model metadata.

        A float config with the default int8 digest leaves out ``int8`` and
        ``embedding_model_int8_sha256``: its dict (and so the feature-cache keys and the
        metadata of models made before the int8 variant) is unchanged, and :meth:`from_dict`
        reads a dict without them as float.
        """
        data = dataclasses.asdict(self)
        data["pooling"] = list(self.pooling)
        if not self.int8 and self.embedding_model_int8_sha256 == EMBEDDING_MODEL_INT8_SHA256:
            del data["int8"], data["embedding_model_int8_sha256"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingConfig:
        """Build from metadata; unknown keys or bad values raise :class:`ConfigError`."""
        refuse_unknown_keys(cls, data, "embedding config")
        values = dict(data)
        if "pooling" in values:
            values["pooling"] = tuple(values["pooling"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"embedding config {data} is invalid: {exc}") from exc


def pooled_feature_names(cfg: EmbeddingConfig) -> list[str]:
    """Names of :func:`pool_embeddings`' columns: ``emb_mean_00 .. emb_mean_95``, then the next statistic."""
    return [f"emb_{stat}_{i:02d}" for stat in cfg.pooling for i in range(EMBEDDING_DIM)]


def pool_embeddings(embeddings: npt.ArrayLike, pooling: Sequence[str] = ("mean", "std", "max")) -> FloatArray:
    """Pool a window's embeddings, shape (n, 96), into one vector of shape (96 * len(pooling),), float32.

    Each statistic is taken over the n embeddings per dimension, in ``pooling`` order. With no
    embeddings (n = 0: no speech in the window) the result is all zeros.
    """
    emb = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
    out = np.zeros(EMBEDDING_DIM * len(pooling), dtype=np.float32)
    if emb.shape[0] == 0:
        return out
    for i, stat in enumerate(pooling):
        if stat == "mean":
            value = emb.mean(axis=0)
        elif stat == "std":
            value = emb.std(axis=0)
        elif stat == "max":
            value = emb.max(axis=0)
        elif stat == "min":
            value = emb.min(axis=0)
        else:
            raise ConfigError(f"pooling statistic {stat!r} is unknown; expected one of {POOLINGS}")
        out[i * EMBEDDING_DIM : (i + 1) * EMBEDDING_DIM] = value
    return out


def speech_embedding_dir() -> Path:
    """Folder of the vendored models (``emostream/models/speech_embedding``)."""
    return Path(str(resources.files("emostream.models"))) / "speech_embedding"


def _read_checked(path: Path, expected_sha256: str, setting: str, context: str = "the embedding config") -> bytes:
    if path.name == EMBEDDING_MODEL_INT8_FILE:
        origin = "the int8 model shipped with emostream"
        fix = (
            "reinstall emostream, or regenerate it with `python -m emostream.train.quantize_embedding` and use "
            "a model made for that file (see models/speech_embedding/README.md)"
        )
    else:
        origin = "the vendored openwakeword 0.5.1 model"
        fix = (
            "restore it from the openwakeword 0.5.1 wheel (see models/speech_embedding/README.md) "
            "or use a model made for this file"
        )
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            f"cannot read the speech-embedding model {path} ({exc.strerror}); expected {origin} in "
            "emostream/models/speech_embedding/: reinstall emostream"
        ) from exc
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected_sha256:
        raise ModelError(
            f"{path} has sha256 {digest}, but {context} expects {expected_sha256} ({setting}); "
            f"the file is not {origin}: {fix}"
        )
    return content


def check_model_files(
    config: EmbeddingConfig, *, model_dir: Path | None = None, context: str = "the embedding config"
) -> None:
    """Refuse (:class:`ModelError`, exit code 5) embedding files whose sha256 differs from ``config``'s.

    Reads the mel file and the embedding file ``config`` runs (float or int8, see
    :attr:`EmbeddingConfig.int8`) in ``model_dir`` (default: the vendored folder); the error names the
    file, the expected and found digests, who expects them (``context``, e.g. a model's
    metadata path) and the fix. :class:`SpeechEmbedder` makes the same check when it loads.
    """
    folder = speech_embedding_dir() if model_dir is None else Path(model_dir)
    _read_checked(folder / MEL_MODEL_FILE, config.mel_model_sha256, "mel_model_sha256", context)
    expected, setting = config.embedding_model_file_sha256
    _read_checked(folder / config.embedding_model_file, expected, setting, context)


class _MelTables:
    """The log-mel arithmetic of ``melspectrogram.tflite``, with its constants read from the file."""

    def __init__(self, interpreter: Any, path: Path) -> None:
        kernels = []
        filterbank = None
        scalars: list[float] = []
        for detail in interpreter.get_tensor_details():
            shape = tuple(int(s) for s in detail["shape"])
            if shape == (_FFT_BINS, 1, MEL_SPAN_SAMPLES, 1):
                kernels.append(np.asarray(interpreter.get_tensor(detail["index"]), dtype=np.float64)[:, 0, :, 0])
            elif shape == (_FFT_BINS, MEL_BINS):
                filterbank = np.asarray(interpreter.get_tensor(detail["index"]), dtype=np.float64)
            elif shape == () and detail["dtype"] == np.float32:
                try:
                    scalars.append(float(interpreter.get_tensor(detail["index"])))
                except ValueError:  # a scalar computed at run time, not a constant
                    continue
        if len(kernels) != 2 or filterbank is None:
            raise ModelError(
                f"{path} does not have the layout of openwakeword 0.5.1's melspectrogram model "
                f"(two {_FFT_BINS}x512 DFT kernels and a {_FFT_BINS}x{MEL_BINS} filterbank); restore the vendored file"
            )
        self.window = np.zeros(MEL_SPAN_SAMPLES)
        start = (MEL_SPAN_SAMPLES - _WINDOW_SAMPLES) // 2
        self.window[start : start + _WINDOW_SAMPLES] = 0.5 - 0.5 * np.cos(
            2 * np.pi * np.arange(_WINDOW_SAMPLES) / _WINDOW_SAMPLES
        )
        n = np.arange(MEL_SPAN_SAMPLES)
        k = np.arange(_FFT_BINS)[:, None]
        cos = self.window * np.cos(2 * np.pi * k * n / MEL_SPAN_SAMPLES)
        sin = self.window * np.sin(2 * np.pi * k * n / MEL_SPAN_SAMPLES)
        real = [kern for kern in kernels if np.abs(kern - cos).max() < _KERNEL_TOLERANCE]
        imag = [kern for kern in kernels if np.abs(np.abs(kern) - np.abs(sin)).max() < _KERNEL_TOLERANCE]
        if not real or not imag or not any(abs(v - TOP_DB) < 1e-6 for v in scalars):
            raise ModelError(
                f"{path}: its DFT kernels or its top_db constant differ from openwakeword 0.5.1's "
                "(periodic Hann 400 in a 512-point DFT, top_db 80); restore the vendored file"
            )
        self.filterbank = filterbank
        self.filterbank_pcm32 = (filterbank * PCM_SCALE**2).astype(np.float32)

    def log_mel_from_power(self, power: FloatArray) -> FloatArray:
        """Transformed log-mel, shape (n, 32), float32, from power spectra of float (not int16-scaled) samples.

        ``power``: (n, 257) float32, the 512-point power of each mel frame's 400 Hann-windowed samples
        (a DFT's power does not depend on where in the 512 points the windowed samples sit).
        """
        mel = np.maximum(power @ self.filterbank_pcm32, np.float32(AMIN))
        return np.log10(mel) + np.float32(2.0)

    def log_mel(self, frames: npt.NDArray[np.float64]) -> FloatArray:
        """Transformed log-mel (``dB / 10 + 2``), shape (n, 32), from int16-scaled frames of shape (n, 512)."""
        spectrum = np.fft.rfft(frames * self.window, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        mel = np.maximum(power @ self.filterbank, AMIN)
        return (np.log10(mel) + 2.0).astype(np.float32)  # 10 log10(x) dB, then / 10 + 2


class SpeechEmbedder:
    """Streaming log-mel and on-demand 96-d speech embeddings for one 16 kHz mono stream.

    ``process(chunk)`` takes float32 samples in [-1, 1] in chunks of any size and computes
    every mel frame the audio completes (frame ``j`` needs samples up to ``160 j + 512``).
    ``embeddings(ends)`` returns the embeddings ending at the given mel frames, computing only
    those not cached yet, in batches of at most ``max_batch``. The window extractor asks
    :meth:`window_embeddings` for a window's speech embeddings. Frame indices count from the
    last :meth:`reset`; frames older than ``history_frames`` behind the newest (and their
    embeddings) are dropped at the next :meth:`process`.
    """

    def __init__(
        self,
        config: EmbeddingConfig | None = None,
        *,
        model_dir: Path | None = None,
        num_threads: int = 1,
    ) -> None:
        self.config = config or EmbeddingConfig()
        folder = speech_embedding_dir() if model_dir is None else Path(model_dir)
        cls, self.backend = interpreter_class()
        mel_path = folder / MEL_MODEL_FILE
        emb_path = folder / self.config.embedding_model_file
        mel_bytes = _read_checked(mel_path, self.config.mel_model_sha256, "mel_model_sha256")
        emb_bytes = _read_checked(emb_path, *self.config.embedding_model_file_sha256)
        try:
            with native_stderr_silenced():  # only the interpreter's native start-up banner
                mel_interp = cls(model_content=mel_bytes, num_threads=num_threads)
                self._interp = cls(model_content=emb_bytes, num_threads=num_threads)
                self._interp.allocate_tensors()
            self._tables = _MelTables(mel_interp, mel_path)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{folder}: the speech-embedding models do not load ({exc}); reinstall emostream") from exc
        self._input_index = int(self._interp.get_input_details()[0]["index"])
        self._output_index = int(self._interp.get_output_details()[0]["index"])
        self._batch = 1
        self._batch_input = np.zeros((self.config.max_batch, EMBEDDING_FRAMES, MEL_BINS, 1), dtype=np.float32)
        self._audio = np.zeros(4 * MEL_SPAN_SAMPLES, dtype=np.float64)
        self._mel = np.zeros((2 * self.config.history_frames, MEL_BINS), dtype=np.float32)
        self._cache: dict[int, FloatArray] = {}
        self.embeddings_computed = 0
        """Embeddings computed since construction (for cost accounting)."""
        self.reset()

    def reset(self) -> None:
        """Start a new stream: no audio, frame 0 next, no cached embeddings."""
        self._audio_len = 0  # samples held from 160 * mel_end on
        self._mel_first = 0  # global index of self._mel[0]
        self._mel_count = 0
        self._cache.clear()

    @property
    def mel_end(self) -> int:
        """Global index one past the newest mel frame."""
        return self._mel_first + self._mel_count

    @property
    def mel_first(self) -> int:
        """Global index of the oldest mel frame still held."""
        return self._mel_first

    def process(self, chunk: npt.ArrayLike, *, keep_from_frame: int | None = None) -> int:
        """Feed float32 mono 16 kHz samples in [-1, 1]; compute the mel frames they complete; return :attr:`mel_end`.

        ``keep_from_frame``: mel frames from this global index on are kept even when they are
        more than ``history_frames`` behind the newest (a caller given a long chunk at once,
        such as a whole clip, still finds the frames of every window it has not closed yet).
        """
        samples = np.asarray(chunk, dtype=np.float32).reshape(-1)
        needed = self._audio_len + samples.size
        if needed > self._audio.size:
            grown = np.zeros(max(needed, 2 * self._audio.size), dtype=np.float64)
            grown[: self._audio_len] = self._audio[: self._audio_len]
            self._audio = grown
        self._audio[self._audio_len : needed] = samples
        self._audio[self._audio_len : needed] *= PCM_SCALE
        self._audio_len = needed
        if needed < MEL_SPAN_SAMPLES:
            return self.mel_end
        n_new = (needed - MEL_SPAN_SAMPLES) // MEL_HOP_SAMPLES + 1
        frames = np.lib.stride_tricks.sliding_window_view(self._audio[:needed], MEL_SPAN_SAMPLES)[::MEL_HOP_SAMPLES]
        self._append_mel(self._tables.log_mel(frames[:n_new]), keep_from_frame)
        used = n_new * MEL_HOP_SAMPLES
        self._audio[: needed - used] = self._audio[used:needed]
        self._audio_len = needed - used
        return self.mel_end

    def append_power(self, power: npt.ArrayLike, *, keep_from_frame: int | None = None) -> int:
        """Append mel frames made from their power spectra instead of from audio; return :attr:`mel_end`.

        ``power``: (n, 257) float32, the 512-point power spectra of the next n mel frames' 400
        Hann-windowed float samples (frame ``j`` windows samples ``[160 j + 56, 160 j + 456)``), as
        :meth:`emostream.frontend.features.FrameFeaturizer.process_with_power` gives them with an
        embedding config: one spectrum serves the handcrafted features and the embedding. Do not mix
        with :meth:`process` in one stream. ``keep_from_frame`` as in :meth:`process`.
        """
        rows = np.asarray(power, dtype=np.float32).reshape(-1, _FFT_BINS)
        if rows.shape[0]:
            self._append_mel(self._tables.log_mel_from_power(rows), keep_from_frame)
        return self.mel_end

    def reserve(self, stop_frame: int, *, keep_from_frame: int | None = None) -> None:
        """Make mel frames up to ``stop_frame`` (exclusive) addressable without computing them.

        The new frames hold zeros until :meth:`set_mel_from_audio` or :meth:`set_mel_from_power` fills
        them; the caller (:class:`emostream.frontend.windowing.WindowExtractor`) fills every frame an
        embedding will read before asking for it, and so computes mel frames only where embeddings are
        wanted. Do not mix with :meth:`process` or :meth:`append_power` in one stream.
        ``keep_from_frame`` as in :meth:`process`.
        """
        if stop_frame > self.mel_end:
            self._append_mel(np.zeros((stop_frame - self.mel_end, MEL_BINS), dtype=np.float32), keep_from_frame)

    def set_mel_from_audio(self, frames: npt.ArrayLike, spans: npt.ArrayLike) -> None:
        """Compute mel frames ``frames`` (global indices, reserved) from their samples, openWakeWord's way.

        ``spans``: (n, 512) float samples in [-1, 1], frame ``j``'s being samples ``[160 j, 160 j + 512)``;
        the float64 arithmetic of :meth:`process` (front-end version 1).
        """
        index = np.asarray(frames, dtype=np.int64).reshape(-1)
        if index.size:
            data = np.asarray(spans, dtype=np.float64).reshape(-1, MEL_SPAN_SAMPLES) * PCM_SCALE
            self._write_mel(index, self._tables.log_mel(data))

    def set_mel_from_power(self, frames: npt.ArrayLike, power: npt.ArrayLike) -> None:
        """Compute mel frames ``frames`` (global indices, reserved) from power spectra as in :meth:`append_power`."""
        index = np.asarray(frames, dtype=np.int64).reshape(-1)
        if index.size:
            rows = np.asarray(power, dtype=np.float32).reshape(-1, _FFT_BINS)
            self._write_mel(index, self._tables.log_mel_from_power(rows))

    def _write_mel(self, index: IntArray, rows: FloatArray) -> None:
        if int(index.min()) < self._mel_first or int(index.max()) >= self.mel_end:
            raise ValueError(
                f"mel frames {int(index.min())}..{int(index.max())} set; "
                f"reserved are [{self._mel_first}, {self.mel_end})"
            )
        self._mel[index - self._mel_first] = rows

    def uncached(self, ends: npt.ArrayLike) -> IntArray:
        """The end frames among ``ends`` whose embedding is not cached (those :meth:`embeddings` would compute)."""
        wanted = np.asarray(ends, dtype=np.int64).reshape(-1)
        keep: IntArray = wanted[[int(t) not in self._cache for t in wanted.tolist()]] if wanted.size else wanted
        return keep

    def _append_mel(self, rows: FloatArray, keep_from_frame: int | None) -> None:
        keep_from = self.mel_end - self.config.history_frames
        if keep_from_frame is not None:
            keep_from = min(keep_from, keep_from_frame)
        keep_from = max(self._mel_first, keep_from)
        drop = keep_from - self._mel_first
        if drop:
            self._mel[: self._mel_count - drop] = self._mel[drop : self._mel_count]
            self._mel_first += drop
            self._mel_count -= drop
            for t in [t for t in self._cache if t - EMBEDDING_FRAMES < self._mel_first]:
                del self._cache[t]
        needed = self._mel_count + rows.shape[0]
        if needed > self._mel.shape[0]:
            grown = np.zeros((max(needed, 2 * self._mel.shape[0]), MEL_BINS), dtype=np.float32)
            grown[: self._mel_count] = self._mel[: self._mel_count]
            self._mel = grown
        self._mel[self._mel_count : needed] = rows
        self._mel_count = needed

    def mel(self, start: int, stop: int) -> FloatArray:
        """Held mel frames ``start .. stop - 1`` (global indices), shape (stop - start, 32), float32, a copy."""
        if not self._mel_first <= start <= stop <= self.mel_end:
            raise ValueError(f"mel frames [{start}, {stop}) asked; held are [{self._mel_first}, {self.mel_end})")
        return self._mel[start - self._mel_first : stop - self._mel_first].copy()

    def grid_ends(self, start_frame: int, stop_frame: int) -> IntArray:
        """End frames on the stride grid whose audio lies inside the 10 ms frames ``[start_frame, stop_frame)``.

        An embedding ending at ``t`` reads samples ``[160 (t - 76), 160 t + 352)``, so
        ``start_frame + 76 <= t <= stop_frame - 3``; returned ascending, int64.
        """
        stride = self.config.stride_frames
        first = -(-(start_frame + EMBEDDING_FRAMES) // stride) * stride
        last = stop_frame - EMBEDDING_TAIL_FRAMES
        return np.arange(first, last + 1, stride, dtype=np.int64)

    def speech_ends(self, start_frame: int, stop_frame: int, speech: npt.ArrayLike) -> IntArray:
        """The :meth:`grid_ends` of a window whose share of speech frames reaches ``min_speech_share``.

        ``speech``: the window's speech flags, evenly covering ``[start_frame, stop_frame)``
        (one per 10, 20 or 30 ms VAD frame: the length must divide the window's frame count).
        An embedding's share is that of the 76 frames ``t - 76 .. t - 1`` it reads.
        """
        flags = np.asarray(speech, dtype=bool).reshape(-1)
        n_frames = stop_frame - start_frame
        if flags.size == 0 or n_frames % flags.size:
            raise ValueError(f"{flags.size} speech flags do not evenly cover {n_frames} mel frames")
        per_frame = np.repeat(flags, n_frames // flags.size)
        ends = self.grid_ends(start_frame, stop_frame)
        if self.config.min_speech_share <= 0.0:
            return ends
        counts = np.concatenate(([0], np.cumsum(per_frame, dtype=np.int64)))
        offsets = ends - start_frame
        share = (counts[offsets] - counts[offsets - EMBEDDING_FRAMES]) / EMBEDDING_FRAMES
        keep: IntArray = ends[share >= self.config.min_speech_share]
        return keep

    def window_embeddings(
        self, start_frame: int, stop_frame: int, speech: npt.ArrayLike | None = None
    ) -> tuple[IntArray, FloatArray]:
        """End frames and embeddings, shapes (n,) and (n, 96), of a window's speech (all grid ends if no flags)."""
        ends = (
            self.grid_ends(start_frame, stop_frame)
            if speech is None
            else self.speech_ends(start_frame, stop_frame, speech)
        )
        return ends, self.embeddings(ends)

    def embeddings(self, ends: npt.ArrayLike) -> FloatArray:
        """Embeddings ending at the given mel frames, shape (n, 96), float32, in the order asked.

        Ends on the stride grid are cached and reused; others are computed each time. An end
        ``t`` needs mel frames ``t - 76 .. t - 1`` to be held, otherwise ValueError.
        """
        wanted = np.asarray(ends, dtype=np.int64).reshape(-1)
        out = np.zeros((wanted.size, EMBEDDING_DIM), dtype=np.float32)
        if wanted.size == 0:
            return out
        low, high = int(wanted.min()), int(wanted.max())
        if low - EMBEDDING_FRAMES < self._mel_first or high > self.mel_end:
            raise ValueError(
                f"embeddings ending at frames {low}..{high} need mel frames [{low - EMBEDDING_FRAMES}, {high}); "
                f"held are [{self._mel_first}, {self.mel_end})"
            )
        todo = [i for i, t in enumerate(wanted.tolist()) if t not in self._cache]
        for i, t in enumerate(wanted.tolist()):
            if t in self._cache:
                out[i] = self._cache[t]
        unique_todo = list(dict.fromkeys(int(wanted[i]) for i in todo))
        stride = self.config.stride_frames
        computed: dict[int, FloatArray] = {}
        for b in range(0, len(unique_todo), self.config.max_batch):
            batch_ends = unique_todo[b : b + self.config.max_batch]
            result = self._embed(batch_ends)
            for t, row in zip(batch_ends, result, strict=True):
                computed[t] = row
                if t % stride == 0:
                    self._cache[t] = row
        for i in todo:
            out[i] = computed[int(wanted[i])]
        return out

    def _fill_blocks(self, ends: Sequence[int], out: FloatArray) -> None:
        for row, t in enumerate(ends):
            block = self._mel[t - EMBEDDING_FRAMES - self._mel_first : t - self._mel_first]
            np.maximum(block, block.max() - TOP_DB / 10.0, out=out[row, :, :, 0])

    def mel_blocks(self, ends: npt.ArrayLike) -> FloatArray:
        """The embedding model's inputs for the given end frames, shape (n, 76, 32, 1), float32.

        Each block is mel frames ``t - 76 .. t - 1`` floored at its own maximum minus 8 (80 dB),
        exactly what :meth:`embeddings` feeds the model (used to calibrate the int8 variant).
        """
        wanted = [int(t) for t in np.asarray(ends, dtype=np.int64).reshape(-1)]
        out = np.zeros((len(wanted), EMBEDDING_FRAMES, MEL_BINS, 1), dtype=np.float32)
        if wanted and (min(wanted) - EMBEDDING_FRAMES < self._mel_first or max(wanted) > self.mel_end):
            raise ValueError(
                f"mel blocks ending at frames {min(wanted)}..{max(wanted)} asked; held are "
                f"[{self._mel_first}, {self.mel_end})"
            )
        self._fill_blocks(wanted, out)
        return out

    def _embed(self, ends: list[int]) -> FloatArray:
        batch = self._batch_input[: len(ends)]
        self._fill_blocks(ends, batch)
        return self.embed_mel(batch)

    def embed_mel(self, mel_blocks: npt.ArrayLike) -> FloatArray:
        """Run the embedding model on transformed, floored mel blocks of shape (n, 76, 32[, 1]); (n, 96) float32.

        The low-level call, exposed for tests against openWakeWord's own inputs; n <= ``max_batch``
        keeps the interpreter at its allocated size (larger n works but reallocates).
        """
        x = np.asarray(mel_blocks, dtype=np.float32).reshape(-1, EMBEDDING_FRAMES, MEL_BINS, 1)
        n = x.shape[0]
        if n != self._batch:
            self._interp.resize_tensor_input(self._input_index, [n, EMBEDDING_FRAMES, MEL_BINS, 1], strict=True)
            self._interp.allocate_tensors()
            self._batch = n
        self._interp.set_tensor(self._input_index, x)
        self._interp.invoke()
        self.embeddings_computed += n
        return np.array(self._interp.get_tensor(self._output_index), dtype=np.float32).reshape(n, EMBEDDING_DIM)
