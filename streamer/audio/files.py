"""Reading audio files and converting sample rates (whole-signal; streams use resample.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from emostream.errors import AudioInputError

FloatArray = npt.NDArray[np.float32]


def read_audio(path: str | Path) -> tuple[FloatArray, int]:
    """Read a WAV/FLAC/OGG file as float32 in [-1, 1], shape (n_samples, n_channels), and its rate in Hz.

    Raises :class:`AudioInputError` for a missing, unreadable, corrupt or empty file.
    """
    file = Path(path)
    if not file.is_file():
        raise AudioInputError(f"{file}: no such file; check the path")
    try:
        data, rate = sf.read(str(file), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioInputError(
            f"{file}: cannot be decoded as audio ({exc}); expected a WAV, FLAC or OGG file. "
            "Convert it, e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`"
        ) from exc
    if data.shape[0] == 0:
        raise AudioInputError(f"{file}: contains no samples; record or pick a file with audio in it")
    return np.ascontiguousarray(data), int(rate)


def to_mono(samples: FloatArray) -> FloatArray:
    """Average the channels of (n_samples, n_channels) audio; shape (n_samples,)."""
    if samples.ndim == 1:
        return samples
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))


def resample(samples: FloatArray, rate_in_hz: int, rate_out_hz: int) -> FloatArray:
    """Resample a whole signal (1-D or (n, channels)) with soxr's high-quality filter, float32."""
    if rate_in_hz == rate_out_hz:
        return samples
    return np.asarray(soxr.resample(samples, rate_in_hz, rate_out_hz, quality="HQ"), dtype=np.float32)


def load_mono(path: str | Path, rate_hz: int) -> FloatArray:
    """Read a file, mix it to mono and bring it to ``rate_hz``; float32 shape (n_samples,)."""
    samples, rate = read_audio(path)
    return resample(to_mono(samples), rate, rate_hz)
