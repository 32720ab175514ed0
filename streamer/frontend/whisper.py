"""A Whisper audio encoder's intermediate layers: their mean and std over each speech window.

The encoder is OpenAI Whisper tiny.en's (MIT): its convolutions, position rows and first
transformer blocks, read out of a CTranslate2 conversion into ``models/whisper_encoder/whisper_encoder.npz``
by ``python -m emostream.train.whisper_encoder_export`` (float16 as in the source; see the README
there), run here in NumPy float32 (no scipy, no TensorFlow). Trained on 680 000 hours of transcribed
speech (no emotion labels), its middle layers carry more of what the other corpora's emotions share
than the handcrafted statistics (the scikit-learn probe, ``train/probe.py --whisper``).

Chunked streaming semantics (the feature's definition, training and runtime alike): the stream is
cut into chunks of ``chunk_ms`` on a global grid (chunk ``c`` = global samples ``[c S, (c + 1) S)``,
``S`` = :attr:`WhisperConfig.chunk_samples`, the same global sample index the window extractor uses,
lead-in included). Each chunk is encoded on its own: Whisper's log-mel of the chunk's samples only
(:func:`whisper_log_mel`), then the encoder on those frames, giving ``S / 320`` rows per layer (one
every 20 ms). A chunk is computed only when a speech window needs it, once, and kept until the stream
moves past it. A speech window's part is, for each configured layer, the mean then the population std
(float32) over the rows of the window's chunks whose centre sample lies in a VAD speech frame (every
row when none does); a window that is not speech gets zeros and computes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, ModelError
from emostream.frontend.vendored import read_checked
from emostream.frontend.voice import mel_filterbank
from emostream.schema import refuse_unknown_keys

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE_HZ = 16000
N_FFT = 400
HOP_SAMPLES = 160
N_MELS = 80
ROW_SAMPLES = 2 * HOP_SAMPLES
"""Samples per encoder row: the stride-2 convolution gives one row every 320 samples (20 ms)."""
WHISPER_DIM = 384
"""Width of tiny's encoder rows."""
MAX_LAYERS = 4
"""Transformer blocks of tiny's encoder (and of the shipped file)."""
MAX_ROWS = 1500
"""Position rows of the encoder: 30 s of rows, so a chunk is at most 30 000 ms."""
MIN_CHUNK_MS = 100.0
MAX_CHUNK_MS = 1000.0 * MAX_ROWS * ROW_SAMPLES / SAMPLE_RATE_HZ  # 30000
MODEL_FILE = "whisper_encoder.npz"
MODEL_SHA256 = "30448ae1516fd0b6944f02b64c3de23a3eccbd3d683d5c225d2aec899c1d668a"
_LN_EPS = np.float32(1e-5)


def _check_hex(name: str, value: object) -> None:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"whisper {name} is {value!r}; expected 64 lower-case hex digits (a sha256)")


@dataclass(frozen=True, kw_only=True)
class WhisperConfig:
    """Settings of the Whisper part of a fused summary input; saved in model metadata.

    ``layers``: the encoder's transformer blocks (1-4, distinct, ascending) whose rows are pooled, e.g.
    (2, 3); each adds the mean and the std of its 384 values (768 inputs). ``chunk_ms``: length of the
    chunks the stream is encoded in, each on its own (a multiple of 20 ms, 100 to 30 000 ms; a fused
    config's window and hop must be whole multiples of it). ``model_sha256``: expected digest of
    ``whisper_encoder.npz``.
    """

    layers: tuple[int, ...]
    chunk_ms: float = 500.0
    model_sha256: str = MODEL_SHA256

    def __post_init__(self) -> None:
        layers = self.layers
        if (
            not isinstance(layers, tuple)
            or not layers
            or any(not isinstance(k, int) or isinstance(k, bool) for k in layers)
        ):
            raise ConfigError(
                f"whisper layers is {layers!r}; expected a non-empty tuple of encoder layer numbers such as (2, 3)"
            )
        if any(not 1 <= k <= MAX_LAYERS for k in layers) or list(layers) != sorted(set(layers)):
            raise ConfigError(
                f"whisper layers is {list(layers)}; expected distinct encoder layers from 1 to {MAX_LAYERS} in "
                "ascending order, such as [2, 3]"
            )
        chunk = self.chunk_ms
        number = isinstance(chunk, int | float) and not isinstance(chunk, bool)
        rows = chunk * SAMPLE_RATE_HZ / 1000.0 / ROW_SAMPLES if number else math.nan
        if not (MIN_CHUNK_MS <= chunk <= MAX_CHUNK_MS and abs(rows - round(rows)) < 1e-9 if number else False):
            raise ConfigError(
                f"whisper chunk_ms is {chunk!r}; expected a multiple of 20 ms (one encoder row) from "
                f"{MIN_CHUNK_MS:g} to {MAX_CHUNK_MS:g} ms, such as 500"
            )
        _check_hex("model_sha256", self.model_sha256)

    @property
    def chunk_samples(self) -> int:
        """Samples per chunk at 16 kHz."""
        return round(self.chunk_ms * SAMPLE_RATE_HZ / 1000.0)

    @property
    def rows_per_chunk(self) -> int:
        """Encoder rows per chunk (one per 20 ms)."""
        return self.chunk_samples // ROW_SAMPLES

    @property
    def dim(self) -> int:
        """Values of the Whisper part of a fused input: a mean and a std of 384 values per layer."""
        return 2 * WHISPER_DIM * len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in model metadata."""
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WhisperConfig:
        """Build from metadata; unknown keys or bad values raise :class:`ConfigError`."""
        refuse_unknown_keys(cls, data, "whisper config")
        values = dict(data)
        if isinstance(values.get("layers"), list):
            values["layers"] = tuple(values["layers"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"whisper config {data} is invalid: {exc}") from exc


def whisper_feature_names(config: WhisperConfig) -> list[str]:
    """Names of the Whisper columns: per layer ``whisper_l{k}_mean_{i}`` then ``whisper_l{k}_std_{i}``, i = 0..383."""
    return [f"whisper_l{k}_{stat}_{i}" for k in config.layers for stat in ("mean", "std") for i in range(WHISPER_DIM)]


def whisper_encoder_dir() -> Path:
    """Folder of the vendored encoder (``emostream/models/whisper_encoder``)."""
    return Path(str(resources.files("emostream.models"))) / "whisper_encoder"


@functools.cache
def _log_mel_tables() -> tuple[FloatArray, FloatArray]:
    """(periodic Hann window (400,), mel filters (201, 80)) float32, made once."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    filters = np.ascontiguousarray(mel_filterbank(N_MELS).T, dtype=np.float32)
    return window, filters


def whisper_log_mel(samples: npt.ArrayLike) -> FloatArray:
    """Whisper's ``log_mel_spectrogram`` of 16 kHz float samples: (80, n_frames) float32.

    Centred frames (reflect padding of 200 samples), a periodic Hann window, the power spectrum's mel
    bands, log10 floored at 1e-10 and at 8 below the maximum, then ``(x + 4) / 4``; the last frame is
    dropped as Whisper does, and an odd count loses one more so the encoder's stride-2 convolution fits.
    A chunk of ``320 n`` samples gives ``2 n`` frames.
    """
    window, filters = _log_mel_tables()
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size < N_FFT:
        x = np.concatenate([x, np.zeros(N_FFT - x.size, dtype=np.float32)])
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_SAMPLES]
    spectrum = np.fft.rfft(frames * window, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)[:-1]
    n = power.shape[0] - power.shape[0] % 2
    log_mel = np.log10(np.maximum(power[:n] @ filters, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    out: FloatArray = np.ascontiguousarray(((log_mel + 4.0) / 4.0).T, dtype=np.float32)
    return out


_BLOCK_PARTS: tuple[str, ...] = (
    "self_attention/layer_norm/gamma",
    "self_attention/layer_norm/beta",
    "self_attention/linear_0/weight",
    "self_attention/linear_0/bias",
    "self_attention/linear_1/weight",
    "self_attention/linear_1/bias",
    "ffn/layer_norm/gamma",
    "ffn/layer_norm/beta",
    "ffn/linear_0/weight",
    "ffn/linear_0/bias",
    "ffn/linear_1/weight",
    "ffn/linear_1/bias",
)


def weight_names(blocks: int) -> list[str]:
    """The encoder variables of a file with ``blocks`` transformer blocks, under CTranslate2's names without
    ``encoder/`` (block ``k`` is ``layer_{k-1}``): the convolutions, the position rows, the head count, the blocks."""
    names = [
        "conv1/weight",
        "conv1/bias",
        "conv2/weight",
        "conv2/bias",
        "position_encodings/encodings",
        "num_heads",
    ]
    return names + [f"layer_{i}/{part}" for i in range(blocks) for part in _BLOCK_PARTS]


def _npz_key(name: str) -> str:
    """A variable's key in ``whisper_encoder.npz``: its CTranslate2 name with ``.`` for ``/``."""
    return name.replace("/", ".")


def load_weights(content: bytes) -> dict[str, npt.NDArray[Any]]:
    """The weights in the bytes of ``whisper_encoder.npz``, by CTranslate2 name (as stored: float16, int16 heads)."""
    with np.load(io.BytesIO(content), allow_pickle=False) as data:
        names = [k.replace(".", "/") for k in data.files]
        blocks = sum(1 for n in names if n.endswith("self_attention/linear_0/weight"))
        missing = [n for n in weight_names(blocks) if _npz_key(n) not in data.files]
        if blocks == 0 or missing:
            raise ModelError(f"the whisper encoder file lacks {missing or 'every block'}; reinstall emostream")
        return {n: np.asarray(data[_npz_key(n)]) for n in weight_names(blocks)}


_ERF_P = np.float32(0.3275911)
_ERF_A = tuple(np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


def gelu(x: FloatArray) -> FloatArray:
    """Exact (erf) GELU of float32 values, erf by Abramowitz-Stegun 7.1.26 (error below 1.5e-7): float32, x's shape.

    With ``q = t (a1 + t (a2 + ... t a5)) exp(-z^2)``, ``z = |x| / sqrt 2``, ``t = 1 / (1 + p z)``:
    ``1 + erf(x / sqrt 2)`` is ``2 - q`` for x >= 0 and ``q`` for x < 0 (no cancellation in the negative tail).
    """
    z = np.abs(x) * _INV_SQRT2
    t = np.float32(1.0) / (np.float32(1.0) + _ERF_P * z)
    a1, a2, a3, a4, a5 = _ERF_A
    q = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5)))) * np.exp(-(z * z))
    out: FloatArray = (np.float32(0.5) * x * np.where(x >= 0, np.float32(2.0) - q, q)).astype(np.float32)
    return out


def _layer_norm(x: FloatArray, gamma: FloatArray, beta: FloatArray) -> FloatArray:
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    out: FloatArray = (x - mean) / np.sqrt(var + _LN_EPS) * gamma + beta
    return out


def _conv3(x: FloatArray, flat: FloatArray, bias: FloatArray, stride: int) -> FloatArray:
    """Conv1d, kernel 3, padding 1: x (c_in, t) -> (c_out, t_out) float32; ``flat`` (c_out, 3 c_in), tap major."""
    padded = np.pad(x, ((0, 0), (1, 1)))
    t_out = (padded.shape[1] - 3) // stride + 1
    cols = np.concatenate([padded[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(3)], axis=0)
    out: FloatArray = flat @ cols + bias[:, None]
    return out


class _Block:
    """One pre-LN transformer block's float32 weights, the linear ones transposed for ``x @ w``."""

    def __init__(self, w: dict[str, npt.NDArray[Any]], prefix: str) -> None:
        def f32(name: str) -> FloatArray:
            return np.ascontiguousarray(w[prefix + name], dtype=np.float32)

        def t32(name: str) -> FloatArray:
            return np.ascontiguousarray(np.asarray(w[prefix + name], dtype=np.float32).T)

        self.ln1 = (f32("self_attention/layer_norm/gamma"), f32("self_attention/layer_norm/beta"))
        self.qkv = (t32("self_attention/linear_0/weight"), f32("self_attention/linear_0/bias"))
        self.out = (t32("self_attention/linear_1/weight"), f32("self_attention/linear_1/bias"))
        self.ln2 = (f32("ffn/layer_norm/gamma"), f32("ffn/layer_norm/beta"))
        self.fc1 = (t32("ffn/linear_0/weight"), f32("ffn/linear_0/bias"))
        self.fc2 = (t32("ffn/linear_1/weight"), f32("ffn/linear_1/bias"))


class _Encoder:
    """Whisper's audio encoder in NumPy float32: log-mel (80, t), t even -> rows of chosen blocks (t / 2, d).

    conv1 (k3, pad 1) + GELU, conv2 (k3, stride 2, pad 1) + GELU, + sinusoidal position rows, then
    pre-LN blocks (fused qkv, q and k each scaled by d_head ** -0.25, erf GELU MLP, layer-norm eps 1e-5).
    Weights are read-only after construction: one instance serves every thread.
    """

    def __init__(self, weights: dict[str, npt.NDArray[Any]]) -> None:
        def flat(name: str) -> FloatArray:
            kernel = np.asarray(weights[name], dtype=np.float32)  # (c_out, c_in, 3)
            return np.ascontiguousarray(kernel.transpose(0, 2, 1).reshape(kernel.shape[0], -1))

        self.conv1 = (flat("conv1/weight"), np.asarray(weights["conv1/bias"], dtype=np.float32))
        self.conv2 = (flat("conv2/weight"), np.asarray(weights["conv2/bias"], dtype=np.float32))
        self.positions = np.ascontiguousarray(weights["position_encodings/encodings"], dtype=np.float32)
        self.heads = int(np.asarray(weights["num_heads"]).reshape(-1)[0])
        self.dim = int(self.conv1[1].shape[0])
        count = sum(1 for k in weights if k.endswith("self_attention/linear_0/weight"))
        self.blocks = [_Block(weights, f"layer_{i}/") for i in range(count)]

    def __call__(self, mel: FloatArray, layers: tuple[int, ...]) -> FloatArray:
        """Rows of the blocks ``layers`` (1-based, ascending) for mel (80, t) float32: (len(layers), t / 2, d) float32.

        Runs blocks 1 .. max(layers) only.
        """
        x = gelu(_conv3(mel, *self.conv1, 1))
        x = gelu(_conv3(x, *self.conv2, 2)).T
        if x.shape[0] > self.positions.shape[0]:
            raise ValueError(f"{x.shape[0]} encoder rows; the encoder has {self.positions.shape[0]} position rows")
        x = x + self.positions[: x.shape[0]]
        heads, dh = self.heads, self.dim // self.heads
        scale = np.float32(dh**-0.25)
        out = np.empty((len(layers), x.shape[0], self.dim), dtype=np.float32)
        for i, block in enumerate(self.blocks[: max(layers)], start=1):
            y = _layer_norm(x, *block.ln1)
            qkv = y @ block.qkv[0] + block.qkv[1]
            q, k, v = (part.reshape(-1, heads, dh).transpose(1, 0, 2) for part in np.split(qkv, 3, axis=1))
            scores = (q * scale) @ (k * scale).transpose(0, 2, 1)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            attended = (scores @ v).transpose(1, 0, 2).reshape(-1, self.dim)
            x = x + attended @ block.out[0] + block.out[1]
            y = _layer_norm(x, *block.ln2)
            y = gelu(y @ block.fc1[0] + block.fc1[1])
            x = x + y @ block.fc2[0] + block.fc2[1]
            if i in layers:
                out[layers.index(i)] = x
        return out


def _read_checked(path: Path, expected_sha256: str, context: str) -> bytes:
    return read_checked(
        path,
        expected_sha256,
        context,
        name="whisper encoder",
        folder="whisper_encoder",
        export="emostream.train.whisper_encoder_export",
    )


_ENCODERS: dict[tuple[str, str], _Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _shared_encoder(folder: Path, sha256: str, context: str = "the whisper config") -> _Encoder:
    """The encoder of ``folder``'s file, loaded and checked once per process and shared (read-only weights)."""
    key = (str(folder.resolve()), sha256)
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = _ENCODERS[key] = _Encoder(load_weights(_read_checked(folder / MODEL_FILE, sha256, context)))
        return encoder


def check_whisper_files(
    config: WhisperConfig, *, model_dir: Path | None = None, context: str = "the whisper config"
) -> None:
    """Refuse (:class:`ModelError`, exit code 5) an encoder file whose sha256 differs from ``config``'s.

    The file is loaded into the process's shared copy, so the encoders made after a model's metadata
    is loaded neither read nor hash it again.
    """
    _shared_encoder(whisper_encoder_dir() if model_dir is None else Path(model_dir), config.model_sha256, context)


def speech_rows(flags: npt.ArrayLike, n_rows: int, vad_frame_samples: int) -> npt.NDArray[np.bool_]:
    """Which of ``n_rows`` encoder rows (row ``r``: samples ``[320 r, 320 r + 320)``) have their centre in a speech
    frame of ``flags`` (one VAD flag per ``vad_frame_samples``; rows past the flags are not speech); every row when
    none is: (n_rows,) bool."""
    speech_flags = np.asarray(flags, dtype=bool)
    index = (np.arange(n_rows) * ROW_SAMPLES + ROW_SAMPLES // 2) // vad_frame_samples
    speech = np.zeros(n_rows, dtype=bool)
    inside = index < speech_flags.size
    speech[inside] = speech_flags[index[inside]]
    return speech if speech.any() else np.ones(n_rows, dtype=bool)


class WhisperEncoder:
    """The Whisper part of one stream's windows: :meth:`process` -> (``config.dim``,) float32.

    Keeps each chunk's rows, by global chunk index, until a window starts past it; :meth:`reset`
    forgets them when a new stream starts. One stream at a time per instance.
    """

    def __init__(self, config: WhisperConfig, *, model_dir: Path | None = None) -> None:
        self.config = config
        folder = whisper_encoder_dir() if model_dir is None else Path(model_dir)
        self._encoder = _shared_encoder(folder, config.model_sha256)
        if len(self._encoder.blocks) < max(config.layers) or self._encoder.dim != WHISPER_DIM:
            raise ModelError(
                f"the whisper encoder file in {folder} has {len(self._encoder.blocks)} blocks of width "
                f"{self._encoder.dim}; the config's layers {list(config.layers)} need {max(config.layers)} of "
                f"width {WHISPER_DIM}: reinstall emostream"
            )
        self._chunks: dict[int, FloatArray] = {}
        self.chunks_encoded = 0

    def reset(self) -> None:
        """Start a new stream: forget the chunks' rows."""
        self._chunks.clear()

    def encode_chunk(self, samples: npt.ArrayLike) -> FloatArray:
        """The rows of one chunk encoded on its own: (len(layers), rows_per_chunk, 384) float32."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size != self.config.chunk_samples:
            raise ValueError(f"whisper chunk has {x.size} samples; expected {self.config.chunk_samples}")
        self.chunks_encoded += 1
        return self._encoder(whisper_log_mel(x), self.config.layers)

    def process(
        self,
        window: npt.ArrayLike,
        *,
        start_sample: int,
        flags: npt.NDArray[np.bool_],
        vad_frame_samples: int,
    ) -> FloatArray:
        """The Whisper part of one speech window: (``config.dim``,) float32, per layer the mean then the std.

        ``window``: the window's float32 samples (a whole number of chunks) from global sample
        ``start_sample`` (a multiple of the chunk); ``flags``: the window's VAD speech flags, one per
        ``vad_frame_samples``. Row ``r`` (window samples ``[320 r, 320 r + 320)``) counts when the VAD frame
        of its centre ``320 r + 160`` is speech; every row counts when none is.
        """
        x = np.asarray(window, dtype=np.float32).reshape(-1)
        size = self.config.chunk_samples
        if start_sample % size or x.size % size or x.size == 0:
            raise ValueError(
                f"whisper window of {x.size} samples from sample {start_sample}; expected whole chunks of {size}"
            )
        first = start_sample // size
        for old in [c for c in self._chunks if c < first]:
            del self._chunks[old]
        parts = []
        for c in range(x.size // size):
            rows = self._chunks.get(first + c)
            if rows is None:
                rows = self._chunks[first + c] = self.encode_chunk(x[c * size : (c + 1) * size])
            parts.append(rows)
        rows_all = np.concatenate(parts, axis=1)
        values = rows_all[:, speech_rows(flags, rows_all.shape[1], vad_frame_samples)].astype(np.float64)
        out = np.stack([values.mean(axis=1), values.std(axis=1)], axis=1)  # (layers, 2, 384)
        result: FloatArray = out.reshape(-1).astype(np.float32)
        return result
