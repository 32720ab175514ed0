"""Seeded audio augmentation of training clips: tempo, pitch, room, noise, telephone band, level.

Every function takes float32 mono audio (values in [-1, 1]) at ``rate_hz`` and returns
float32 mono audio at the same rate. :func:`augment` draws a random mix of them from a
``numpy.random.Generator``, so a fixed seed reproduces the same audio.

Rooms are synthetic impulse responses of shoebox rooms (image-source method of
pyroomacoustics, a training dependency), drawn once per process into a seeded bank
(:func:`rir_bank`). Babble is the sum of several other speakers' clips of the same corpus
(the caller picks them, :func:`babble_picks`), so no test corpus's voices leak into training.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

from emostream.audio.codecs import TELEPHONE_RATE_HZ, as_law, g711_roundtrip
from emostream.audio.files import FloatArray, resample
from emostream.errors import ConfigError

TELEPHONE_BAND_HZ: tuple[float, float] = (300.0, 3400.0)


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """How many augmented copies of each training clip to make, and the ranges drawn from.

    Probabilities are per copy; ``snr_db``, ``tempo``, ``babble_talkers`` and ``rt60_s`` are
    (low, high) ranges; ``gain_db`` and ``pitch_semitones`` are symmetric maxima (± value).
    ``babble_share``: of the copies that get noise, the share whose noise is babble (when
    the caller gives other speakers' audio) rather than white or pink noise. ``rt60_s``: the
    reverberation time asked of the shoebox rooms (the image-source RIRs come out somewhat
    longer); ``rir_bank``: how many rooms one process draws and reuses.
    """

    copies: int = 0
    seed: int = 1234
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (0.0, 30.0)
    babble_share: float = 0.5
    babble_talkers: tuple[int, int] = (3, 6)
    gain_db: float = 9.0
    pitch_prob: float = 0.3
    pitch_semitones: float = 2.0
    tempo_prob: float = 0.3
    tempo: tuple[float, float] = (0.85, 1.15)
    reverb_prob: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.7)
    rir_bank: int = 32
    telephone_prob: float = 0.3

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ConfigError(f"augmentation copies is {self.copies}; expected 0 or more")
        for name in ("noise_prob", "babble_share", "pitch_prob", "tempo_prob", "reverb_prob", "telephone_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augmentation {name} is {getattr(self, name)}; expected 0.0..1.0")
        for name, low in (("tempo", 0.0), ("rt60_s", 0.0), ("babble_talkers", 0.5)):
            lo, hi = getattr(self, name)
            if not low < lo <= hi:
                raise ConfigError(f"augmentation {name} range {(lo, hi)}; expected {low:g} < low <= high")
        if self.rir_bank < 1:
            raise ConfigError(f"augmentation rir_bank is {self.rir_bank}; expected 1 or more rooms")

    def key_dict(self) -> dict[str, Any]:
        """What names the augmented audio in a cache key: nothing but ``copies`` when there are none."""
        return self.to_dict() if self.copies > 0 else {"copies": 0}

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (stored in model metadata and part of the cache key)."""
        return dataclasses.asdict(self)


def augment_config_from_dict(data: dict[str, Any]) -> AugmentConfig:
    """Inverse of :meth:`AugmentConfig.to_dict` (lists become tuples)."""
    fixed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return AugmentConfig(**fixed)


def g711_available() -> bool:
    """Whether telephone augmentation applies G.711 coding: always, since :mod:`emostream.audio.codecs` ships."""
    return True


def white_noise(n: int, rng: np.random.Generator) -> FloatArray:
    """Unit-variance white noise, shape (n,)."""
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> FloatArray:
    """Unit-variance pink (1/f power) noise made by shaping white noise in the frequency domain, shape (n,)."""
    spectrum = np.fft.rfft(rng.standard_normal(max(n, 2)))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    shaped = np.fft.irfft(spectrum / np.sqrt(freqs), n=max(n, 2))[:n]
    return (shaped / (np.std(shaped) + 1e-12)).astype(np.float32)


def add_noise(x: FloatArray, snr_db: float, noise: FloatArray) -> FloatArray:
    """``x`` plus ``noise`` scaled to the given signal-to-noise ratio (dB, power of x over its whole length)."""
    power = float(np.mean(np.square(x, dtype=np.float64))) + 1e-12
    noise_power = float(np.mean(np.square(noise, dtype=np.float64))) + 1e-12
    scale = np.sqrt(power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return (x + scale * noise[: x.size]).astype(np.float32)


def babble(talkers: Sequence[FloatArray], n: int, rng: np.random.Generator) -> FloatArray:
    """Unit-RMS babble of length ``n``: each talker's audio looped from a random start, at unit RMS, summed.

    ``talkers``: one or more float32 mono signals (other speakers' clips) at the clip's rate.
    """
    if not talkers:
        raise ConfigError("babble needs at least one other speaker's clip; got none")
    mix = np.zeros(n, dtype=np.float64)
    for voice in talkers:
        v = np.asarray(voice, dtype=np.float64)
        if v.size == 0:
            continue
        start = int(rng.integers(0, v.size))
        looped = np.resize(np.roll(v, -start), n)
        mix += looped / (np.sqrt(np.mean(v**2)) + 1e-12)
    return (mix / (np.sqrt(np.mean(mix**2)) + 1e-12)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def rir_bank(seed: int, count: int, rt60_s: tuple[float, float], rate_hz: int) -> tuple[FloatArray, ...]:
    """``count`` room impulse responses of random shoebox rooms, seeded (float32, peak 1, direct path at index 32).

    Rooms 3-10 m x 3-8 m x 2.4-3.5 m, the reverberation time drawn uniformly from ``rt60_s``
    (walls' absorption and reflection order by Sabine's formula), source and microphone
    0.5-3 m apart, 0.5 m or more from the walls. Needs pyroomacoustics (training extra).
    """
    import pyroomacoustics as pra  # noqa: PLC0415  (training dependency; the runtime never reverberates)

    rng = np.random.default_rng([seed, count, rate_hz])
    out: list[FloatArray] = []
    while len(out) < count:
        dims = np.array([rng.uniform(3.0, 10.0), rng.uniform(3.0, 8.0), rng.uniform(2.4, 3.5)])
        rt60 = float(rng.uniform(*rt60_s))
        source = rng.uniform(0.5, dims - 0.5)
        direction = rng.standard_normal(3)
        mic = source + rng.uniform(0.5, 3.0) * direction / np.linalg.norm(direction)
        if np.any(mic < 0.5) or np.any(mic > dims - 0.5):
            continue
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims.tolist())
        except ValueError:  # the room is too large for so short a reverberation time
            continue
        room = pra.ShoeBox(dims.tolist(), fs=rate_hz, materials=pra.Material(absorption), max_order=max_order)
        room.add_source(source.tolist())
        room.add_microphone(mic.tolist())
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        start = max(int(np.argmax(np.abs(rir))) - 32, 0)
        rir = rir[start:]
        out.append((rir / np.max(np.abs(rir))).astype(np.float32))
    return tuple(out)


def reverberate(x: FloatArray, rir: FloatArray) -> FloatArray:
    """``x`` convolved with ``rir`` (direct path near its start), cut to ``x``'s length, at ``x``'s RMS."""
    wet = sps.fftconvolve(x.astype(np.float64), rir.astype(np.float64))[: x.size]
    scale = np.sqrt(np.mean(np.square(x, dtype=np.float64)) / (np.mean(wet**2) + 1e-20))
    return np.clip(wet * scale, -1.0, 1.0).astype(np.float32)


def apply_gain(x: FloatArray, gain_db: float) -> FloatArray:
    """Scale by ``gain_db`` decibels and clip to [-1, 1]."""
    return np.clip(x * np.float32(10.0 ** (gain_db / 20.0)), -1.0, 1.0).astype(np.float32)


def time_stretch(x: FloatArray, rate: float, n_fft: int = 512, hop: int = 128) -> FloatArray:
    """Phase-vocoder tempo change: ``rate`` > 1 is faster (shorter), pitch kept. Length ≈ len(x) / rate."""
    if x.size < n_fft or abs(rate - 1.0) < 1e-6:
        return x.astype(np.float32)
    window = np.hanning(n_fft + 1)[:-1]
    _, _, stft = sps.stft(x, nperseg=n_fft, noverlap=n_fft - hop, window=window, boundary=None, padded=False)
    steps = np.arange(0.0, stft.shape[1] - 1, rate)
    expected = np.linspace(0.0, np.pi * hop, stft.shape[0])
    phase = np.angle(stft[:, 0])
    out = np.empty((stft.shape[0], steps.size), dtype=np.complex128)
    for k, step in enumerate(steps):
        i = int(step)
        frac = step - i
        left, right = stft[:, i], stft[:, i + 1]
        out[:, k] = ((1.0 - frac) * np.abs(left) + frac * np.abs(right)) * np.exp(1j * phase)
        delta = np.angle(right) - np.angle(left) - expected
        delta -= 2.0 * np.pi * np.round(delta / (2.0 * np.pi))
        phase = phase + expected + delta
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NOLA condition failed")  # the Hann window at hop n/4 is NOLA
        _, y = sps.istft(out, nperseg=n_fft, noverlap=n_fft - hop, window=window, boundary=False)
    return np.asarray(y, dtype=np.float32)


def pitch_shift(x: FloatArray, rate_hz: int, semitones: float) -> FloatArray:
    """Shift pitch by ``semitones`` keeping the duration: tempo-stretch, then resample back."""
    factor = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(x, 1.0 / factor)
    shifted = resample(stretched, round(rate_hz * factor), rate_hz)
    out = np.zeros(x.size, dtype=np.float32)
    n = min(x.size, shifted.size)
    out[:n] = shifted[:n]
    return out


def telephone(x: FloatArray, rate_hz: int, law: str | None = "mulaw") -> FloatArray:
    """Telephone channel: 300–3400 Hz band-pass, 8 kHz round trip, G.711 ``law`` coding (None: no coding)."""
    sos = sps.butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=rate_hz, output="sos")
    band = sps.sosfiltfilt(sos, x.astype(np.float64)).astype(np.float32)
    narrow = resample(band, rate_hz, TELEPHONE_RATE_HZ)
    if law is not None:
        narrow = g711_roundtrip(narrow, TELEPHONE_RATE_HZ, as_law(law))
    wide = resample(np.clip(narrow, -1.0, 1.0), TELEPHONE_RATE_HZ, rate_hz)
    out = np.zeros(x.size, dtype=np.float32)
    n = min(x.size, wide.size)
    out[:n] = wide[:n]
    return out


def augment(
    x: FloatArray,
    rate_hz: int,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    talkers: Sequence[FloatArray] = (),
) -> FloatArray:
    """One random augmented copy of ``x``: tempo, pitch, room, noise, telephone line, level (each by its probability).

    The order follows the sound's path: the talker (tempo, pitch), the room (reverberation),
    the noise around the talker, the line (band, 8 kHz, G.711 mu-law or A-law), the level.
    ``talkers``: other speakers' audio for babble noise (none: white or pink noise only).
    """
    y = np.asarray(x, dtype=np.float32)
    if rng.random() < cfg.tempo_prob:
        y = time_stretch(y, float(rng.uniform(*cfg.tempo)))
    if rng.random() < cfg.pitch_prob:
        y = pitch_shift(y, rate_hz, float(rng.uniform(-cfg.pitch_semitones, cfg.pitch_semitones)))
    if rng.random() < cfg.reverb_prob:
        rooms = rir_bank(cfg.seed, cfg.rir_bank, cfg.rt60_s, rate_hz)
        y = reverberate(y, rooms[int(rng.integers(0, len(rooms)))])
    if rng.random() < cfg.noise_prob:
        kind = rng.random()
        if talkers and kind < cfg.babble_share:
            noise = babble(talkers, y.size, rng)
        else:
            noise = white_noise(y.size, rng) if rng.random() < 0.5 else pink_noise(y.size, rng)
        y = add_noise(y, float(rng.uniform(*cfg.snr_db)), noise)
    if rng.random() < cfg.telephone_prob:
        y = telephone(y, rate_hz, law=str(rng.choice(["mulaw", "alaw"])))
    return apply_gain(y, float(rng.uniform(-cfg.gain_db, cfg.gain_db)))


def babble_picks(speakers: Sequence[str], cfg: AugmentConfig) -> list[list[list[int]]]:
    """For each clip and each augmented copy, the indices of the clips whose voices make its babble.

    ``speakers``: the speaker of each clip (one corpus; clips of the clip's own speaker are
    never picked). Shape: clips x ``cfg.copies`` x (``babble_talkers`` low..high, fewer when
    the corpus has fewer other speakers). Seeded by ``cfg.seed`` and the clip's position.
    """
    who = np.asarray(speakers)
    out: list[list[list[int]]] = []
    for i, me in enumerate(who):
        others = np.flatnonzero(who != me)
        per_copy: list[list[int]] = []
        for k in range(1, cfg.copies + 1):
            rng = np.random.default_rng([cfg.seed, 7919, i, k])
            n = min(int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1)), others.size)
            picks: list[int] = []
            voices: set[str] = set()
            for j in rng.permutation(others):
                if len(picks) == n:
                    break
                if who[j] not in voices:
                    voices.add(str(who[j]))
                    picks.append(int(j))
            per_copy.append(picks)
        out.append(per_copy)
    return out


def clip_rng(cfg: AugmentConfig, clip_key: str, copy: int) -> np.random.Generator:
    """The generator of one (clip, copy): depends only on the seed, the clip's name and the copy number."""
    digest = np.frombuffer(clip_key.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    return np.random.default_rng([cfg.seed, copy, *digest.tolist()])


def snr_db(clean: npt.NDArray[np.floating[Any]], noisy: npt.NDArray[np.floating[Any]]) -> float:
    """Measured signal-to-noise ratio in dB of ``noisy`` against ``clean`` (same length)."""
    noise = np.asarray(noisy, dtype=np.float64) - np.asarray(clean, dtype=np.float64)
    return float(10.0 * np.log10(np.mean(np.square(clean, dtype=np.float64)) / (np.mean(noise**2) + 1e-20)))
