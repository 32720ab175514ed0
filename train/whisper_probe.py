"""Whisper's encoder as a probe input: per-clip statistics of its output over the clip's speech (not the product).

A question for the ceiling probe (:mod:`emostream.train.probe`, ``--whisper DIR``): would a speech
encoder trained on far more speakers and languages than the voice encoder (Whisper, 680 000 hours of
transcribed speech; no emotion labels) carry more of what the other corpora's emotions share? The
model is a CTranslate2 conversion of an OpenAI Whisper checkpoint (MIT): its ``model.bin``, whose
encoder weights :func:`read_encoder_weights` reads without CTranslate2, run by :class:`WhisperEncoder`
in NumPy (float32; equal to CTranslate2's float32 encoder within 5e-5), so every layer's output is at hand.

Each clip goes through Whisper's own log-mel front-end
(:func:`~emostream.frontend.whisper.whisper_log_mel`, 80 bands, 25 ms frames every 10 ms) unpadded
(the encoder accepts any even number of frames; with ``chunk_ms`` in separate chunks of that length,
as a stream would encode them), the encoder gives one row every 20 ms per layer, and the rows whose
centre the VAD (the product's webrtcvad gate) calls speech are pooled into their mean and standard
deviation: ``2 * d`` columns per clip and layer (d = 384 for tiny, 512 for base), every clip's rows
computed once and cached.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

from emostream.errors import ConfigError
from emostream.frontend.vad import VadConfig, VadGate
from emostream.frontend.whisper import ROW_SAMPLES, SAMPLE_RATE_HZ, whisper_log_mel
from emostream.frontend.whisper import speech_rows as rows_in_speech
from emostream.train.corpora import Clip

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

ENCODER_HOP_SAMPLES = ROW_SAMPLES  # the encoder's stride-2 convolution: one row every 20 ms


def speech_rows(samples: F32, n_rows: int, vad: VadConfig | None = None) -> npt.NDArray[np.bool_]:
    """Which of ``n_rows`` encoder rows (20 ms each from sample 0) have their centre in VAD speech; all when none."""
    gate = VadGate(vad or VadConfig(), SAMPLE_RATE_HZ)
    return rows_in_speech(gate.process(samples), n_rows, gate.frame_samples)


def read_encoder_weights(model_bin: Path) -> dict[str, F32]:
    """The ``encoder/*`` variables of a CTranslate2 model file as float32 arrays, keyed without the prefix
    (parsed by :func:`emostream.train.whisper_encoder_export.read_ct2_variables`; :class:`ConfigError` if it
    does not parse)."""
    from emostream.errors import DatasetError  # noqa: PLC0415
    from emostream.train.whisper_encoder_export import read_ct2_variables  # noqa: PLC0415

    try:
        variables = read_ct2_variables(model_bin.read_bytes())
    except DatasetError as exc:
        raise ConfigError(f"{model_bin}: {exc}") from exc
    return {name: np.asarray(value, dtype=np.float32) for name, value in variables.items()}


def _gelu(x: F32) -> F32:
    from scipy.special import erf  # noqa: PLC0415  (training extra: scikit-learn's scipy)

    out: F32 = 0.5 * x * (1.0 + erf(x / np.float32(math.sqrt(2.0))))
    return out


def _layer_norm(x: F32, gamma: F32, beta: F32) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    out: F32 = (x - mean) / np.sqrt(var + np.float32(1e-5)) * gamma + beta
    return out


def _conv3(x: F32, weight: F32, bias: F32, stride: int) -> F32:
    """Conv1d, kernel 3, padding 1: x (c_in, t) -> (c_out, t_out) float32."""
    padded = np.pad(x, ((0, 0), (1, 1)))
    t_out = (padded.shape[1] - 3) // stride + 1
    cols = np.concatenate([padded[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(3)], axis=0)
    flat = weight.transpose(0, 2, 1).reshape(weight.shape[0], -1)  # (c_out, 3 c_in), kernel tap major
    out: F32 = flat @ cols + bias[:, None]
    return out


class WhisperEncoder:
    """Whisper's audio encoder in NumPy: log-mel (80, t) float32, t even -> per-layer rows (t / 2, d) float32."""

    def __init__(self, model_bin: Path | None = None, *, weights: dict[str, F32] | None = None) -> None:
        """From a CTranslate2 ``model_bin``, or from ``weights`` keyed as :func:`read_encoder_weights` gives them
        (without ``layer_norm/*`` the final layer norm's output is left out)."""
        if (model_bin is None) == (weights is None):
            raise ConfigError("WhisperEncoder needs a model.bin or weights, not both or neither")
        self.w = read_encoder_weights(model_bin) if model_bin is not None else dict(weights or {})
        self.n_layers = sum(1 for k in self.w if k.endswith("self_attention/linear_0/weight"))
        self.heads = int(self.w["num_heads"].reshape(-1)[0])
        self.dim = int(self.w["conv1/bias"].shape[0])

    def __call__(self, mel: F32) -> list[F32]:
        """Outputs of blocks 1 .. n_layers, then the final layer norm (what Whisper's decoder reads)."""
        w = self.w
        x = _gelu(_conv3(mel, w["conv1/weight"], w["conv1/bias"], 1))
        x = _gelu(_conv3(x, w["conv2/weight"], w["conv2/bias"], 2)).T
        x = x + w["position_encodings/encodings"][: x.shape[0]]
        heads, dh = self.heads, self.dim // self.heads
        scale = np.float32(dh**-0.25)
        outs = []
        for i in range(self.n_layers):
            p = f"layer_{i}/"
            y = _layer_norm(x, w[p + "self_attention/layer_norm/gamma"], w[p + "self_attention/layer_norm/beta"])
            qkv = y @ w[p + "self_attention/linear_0/weight"].T + w[p + "self_attention/linear_0/bias"]
            q, k, v = (part.reshape(-1, heads, dh).transpose(1, 0, 2) for part in np.split(qkv, 3, axis=1))
            scores = (q * scale) @ (k * scale).transpose(0, 2, 1)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            attended = (scores @ v).transpose(1, 0, 2).reshape(-1, self.dim)
            x = x + attended @ w[p + "self_attention/linear_1/weight"].T + w[p + "self_attention/linear_1/bias"]
            y = _layer_norm(x, w[p + "ffn/layer_norm/gamma"], w[p + "ffn/layer_norm/beta"])
            y = _gelu(y @ w[p + "ffn/linear_0/weight"].T + w[p + "ffn/linear_0/bias"])
            x = x + y @ w[p + "ffn/linear_1/weight"].T + w[p + "ffn/linear_1/bias"]
            outs.append(x)
        if "layer_norm/gamma" in w:
            outs.append(_layer_norm(x, w["layer_norm/gamma"], w["layer_norm/beta"]))
        return outs


def encode_rows(encoder: WhisperEncoder, samples: F32, chunk_ms: float | None) -> list[F32]:
    """Every layer's rows of ``samples``: whole, or each ``chunk_ms`` chunk encoded on its own (rows joined)."""
    if chunk_ms is None:
        return encoder(whisper_log_mel(samples))
    step = round(chunk_ms * SAMPLE_RATE_HZ / 1000.0)
    parts = [encoder(whisper_log_mel(samples[i : i + step])) for i in range(0, samples.size, step)]
    return [np.concatenate([p[layer] for p in parts]) for layer in range(len(parts[0]))]


def _check_model_dir(model_dir: Path) -> None:
    if not (model_dir / "model.bin").is_file():
        raise ConfigError(
            f"--whisper {model_dir}: expected a CTranslate2 Whisper model folder (model.bin); "
            "see docs/results.md for where the probe's models came from"
        )


def encoder_statistics(
    clips: Sequence[Clip], model_dir: Path, cache: Path | None, *, chunk_ms: float | None = None
) -> tuple[F64, list[str]]:
    """Mean and standard deviation of each layer's rows over each clip's speech: ((n_clips, L 2 d) float64, names).

    Names are ``whisper_l{layer}_mean_{i}`` then ``whisper_l{layer}_std_{i}`` per layer (1 .. n_layers, then
    ``post``: the final layer norm). Cached in ``cache`` under a key of the clips' paths and sizes, the model
    file's sha256 and ``chunk_ms``. Prints the encoder's CPU seconds per audio second.
    """
    _check_model_dir(model_dir)
    digest = hashlib.sha256((model_dir / "model.bin").read_bytes()).hexdigest()
    listing = "\n".join(f"{c.path}:{Path(c.path).stat().st_size}" for c in clips)
    key = hashlib.sha256(f"{digest}\n{chunk_ms}\n{listing}".encode()).hexdigest()
    path = None if cache is None else cache / f"whisper_{key[:20]}.npz"
    if path is not None and path.exists():
        with np.load(path) as stored:
            return stored["x"], [str(n) for n in stored["names"]]
    encoder = WhisperEncoder(model_dir / "model.bin")
    rows = []
    cpu, audio_s = 0.0, 0.0
    for clip in clips:
        x, rate = sf.read(str(clip.path), dtype="float32")
        if rate != SAMPLE_RATE_HZ or x.ndim != 1:
            raise ConfigError(f"{clip.path}: {rate} Hz with shape {x.shape}; the probe reads 16 kHz mono clips")
        started = time.process_time()
        layers = encode_rows(encoder, x, chunk_ms)
        cpu += time.process_time() - started
        audio_s += x.size / SAMPLE_RATE_HZ
        speech = speech_rows(x, layers[0].shape[0])
        kept = [out[speech].astype(np.float64) for out in layers]
        rows.append(np.concatenate([np.concatenate([k.mean(axis=0), k.std(axis=0)]) for k in kept]))
    print(f"whisper encoder ({model_dir.name}): {cpu / max(audio_s, 1e-9):.4f} CPU s per audio s", flush=True)
    values = np.array(rows, dtype=np.float64)
    tags = [str(i) for i in range(1, encoder.n_layers + 1)] + ["post"]
    names = [f"whisper_l{tag}_{stat}_{i}" for tag in tags for stat in ("mean", "std") for i in range(encoder.dim)]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=values, names=np.array(names))
    return values, names
