"""Per-frame pitch (F0) and voicing from the normalised autocorrelation of a windowed frame.

The autocorrelation of each Hann-windowed STFT frame is computed through an FFT long
enough to avoid circular wrap-around, divided by the window's own autocorrelation
(Boersma 1993, so the taper does not bias long lags), and searched for its highest peak
between the lags of ``F0_MAX_HZ`` and ``F0_MIN_HZ``: the shortest local maximum within
``OCTAVE_RATIO`` of the highest one wins (so a period is not mistaken for two), and
parabolic interpolation refines the lag.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

F0_MIN_HZ = 75.0
F0_MAX_HZ = 500.0
VOICING_THRESHOLD = 0.45
OCTAVE_RATIO = 0.9
F0_REFERENCE_HZ = 100.0
_EPS = 1e-10

FloatArray = npt.NDArray[np.float32]


class PitchTables:
    """FFT size, lag range and window autocorrelation for one frame length and rate."""

    def __init__(self, window: npt.NDArray[np.float64], sample_rate_hz: int) -> None:
        frame_samples = window.size
        self.n_fft = 1 << (2 * frame_samples - 1).bit_length()
        self.min_lag = max(2, math.floor(sample_rate_hz / F0_MAX_HZ))
        self.max_lag = min(frame_samples - 2, math.ceil(sample_rate_hz / F0_MIN_HZ))
        self.sample_rate_hz = sample_rate_hz
        window_ac = np.fft.irfft(np.abs(np.fft.rfft(window, self.n_fft)) ** 2, self.n_fft)[: self.max_lag + 2]
        self.window_ac = (window_ac / window_ac[0]).astype(np.float32)


def _first_strong_peak(r: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.intp]:
    """Index (into ``r[:, 1:-1]``) of the first local maximum within OCTAVE_RATIO of the highest, per row."""
    core = r[:, 1:-1]
    is_peak = core >= r[:, :-2]
    is_peak &= core > r[:, 2:]
    highest = np.maximum.reduce(np.where(is_peak, core, -np.inf), axis=1, keepdims=True)  # np.max, no wrapper
    highest *= OCTAVE_RATIO  # in the array's dtype, as OCTAVE_RATIO * highest
    strong = core >= highest
    strong &= is_peak
    first = np.argmax(strong, axis=1)
    none = ~strong[np.arange(first.size), first]  # no strong peak (argmax gave 0): the highest value instead
    if none.any():
        first[none] = np.argmax(core[none], axis=1)
    return first


def frame_pitch(windowed: npt.NDArray[np.floating[Any]], tables: PitchTables) -> tuple[FloatArray, FloatArray]:
    """F0 in semitones above 100 Hz (0 where unvoiced) and voicing strength (0..1) per frame.

    ``windowed``: Hann-windowed frames, shape (n_frames, frame_samples), float32 (float64 works too).
    Returns two float32 arrays of shape (n_frames,).
    """
    spectrum = np.fft.rfft(np.asarray(windowed, dtype=np.float64), tables.n_fft, axis=1)
    return pitch_from_power(spectrum.real**2 + spectrum.imag**2, tables)


def pitch_from_power(power: npt.NDArray[np.floating[Any]], tables: PitchTables) -> tuple[FloatArray, FloatArray]:
    """:func:`frame_pitch` from the frames' power spectra of size ``tables.n_fft`` (n_frames, n_fft // 2 + 1)."""
    # a complex input: NumPy's irfft converts a real one through a large temporary (4x slower)
    return pitch_from_autocorrelation(np.fft.irfft(power.astype(np.complex128), tables.n_fft, axis=1), tables)


def pitch_from_autocorrelation(
    autocorrelation: npt.NDArray[np.floating[Any]], tables: PitchTables
) -> tuple[FloatArray, FloatArray]:
    """:func:`frame_pitch` from the frames' autocorrelations (inverse FFT of the power), (n_frames, >= max_lag + 2)."""
    ac = np.asarray(autocorrelation[:, : tables.max_lag + 2], dtype=np.float32)
    r = ac / (ac[:, :1] + np.float32(_EPS))
    r /= tables.window_ac  # in place: the same two divisions
    rows = np.arange(r.shape[0])
    lag = _first_strong_peak(r[:, tables.min_lag - 1 : tables.max_lag + 2]) + tables.min_lag
    left, centre, right = r[rows, lag - 1], r[rows, lag], r[rows, lag + 1]
    voicing = np.clip(centre, 0.0, 1.0)
    curvature = left - 2.0 * centre + right
    concave = curvature < 0
    shift = np.where(concave, 0.5 * (left - right) / np.where(concave, curvature, -1.0), 0.0)
    f0_hz = tables.sample_rate_hz / (lag + np.clip(shift, -0.5, 0.5))
    has_energy = ac[:, 0] > _EPS
    voiced = (voicing >= VOICING_THRESHOLD) & has_energy
    f0_st = np.where(voiced, 12.0 * np.log2(f0_hz / F0_REFERENCE_HZ), 0.0)
    return f0_st.astype(np.float32), np.where(has_energy, voicing, 0.0).astype(np.float32)
