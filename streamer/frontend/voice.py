"""A pretrained voice encoder: one 256-dim embedding of the last 1.6 s of each speech window.

The encoder is Resemblyzer 0.1.4's GE2E speaker encoder (Apache-2.0): its weights, read out of
the wheel into ``models/voice_encoder/voice_encoder.npz`` by ``python -m
emostream.train.voice_encoder_export`` (see the README there), run by a small NumPy LSTM here.
It was trained for speaker verification on non-emotional speech; with each speaker's
statistics taken out (speaker calibration) what is left of its embedding moves with the
voice's state, and it carries emotion across corpora far better than the handcrafted
statistics (docs/results.md, "v5").

Arithmetic (Resemblyzer's ``wav_to_mel_spectrogram`` and ``preprocess_wav``, made causal):
a block of :data:`BLOCK_SAMPLES` samples at 16 kHz (the window's last 1.615 s) is brought up
to -30 dBFS RMS if it is quieter (never down), cut into 160 frames of 400 samples (25 ms,
periodic Hann) every 160 samples (10 ms) with no padding, each frame's power spectrum
(400-point FFT, 201 bins) goes through librosa's default 40-band Slaney mel filterbank
(0-8000 Hz, :func:`mel_filterbank`), and the (160, 40) mel power block goes through the
encoder. The embedding depends only on the block's samples: chunked and whole-file input
give the same values, and a gain change of a quiet block changes nothing but rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, ModelError
from emostream.frontend.vendored import read_checked
from emostream.frontend.voice_student import STUDENT_INPUTS, StudentRunner
from emostream.schema import refuse_unknown_keys

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE_HZ = 16000
FRAME_SAMPLES = 400
HOP_SAMPLES = 160
BLOCK_FRAMES = 160
BLOCK_SAMPLES = (BLOCK_FRAMES - 1) * HOP_SAMPLES + FRAME_SAMPLES  # 25840
BLOCK_MS = 1000.0 * BLOCK_SAMPLES / SAMPLE_RATE_HZ  # 1615
MAX_SPEECH_LOOKBACK_MS = 10000.0
MEL_BANDS = 40
VOICE_DIM = 256
MODEL_FILE = "voice_encoder.npz"
MODEL_SHA256 = "e56566b8a1330ec0da999c945c578f7115cb68698f718d7e5d59d139378d7f43"
TARGET_DBFS = -30.0


@dataclass(frozen=True, kw_only=True)
class VoiceConfig:
    """Settings of the voice-encoder part of a fused summary input; saved in model metadata.

    ``target_dbfs``: quieter blocks are raised to this RMS level (dBFS) before the mel
    spectrum, as Resemblyzer does with whole utterances; louder ones are left as they are.
    ``model_sha256``: expected digest of ``voice_encoder.npz`` (the teacher LSTM).
    ``student_file`` / ``student_sha256``: a distilled student (:mod:`emostream.frontend.voice_student`,
    a TFLite CNN trained to reproduce the LSTM's embedding, 50-150x cheaper) that runs in
    the LSTM's place; a name under the encoder folder, or an absolute path (evaluation folds).
    ``student_input``: what the student reads (:data:`~emostream.frontend.voice_student.STUDENT_INPUTS`),
    as it was distilled; stored only when it is not v6's ``log_mel``.
    ``layer_means``: LSTM layers (1-3, ascending) whose outputs, averaged over the block's 160 frames, follow
    the embedding (256 values each); with a student, the layers it was distilled to reproduce (standardised;
    the encoder refuses a student whose output does not have ``dim`` values). The final
    embedding is trained to keep the speaker and drop the rest; the layers below it keep more of how
    the voice sounds (docs/results.md, "v8"). Stored only when set.
    ``speech_lookback_ms``: 0 (the default) gives the encoder the window's last 1.615 s of audio, pauses
    included; more than that (1615 to 10000 ms) gives it the last 1.615 s of speech (the VAD's speech
    frames, joined) heard within this many ms before the window's end, zero-padded in front when less
    speech was heard (docs/results.md, "Trial: the voice encoder on speech only": not adopted). Stored
    only when set.
    """

    target_dbfs: float = TARGET_DBFS
    model_sha256: str = MODEL_SHA256
    student_file: str | None = None
    student_sha256: str | None = None
    student_input: str = "log_mel"
    layer_means: tuple[int, ...] = ()
    speech_lookback_ms: float = 0.0

    def __post_init__(self) -> None:
        self._check_layer_means()
        lookback = self.speech_lookback_ms
        if (
            isinstance(lookback, bool)
            or not isinstance(lookback, int | float)
            or not (lookback == 0.0 or BLOCK_MS <= lookback <= MAX_SPEECH_LOOKBACK_MS)
        ):
            raise ConfigError(
                f"voice speech_lookback_ms is {lookback!r}; expected 0 (the window's last {BLOCK_MS:g} ms of audio) "
                f"or {BLOCK_MS:g} to {MAX_SPEECH_LOOKBACK_MS:g} ms (the last {BLOCK_MS:g} ms of speech within it)"
            )
        if self.student_input not in STUDENT_INPUTS:
            raise ConfigError(
                f"voice student_input is {self.student_input!r}; expected one of {', '.join(STUDENT_INPUTS)}"
            )
        if not -60.0 <= self.target_dbfs <= 0.0:
            raise ConfigError(f"voice target_dbfs is {self.target_dbfs}; expected -60 to 0 dBFS (Resemblyzer: -30)")
        _check_hex("model_sha256", self.model_sha256)
        if (self.student_file is None) != (self.student_sha256 is None):
            raise ConfigError(
                f"voice student_file is {self.student_file!r} and student_sha256 {self.student_sha256!r}; "
                "expected both (a distilled student) or neither (the LSTM encoder)"
            )
        if self.student_sha256 is not None:
            _check_hex("student_sha256", self.student_sha256)

    def _check_layer_means(self) -> None:
        layers = self.layer_means
        if not isinstance(layers, tuple) or any(not isinstance(k, int) or isinstance(k, bool) for k in layers):
            raise ConfigError(f"voice layer_means is {layers!r}; expected a tuple of LSTM layer numbers such as (2, 3)")
        if any(not 1 <= k <= _LAYERS for k in layers) or list(layers) != sorted(set(layers)):
            raise ConfigError(
                f"voice layer_means is {list(layers)}; expected distinct LSTM layers from 1 to {_LAYERS} in "
                "ascending order, such as [2, 3]"
            )

    @property
    def dim(self) -> int:
        """Values of the voice part of a fused input: the embedding (256) and 256 per layer mean."""
        return VOICE_DIM * (1 + len(self.layer_means))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in model metadata (the student keys only when a student is set,
        the layer means only when set, so the configs of models made before them keep their form and
        cache keys)."""
        data = dataclasses.asdict(self)
        if self.student_file is None:
            del data["student_file"], data["student_sha256"]
        if self.student_input == "log_mel":
            del data["student_input"]
        if self.layer_means:
            data["layer_means"] = list(self.layer_means)
        else:
            del data["layer_means"]
        if not self.speech_lookback_ms:
            del data["speech_lookback_ms"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VoiceConfig:
        """Build from metadata; unknown keys or bad values raise :class:`ConfigError`."""
        refuse_unknown_keys(cls, data, "voice config")
        values = dict(data)
        if isinstance(values.get("layer_means"), list):
            values["layer_means"] = tuple(values["layer_means"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"voice config {data} is invalid: {exc}") from exc


def _check_hex(name: str, value: str) -> None:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"voice {name} is {value!r}; expected 64 lower-case hex digits")


def voice_feature_names(config: VoiceConfig | None = None) -> list[str]:
    """Names of the voice columns of a fused input: ``voice_000`` .. ``voice_255``, then for each of the
    config's layer means ``voice_l{k}_000`` .. ``voice_l{k}_255``."""
    names = [f"voice_{i:03d}" for i in range(VOICE_DIM)]
    for k in () if config is None else config.layer_means:
        names += [f"voice_l{k}_{i:03d}" for i in range(_HIDDEN)]
    return names


def voice_encoder_dir() -> Path:
    """Folder of the vendored encoder (``emostream/models/voice_encoder``)."""
    return Path(str(resources.files("emostream.models"))) / "voice_encoder"


def _slaney_hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    mel = hz / (200.0 / 3.0)
    log = hz >= 1000.0
    mel[log] = 15.0 + np.log(hz[log] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _slaney_mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = mel * (200.0 / 3.0)
    log = mel >= 15.0
    hz[log] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log] - 15.0))
    return hz


def mel_filterbank(n_mels: int = MEL_BANDS) -> npt.NDArray[np.float64]:
    """librosa's ``filters.mel(sr=16000, n_fft=400, n_mels=n_mels)``: Slaney scale and area norm, (n_mels, 201).

    The encoder's 40 bands by default (Whisper's log-mel front-end uses the same filters with 80).
    """
    freqs = np.linspace(0.0, SAMPLE_RATE_HZ / 2, FRAME_SAMPLES // 2 + 1)
    low_mel, high_mel = _slaney_hz_to_mel(np.array([0.0, SAMPLE_RATE_HZ / 2]))
    edges = _slaney_mel_to_hz(np.linspace(low_mel, high_mel, n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def _read_checked(path: Path, expected_sha256: str, context: str) -> bytes:
    return read_checked(
        path,
        expected_sha256,
        context,
        name="voice encoder",
        folder="voice_encoder",
        export="emostream.train.voice_encoder_export",
    )


def check_voice_files(config: VoiceConfig, *, model_dir: Path | None = None, context: str = "the voice config") -> None:
    """Refuse (:class:`ModelError`, exit code 5) an encoder file whose sha256 differs from ``config``'s.

    The file the config runs is checked: the student when one is set, else the LSTM's weights.
    It is loaded into the process's shared copy (:func:`_shared_net`, :func:`_student_bytes`),
    so the encoders made after a model's metadata is loaded neither read nor hash it again.
    """
    folder = voice_encoder_dir() if model_dir is None else Path(model_dir)
    if config.student_file is not None and config.student_sha256 is not None:
        _student_bytes(folder / config.student_file, config.student_sha256, context)
    else:
        _shared_net(folder, config.model_sha256, context)


_STUDENTS: dict[tuple[str, str], bytes] = {}


def _student_bytes(path: Path, sha256: str, context: str = "the voice config") -> bytes:
    """The checked bytes of a student file, read once per process (each encoder makes its own interpreter)."""
    key = (str(path.resolve()), sha256)
    with _NETS_LOCK:
        content = _STUDENTS.get(key)
        if content is None:
            content = _STUDENTS[key] = _read_checked(path, sha256, context)
        return content


_LAYERS = 3
_HIDDEN = 256
_LSTM_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
WEIGHT_NAMES: tuple[str, ...] = (
    *(f"lstm.{kind}_l{layer}" for layer in range(_LAYERS) for kind in _LSTM_KINDS),
    "linear.weight",
    "linear.bias",
)
"""The encoder's weights in ``voice_encoder.npz``, under their PyTorch names."""


class _Lstm:
    """Resemblyzer's network in NumPy float32: 3 LSTM layers (256), a ReLU projection, L2 norm.

    Weights keep PyTorch's names and layout in the file; here each layer's gates are reordered
    i, f, o, g, the matrices transposed, and the rows of the sigmoid gates i, f, o (weights and
    biases) halved: sigmoid(x) = (tanh(x / 2) + 1) / 2, so one ``tanh`` over a step's 1024 gate
    values gives every gate. Halving is exact in float32 (a power of two), so the products and
    sums are those of halving the unscaled gates afterwards, bit for bit.
    """

    def __init__(self, weights: dict[str, npt.NDArray[np.float32]]) -> None:
        half = np.concatenate([np.full(3 * _HIDDEN, 0.5, np.float32), np.ones(_HIDDEN, np.float32)])

        def gates(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            i, f, g, o = np.split(np.asarray(a, dtype=np.float32), 4, axis=0)
            return np.concatenate([i, f, o, g], axis=0)

        self.layers = [
            (
                np.ascontiguousarray(gates(weights[f"lstm.weight_ih_l{k}"]).T * half),
                np.ascontiguousarray(gates(weights[f"lstm.weight_hh_l{k}"]).T * half),
                (gates(weights[f"lstm.bias_ih_l{k}"]) + gates(weights[f"lstm.bias_hh_l{k}"])) * half,
            )
            for k in range(_LAYERS)
        ]
        self.proj = np.ascontiguousarray(np.asarray(weights["linear.weight"], dtype=np.float32).T)
        self.proj_bias = np.asarray(weights["linear.bias"], dtype=np.float32)

    def __call__(self, mel: FloatArray, layer_means: tuple[int, ...] = ()) -> FloatArray:
        """(n, 160, 40) float32 mel power -> (n, 256 * (1 + len(layer_means))) float32.

        The embeddings (L2 norm 1, or 0 if all ReLUs are off), then the time mean of each of the
        ``layer_means`` layers' outputs (1-based), float32.

        A step is one recurrent product and eight ufunc calls into kept buffers (at n = 1 the
        product costs about 14 us, each call under 1 us, so calls are what there is to save;
        docs/performance.md, "eighth round"). Arrays are time-major so that a step's input and
        output rows are contiguous views taken once per layer; at n = 1 they are 1-D.
        """
        n, steps, _ = mel.shape
        size = _HIDDEN
        lead: tuple[int, ...] = () if n == 1 else (n,)  # one block: 1-D rows, numpy's quickest path
        x: FloatArray = np.ascontiguousarray(mel.transpose(1, 0, 2)).reshape(steps * n, -1)
        # One buffer [i | f | o | g | c] per step: the gates (halved sigmoid inputs, then the gates
        # themselves) and the cell, so that [i, f] * [g, c] is one product and c = i g + f c one sum.
        buf = np.zeros((*lead, 5 * size), dtype=np.float32)
        gate_values = buf[..., : 4 * size]
        sig = buf[..., : 3 * size]
        in_forget = buf[..., : 2 * size]
        cand_cell = buf[..., 3 * size :]
        out_gate = buf[..., 2 * size : 3 * size]
        cell = buf[..., 4 * size :]
        # np.dot writes only into a C-contiguous array: the buffer's gate part is one when n == 1
        acc = gate_values if n == 1 else np.empty((n, 4 * size), dtype=np.float32)
        prod = np.empty((*lead, 2 * size), dtype=np.float32)
        prod_in, prod_forget = prod[..., :size], prod[..., size:]
        cell_tanh = np.empty((*lead, size), dtype=np.float32)
        zero = np.zeros((*lead, size), dtype=np.float32)
        half = np.array(0.5, dtype=np.float32)  # a 0-d float32 operand: a Python float costs a conversion per call
        dot, add, multiply, tanh = np.dot, np.add, np.multiply, np.tanh
        means: list[FloatArray] = []
        h = zero
        for layer, (w_in, w_rec, bias) in enumerate(self.layers, start=1):
            inputs = x @ w_in
            inputs += bias
            out = np.empty((steps, *lead, size), dtype=np.float32)
            cell.fill(0.0)
            h = zero
            for x_t, h_t in zip(inputs.reshape(steps, *lead, 4 * size), out, strict=True):
                dot(h, w_rec, acc)
                add(acc, x_t, gate_values)
                tanh(gate_values, gate_values)
                multiply(sig, half, sig)  # sigmoid(x) = (tanh(x / 2) + 1) / 2, x / 2 in the weights
                add(sig, half, sig)
                multiply(in_forget, cand_cell, prod)
                add(prod_forget, prod_in, cell)  # c = f c + i g
                tanh(cell, cell_tanh)
                multiply(cell_tanh, out_gate, h_t)  # h = o tanh(c)
                h = h_t
            x = out.reshape(steps * n, size)
            if layer in layer_means:
                means.append(out.mean(axis=0, dtype=np.float32).reshape(n, size))
        emb = np.maximum(h.reshape(n, size) @ self.proj + self.proj_bias, 0.0)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        result: FloatArray = (emb / np.where(norm > 0, norm, 1.0)).astype(np.float32)
        if means:
            result = np.concatenate([result, *means], axis=1)
        return result


def load_weights(content: bytes) -> dict[str, npt.NDArray[np.float32]]:
    """The encoder's weights from the bytes of ``voice_encoder.npz`` (PyTorch names, float32)."""
    with np.load(io.BytesIO(content), allow_pickle=False) as data:
        missing = [k for k in WEIGHT_NAMES if k not in data.files]
        if missing:
            raise ModelError(f"the voice encoder file lacks {missing}; reinstall emostream")
        return {k: np.asarray(data[k], dtype=np.float32) for k in WEIGHT_NAMES}


def run_encoder(content: bytes, mel: npt.ArrayLike) -> FloatArray:
    """Run an encoder file's bytes on one (160, 40) mel power block; (256,) float32 (tests, export)."""
    block = np.asarray(mel, dtype=np.float32).reshape(1, BLOCK_FRAMES, MEL_BANDS)
    return _Lstm(load_weights(content))(block)[0]


_RFFT_HAS_OUT = "out" in inspect.signature(np.fft.rfft).parameters

_NETS: dict[tuple[str, str], _Lstm] = {}
_NETS_LOCK = threading.Lock()


def _shared_net(folder: Path, sha256: str, context: str = "the voice config") -> _Lstm:
    """The network of ``folder``'s encoder file, loaded and checked once per process and shared.

    Its weights are read-only and a call keeps its state in local arrays, so every channel and
    thread uses one copy (5.7 MB) instead of one each.
    """
    key = (str(folder.resolve()), sha256)
    with _NETS_LOCK:
        net = _NETS.get(key)
        if net is None:
            net = _NETS[key] = _Lstm(load_weights(_read_checked(folder / MODEL_FILE, sha256, context)))
        return net


def _embed_one(net: _Lstm, mel: FloatArray, layer_means: tuple[int, ...] = ()) -> FloatArray:
    out: FloatArray = net(mel[None], layer_means)[0]
    return out


_SQUARES_BLOCKS = 4  # the ring of squared samples holds this many blocks' worth (moves once per 3 of room)


def _frame_rows(x: FloatArray, n: int) -> FloatArray:
    """The ``n`` frames of :data:`FRAME_SAMPLES` samples every :data:`HOP_SAMPLES` of ``x``: (n, 400) float32, a
    read-only strided view (what ``sliding_window_view(x, 400)[::160]`` gives, without its Python layers)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size < (n - 1) * HOP_SAMPLES + FRAME_SAMPLES:
        raise ValueError(f"{x.size} samples hold fewer than {n} frames")
    step = x.itemsize
    view: FloatArray = np.ndarray((n, FRAME_SAMPLES), np.float32, buffer=x, strides=(step * HOP_SAMPLES, step))
    view.flags.writeable = False
    return view


class VoiceEncoder:
    """The encoder of one stream: ``process(block, end_sample=...)`` -> (``config.dim``,) float32.

    It keeps the last block's mel frames to reuse those the next block shares (:meth:`mel`);
    :meth:`reset` forgets them when a new stream starts. One stream at a time per encoder.

    With a student in the config, the student runs (0.1-0.3 ms per block). Otherwise the LSTM
    runs in NumPy (about 12-15 ms of one core per block with one math thread); the math-thread
    limit of the apps (:mod:`emostream.apps.threads`) keeps BLAS from spreading these small
    products over threads, which costs several times more.
    """

    def __init__(self, config: VoiceConfig, *, model_dir: Path | None = None) -> None:
        self.config = config
        folder = voice_encoder_dir() if model_dir is None else Path(model_dir)
        self._embed: Callable[[FloatArray], FloatArray]
        self._net: _Lstm | None = None  # the shared LSTM, when no student runs
        if config.student_file is not None and config.student_sha256 is not None:
            path = folder / config.student_file
            runner = StudentRunner(
                _student_bytes(path, config.student_sha256), source=str(path), input_kind=config.student_input
            )
            if runner.dim != config.dim:
                raise ModelError(
                    f"the voice student {path} gives {runner.dim} values per block; the model's voice config expects "
                    f"{config.dim} (the embedding and layer means {list(config.layer_means)}): the student and the "
                    "model do not belong together; reinstall emostream, or re-run the distillation "
                    + (
                        f"with --layer-means {','.join(map(str, config.layer_means))}"
                        if config.layer_means
                        else "without --layer-means"
                    )
                )
            self._embed = runner.process
        else:
            self._net = _shared_net(folder, config.model_sha256)
            self._embed = functools.partial(_embed_one, self._net, layer_means=config.layer_means)
        self._filterbank = np.ascontiguousarray(mel_filterbank().T, dtype=np.float32)  # (201, 40)
        n = np.arange(FRAME_SAMPLES)
        self._window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / FRAME_SAMPLES)).astype(np.float32)
        self._target_rms = 10.0 ** (config.target_dbfs / 20.0)
        bins = FRAME_SAMPLES // 2 + 1
        self._windowed = np.empty((BLOCK_FRAMES, FRAME_SAMPLES), dtype=np.float32)
        self._power = np.empty((BLOCK_FRAMES, bins), dtype=np.float32)
        self._imag = np.empty((BLOCK_FRAMES, bins), dtype=np.float32)
        self._spectrum = np.empty((BLOCK_FRAMES, bins), dtype=np.complex64) if _RFFT_HAS_OUT else None
        self._frame_mel = np.empty((BLOCK_FRAMES, MEL_BANDS), dtype=np.float32)  # the last block's, before the level
        # the blocks' squared samples, for their RMS: a block's squares are a slice of this ring, and the next
        # block's shared samples keep theirs (moved to the front when the ring is full)
        self._squares = np.empty(_SQUARES_BLOCKS * BLOCK_SAMPLES, dtype=np.float64)
        self._squares_at = 0  # where the last block's squares start in the ring
        self._frame_mel_end: int | None = None  # stream sample index where that block ended
        self.embeddings_computed = 0
        self.mel_frames_computed = 0

    def reset(self) -> None:
        """Start a new stream: forget the last block's mel frames."""
        self._frame_mel_end = None

    def mel(self, block: npt.ArrayLike, *, end_sample: int | None = None) -> FloatArray:
        """The (160, 40) float32 mel power of a block of :data:`BLOCK_SAMPLES` float32 samples, level-raised.

        ``end_sample``: the block's end as a sample index of the stream this encoder serves. A block
        that ends a multiple of :data:`HOP_SAMPLES` after the previous one shares frames with it
        (windows 0.5 s apart share 110 of 160) and only its new frames are computed (and only its new
        samples are squared for its level, which stays the same bits). A frame's mel
        may then differ from the whole block's product in the last bit of float32 (BLAS sums a
        different number of rows at once); the same stream gives the same blocks either way.
        """
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if x.size != BLOCK_SAMPLES:
            raise ValueError(f"voice block has {x.size} samples; expected {BLOCK_SAMPLES}")
        kept = 0
        moved = None if end_sample is None or self._frame_mel_end is None else end_sample - self._frame_mel_end
        if moved is not None:
            shift, rest = divmod(moved, HOP_SAMPLES)
            if rest == 0 and 0 <= shift < BLOCK_FRAMES:
                kept = BLOCK_FRAMES - shift
                if shift:
                    self._frame_mel[:kept] = self._frame_mel[shift:]  # numpy buffers the overlap
        new = BLOCK_FRAMES - kept
        if new:
            self._frame_mel[kept:] = self._mel_frames(x[kept * HOP_SAMPLES :], new)
            self.mel_frames_computed += new
        self._frame_mel_end = end_sample
        mel: FloatArray = self._frame_mel.copy()
        rms = self._rms(x, moved)
        if 0.0 < rms < self._target_rms:
            mel *= np.float32((self._target_rms / rms) ** 2)
        return mel

    def _rms(self, x: FloatArray, moved: int | None) -> float:
        """RMS of the block ``x`` (float32, (BLOCK_SAMPLES,)), as ``np.sqrt(np.mean(np.square(x, dtype=np.float64)))``.

        ``moved``: samples this block ends after the last one of the same stream (None: unrelated); the
        squares of the samples the two share are the last block's. The float64 squares are summed as one
        contiguous run with ``add.reduce`` and divided by the count, as ``np.mean`` does: the same bits.
        """
        ring = self._squares
        if moved is None or not 0 <= moved < BLOCK_SAMPLES:
            start, fresh = 0, BLOCK_SAMPLES  # every sample's square
        else:
            start, fresh = self._squares_at + moved, moved
            if start + BLOCK_SAMPLES > ring.size:  # full: the shared squares to the front
                ring[: BLOCK_SAMPLES - moved] = ring[start : start + BLOCK_SAMPLES - moved]
                start = 0
        self._squares_at = start
        squares = ring[start : start + BLOCK_SAMPLES]
        if fresh:
            np.square(x[BLOCK_SAMPLES - fresh :], dtype=np.float64, out=squares[BLOCK_SAMPLES - fresh :])
        return float(np.sqrt(np.add.reduce(squares) / BLOCK_SAMPLES))

    def _mel_frames(self, x: FloatArray, n: int) -> FloatArray:
        """The mel power (n, 40) float32 of the ``n`` frames of ``x`` ((n - 1) * 160 + 400 samples), no level."""
        frames = _frame_rows(x, n)
        # The same arithmetic as (rfft(frames * window).real ** 2 + ... imag ** 2).astype(float32), in
        # buffers kept between blocks: fresh 0.25-0.5 MB temporaries cost as much in page faults
        # (system time) as the arithmetic itself.
        windowed = self._windowed[:n]
        np.multiply(frames, self._window, out=windowed)
        if self._spectrum is None:  # numpy 1.26 (32-bit ARM): float64 FFT, its own arrays
            spectrum = np.fft.rfft(windowed, axis=1)
            power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        else:  # numpy >= 2: a float32 FFT (complex64), as without the buffers
            out = self._spectrum[:n]
            np.fft.rfft(windowed, axis=1, out=out)  # type: ignore[arg-type]  # stubs: complex128 only
            power = np.square(out.real, out=self._power[:n])
            power += np.square(out.imag, out=self._imag[:n])
        mel: FloatArray = power @ self._filterbank
        return mel

    def process(self, block: npt.ArrayLike, *, end_sample: int | None = None) -> FloatArray:
        """The embedding of one block of :data:`BLOCK_SAMPLES` samples: (256,) float32, L2 norm 1 (or 0),
        followed by the config's layer means ((``config.dim``,) float32 in all).

        ``end_sample``: the block's end in the stream, to reuse the frames it shares with the last
        block (:meth:`mel`); None computes every frame.
        """
        self.embeddings_computed += 1
        return self._embed(self.mel(block, end_sample=end_sample))
