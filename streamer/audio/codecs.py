"""Audio codecs: the one float <-> PCM16 conversion, G.711 μ-law/A-law, and the table of raw formats.

The G.711 codecs are the real segmented companders (the Sun ``g711.c`` reference that
CPython's ``audioop`` also uses), bit-exact on 16-bit PCM: a 16-bit sample is mapped
to one byte through a 65 536-entry table and a byte back through a 256-entry table,
both built once at import from the segment rules.

Float audio is float32 in [-1, 1]; it is converted to 16-bit PCM as
``clip(round(x * 32768), -32768, 32767)`` and back as ``pcm / 32768``
(:func:`float_to_pcm16`, :func:`float_to_pcm16_bytes`, :func:`pcm16_to_float`); nothing
else in emostream converts float to PCM16.

Functions:

* :func:`mulaw_encode`, :func:`mulaw_decode`, :func:`alaw_encode`, :func:`alaw_decode`
  (float32 ↔ uint8) and their 16-bit forms :func:`pcm16_to_mulaw` etc.;
* :func:`g711_roundtrip` — what a signal sounds like after a narrowband G.711 call
  (resample to 8 kHz, encode, decode, resample back), used for telephone-band
  training augmentation and evaluation;
* :data:`RAW_FORMATS` — the one table of headerless sample formats (``s16le``, ``s32le``,
  ``f32le``, ``mulaw``, ``alaw``) that ``--stdin --format`` accepts, with :func:`raw_format`,
  :func:`decode_raw` and :func:`encode_raw`.

μ-law/A-law WAV files need nothing from here: libsndfile reads them natively
(subtypes ``ULAW``/``ALAW``) through :func:`emostream.audio.files.read_audio`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import soxr

from emostream.errors import AudioInputError, ConfigError

FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]
Pcm16Array = npt.NDArray[np.int16]

TELEPHONE_RATE_HZ = 8000
"""G.711 sample rate."""

Law = Literal["mulaw", "alaw"]
LAWS: tuple[str, ...] = ("mulaw", "alaw")

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _segment(magnitude: npt.NDArray[np.int32], seg_end: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Index of the first segment whose end is >= magnitude (8 when beyond the last)."""
    return np.searchsorted(seg_end, magnitude, side="left").astype(np.int32)


def _build_ulaw_encode_table() -> ByteArray:
    """μ-law byte for every 16-bit sample, indexed by ``sample + 32768``."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit input, as in g711.c
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = _segment(magnitude, _ULAW_SEG_END)
    in_range = seg < 8
    seg_c = np.minimum(seg, 7)
    uval = (seg_c << 4) | ((magnitude >> (seg_c + 1)) & 0xF)
    uval = np.where(in_range, uval, 0x7F)
    return (uval ^ mask).astype(np.uint8)


def _build_ulaw_decode_table() -> Pcm16Array:
    """16-bit sample for every μ-law byte."""
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode_table() -> ByteArray:
    """A-law byte for every 16-bit sample, indexed by ``sample + 32768``."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit input, as in g711.c
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    seg = _segment(magnitude, _ALAW_SEG_END)
    in_range = seg < 8
    seg_c = np.minimum(seg, 7)
    shift = np.where(seg_c < 2, 1, seg_c)
    aval = (seg_c << 4) | ((magnitude >> shift) & 0xF)
    aval = np.where(in_range, aval, 0x7F)
    return (aval ^ mask).astype(np.uint8)


def _build_alaw_decode_table() -> Pcm16Array:
    """16-bit sample for every A-law byte."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


@cache
def _table(name: Literal["ulaw_enc", "ulaw_dec", "alaw_enc", "alaw_dec"]) -> npt.NDArray[Any]:
    """A G.711 lookup table, built on first use (5-7 ms each process that needs none: the CLI on a file)."""
    builders: dict[str, Callable[[], npt.NDArray[Any]]] = {
        "ulaw_enc": _build_ulaw_encode_table,
        "ulaw_dec": _build_ulaw_decode_table,
        "alaw_enc": _build_alaw_encode_table,
        "alaw_dec": _build_alaw_decode_table,
    }
    table = builders[name]()
    table.flags.writeable = False
    return table


def float_to_pcm16(x: npt.ArrayLike) -> Pcm16Array:
    """Float samples in [-1, 1] to int16: ``clip(round(x * 32768), -32768, 32767)``; shape kept."""
    scaled = np.multiply(np.asarray(x, dtype=np.float32), np.float32(32768.0))
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)  # in place: one pass (np.minimum then np.maximum took two)
    return scaled.astype(np.int16)


def float_to_pcm16_bytes(x: npt.ArrayLike) -> bytes:
    """Float samples in [-1, 1] as little-endian 16-bit PCM bytes (:func:`float_to_pcm16`), 2 bytes per sample.

    What the WebRTC VAD and ``s16le`` output take; ``x`` of any shape is written in C order.
    """
    return float_to_pcm16(x).astype("<i2", copy=False).tobytes()


def pcm16_to_float(pcm: npt.ArrayLike) -> FloatArray:
    """int16 samples to float32 in [-1, 1): ``pcm / 32768``; shape kept."""
    return np.asarray(pcm, dtype=np.int16).astype(np.float32) / np.float32(32768.0)


def pcm16_to_mulaw(pcm: npt.ArrayLike) -> ByteArray:
    """G.711 μ-law bytes of int16 samples (bit-exact with ``audioop.lin2ulaw(..., 2)``)."""
    return _table("ulaw_enc")[np.asarray(pcm, dtype=np.int16).astype(np.int32) + 32768]


def mulaw_to_pcm16(codes: npt.ArrayLike) -> Pcm16Array:
    """int16 samples of G.711 μ-law bytes (bit-exact with ``audioop.ulaw2lin(..., 2)``)."""
    return _table("ulaw_dec")[np.asarray(codes, dtype=np.uint8)]


def pcm16_to_alaw(pcm: npt.ArrayLike) -> ByteArray:
    """G.711 A-law bytes of int16 samples (bit-exact with ``audioop.lin2alaw(..., 2)``)."""
    return _table("alaw_enc")[np.asarray(pcm, dtype=np.int16).astype(np.int32) + 32768]


def alaw_to_pcm16(codes: npt.ArrayLike) -> Pcm16Array:
    """int16 samples of G.711 A-law bytes (bit-exact with ``audioop.alaw2lin(..., 2)``)."""
    return _table("alaw_dec")[np.asarray(codes, dtype=np.uint8)]


def mulaw_encode(x: npt.ArrayLike) -> ByteArray:
    """Float32 samples in [-1, 1] (any shape) to μ-law bytes, uint8, same shape."""
    return pcm16_to_mulaw(float_to_pcm16(x))


def mulaw_decode(codes: npt.ArrayLike) -> FloatArray:
    """μ-law bytes (uint8, any shape) to float32 samples in [-1, 1], same shape."""
    return pcm16_to_float(mulaw_to_pcm16(codes))


def alaw_encode(x: npt.ArrayLike) -> ByteArray:
    """Float32 samples in [-1, 1] (any shape) to A-law bytes, uint8, same shape."""
    return pcm16_to_alaw(float_to_pcm16(x))


def alaw_decode(codes: npt.ArrayLike) -> FloatArray:
    """A-law bytes (uint8, any shape) to float32 samples in [-1, 1], same shape."""
    return pcm16_to_float(alaw_to_pcm16(codes))


def as_law(law: str) -> Law:
    """``law`` checked to be a G.711 law name (``mulaw`` or ``alaw``); :class:`ConfigError` otherwise."""
    if law == "mulaw":
        return "mulaw"
    if law == "alaw":
        return "alaw"
    raise ConfigError(f"G.711 law is {law!r}; expected one of {LAWS}")


def g711_roundtrip(x: npt.ArrayLike, rate_hz: int, law: Law = "mulaw") -> FloatArray:
    """Simulate a G.711 phone line: resample to 8 kHz, encode, decode, resample back.

    ``x`` is float32 mono (n,) or multi-channel (n, channels) at ``rate_hz``; the result
    has the same shape and rate (length trimmed or zero-padded to ``n``). The soxr HQ
    filter band-limits to just under 4 kHz, as a phone line does.
    """
    law = as_law(law)
    if rate_hz <= 0:
        raise ConfigError(f"rate_hz is {rate_hz}; expected a positive sample rate such as 16000")
    signal = np.asarray(x, dtype=np.float32)
    n = signal.shape[0]
    narrow = _resample(signal, rate_hz, TELEPHONE_RATE_HZ)
    coded = mulaw_decode(mulaw_encode(narrow)) if law == "mulaw" else alaw_decode(alaw_encode(narrow))
    wide = _resample(coded, TELEPHONE_RATE_HZ, rate_hz)
    return _fit_length(wide, n)


def _resample(x: FloatArray, rate_in_hz: int, rate_out_hz: int) -> FloatArray:
    if rate_in_hz == rate_out_hz or x.shape[0] == 0:
        return x
    return np.asarray(soxr.resample(x, rate_in_hz, rate_out_hz, quality="HQ"), dtype=np.float32)


def _fit_length(x: FloatArray, n: int) -> FloatArray:
    if x.shape[0] >= n:
        return np.ascontiguousarray(x[:n])
    pad = np.zeros((n - x.shape[0], *x.shape[1:]), dtype=np.float32)
    return np.concatenate([x, pad])


# ---------------------------------------------------------------- raw formats


@dataclass(frozen=True, kw_only=True)
class RawFormat:
    """A headerless sample format: its size, a decoder and an encoder.

    ``decode(data)`` takes whole samples (``len(data)`` a multiple of ``bytes_per_sample``) and
    returns float32 in [-1, 1], shape (n_samples,) (interleaved if multi-channel);
    ``encode(x)`` takes float32 samples of any shape and returns their bytes in C order.
    """

    name: str
    bytes_per_sample: int
    description: str
    decode: Callable[[bytes], FloatArray]
    encode: Callable[[FloatArray], bytes]


_S32_SCALE = 2147483648.0


def _s16_decode(data: bytes) -> FloatArray:
    return pcm16_to_float(np.frombuffer(data, dtype="<i2"))


def _s32_decode(data: bytes) -> FloatArray:
    return (np.frombuffer(data, dtype="<i4").astype(np.float32) / np.float32(_S32_SCALE)).astype(np.float32)


def _s32_encode(x: FloatArray) -> bytes:
    scaled = np.rint(np.asarray(x, dtype=np.float64) * _S32_SCALE)
    return np.clip(scaled, -_S32_SCALE, _S32_SCALE - 1).astype("<i4").tobytes()


def _f32_decode(data: bytes) -> FloatArray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _f32_encode(x: FloatArray) -> bytes:
    return np.asarray(x, dtype="<f4").tobytes()


def _mulaw_decode(data: bytes) -> FloatArray:
    return mulaw_decode(np.frombuffer(data, dtype=np.uint8))


def _alaw_decode(data: bytes) -> FloatArray:
    return alaw_decode(np.frombuffer(data, dtype=np.uint8))


RAW_FORMATS: Mapping[str, RawFormat] = MappingProxyType(
    {
        fmt.name: fmt
        for fmt in (
            RawFormat(
                name="s16le",
                bytes_per_sample=2,
                description="16-bit signed little-endian",
                decode=_s16_decode,
                encode=float_to_pcm16_bytes,
            ),
            RawFormat(
                name="s32le",
                bytes_per_sample=4,
                description="32-bit signed little-endian",
                decode=_s32_decode,
                encode=_s32_encode,
            ),
            RawFormat(
                name="f32le",
                bytes_per_sample=4,
                description="32-bit float little-endian",
                decode=_f32_decode,
                encode=_f32_encode,
            ),
            RawFormat(
                name="mulaw",
                bytes_per_sample=1,
                description="G.711 mu-law, 8-bit",
                decode=_mulaw_decode,
                encode=lambda x: mulaw_encode(x).tobytes(),
            ),
            RawFormat(
                name="alaw",
                bytes_per_sample=1,
                description="G.711 A-law, 8-bit",
                decode=_alaw_decode,
                encode=lambda x: alaw_encode(x).tobytes(),
            ),
        )
    }
)
"""The raw sample formats, by name (``--stdin --format``); the first, ``s16le``, is the default."""


def raw_format(name: str) -> RawFormat:
    """Look up a raw format by name (case-insensitive); :class:`ConfigError` lists the known ones."""
    try:
        return RAW_FORMATS[name.lower()]
    except KeyError:
        known = ", ".join(f"{k} ({v.description})" for k, v in RAW_FORMATS.items())
        raise ConfigError(
            f"raw PCM format {name!r} is not supported; supported formats: {known}. Pass one of them with --format"
        ) from None


def bytes_per_sample(fmt: str) -> int:
    """Bytes one sample of a raw format takes (1 for mulaw/alaw, 2 for s16le, 4 for s32le/f32le)."""
    return raw_format(fmt).bytes_per_sample


def decode_raw(data: bytes, fmt: str) -> FloatArray:
    """Headerless raw samples to float32 in [-1, 1], shape (n_samples,) (interleaved if multi-channel).

    ``fmt`` names an entry of :data:`RAW_FORMATS`. Reshape interleaved channels with
    ``.reshape(-1, channels)``. Raises :class:`AudioInputError` if ``data`` is not a whole
    number of samples, :class:`ConfigError` for an unknown format.
    """
    codec = raw_format(fmt)
    if len(data) % codec.bytes_per_sample:
        raise AudioInputError(
            f"raw {codec.name} input has {len(data)} bytes, not a multiple of the {codec.bytes_per_sample}-byte "
            "sample; pass whole samples (buffer partial reads before decoding)"
        )
    return codec.decode(data)


def encode_raw(x: npt.ArrayLike, fmt: str) -> bytes:
    """Float32 samples in [-1, 1] (any shape, C order; (n, channels) gives interleaved) as raw ``fmt`` bytes."""
    return raw_format(fmt).encode(np.asarray(x, dtype=np.float32))
