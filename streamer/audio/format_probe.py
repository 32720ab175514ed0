"""Does raw PCM look like the ``--format`` it was given? A check on the first seconds of stdin.

Headerless audio carries no format, and most wrong guesses still decode to numbers: 16-bit
PCM read as ``s32le`` is the audio at half the rate, read as ``mulaw`` it is loud noise at
twice the duration. Audio, unlike those misreadings, is smooth from one sample to the next
(speech at 8 or 16 kHz: lag-1 correlation 0.65-0.97 even with pauses), so each probe
decodes a stretch of the bytes as every format and compares:

* **16-bit PCM read as a 32-bit format**: the two halves of each 32-bit word are two
  neighbouring samples, so they correlate (0.65-0.97 on speech); in real 32-bit audio the
  low half is the fine detail of the high one (|correlation| < 0.05), and in 16-bit audio
  padded to 32 bits it is zero.
* **other widths** (16-bit PCM read as ``mulaw``/``alaw``, G.711 read as ``s16le``, ...):
  another format decodes the same bytes to audio clearly smoother than the given one
  (by :data:`MARGIN` or more; measured on RAVDESS and nEMO speech at 8 and 16 kHz, the true
  format led the wrong one by 0.25 or more).

Stretches that no format reads as audible audio (silence, faint noise) decide nothing; the
next one is looked at.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from emostream.audio.codecs import RAW_FORMATS, RawFormat
from emostream.engine.checks import MAX_PEAK

MIN_SMOOTHNESS = 0.5  # lag-1 correlation the format read as audio must reach
MARGIN = 0.2  # by how much it must beat the given format
MIN_HALVES_CORRELATION = 0.4  # 32-bit words whose halves correlate this much are two 16-bit samples
MIN_LEVEL_DBFS = -45.0  # a stretch quieter than this (read in its best format) decides nothing
WIDTH_PAIRS = ("s32le", "f32le")


def smoothness(x: npt.NDArray[np.float32]) -> float:
    """Lag-1 autocorrelation of ``x`` (mean removed); -1.0 when it is silent, non-finite or far outside [-1, 1]."""
    with np.errstate(all="ignore"):
        if x.size < 2 or not np.isfinite(x).all() or float(np.abs(x).max()) > MAX_PEAK:
            return -1.0
        y = x.astype(np.float64) - float(np.mean(x, dtype=np.float64))
        energy = float(np.dot(y, y))
        return float(np.dot(y[1:], y[:-1]) / energy) if energy > 0 else -1.0


def _level_dbfs(x: npt.NDArray[np.float32]) -> float:
    with np.errstate(all="ignore"):
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 and np.isfinite(rms) else -np.inf


def _halves_correlation(data: bytes) -> float:
    """Correlation of the low and high 16-bit halves of each 32-bit little-endian word (nan if either is constant)."""
    words = np.frombuffer(data[: len(data) // 4 * 4], dtype="<i2").astype(np.float64)
    low, high = words[0::2], words[1::2]
    if low.size < 2 or low.std() == 0 or high.std() == 0:
        return float("nan")
    return float(np.corrcoef(low, high)[0, 1])


def _decode(fmt: RawFormat, data: bytes, channels: int) -> npt.NDArray[np.float32]:
    """The first channel of ``data`` read as ``fmt`` (whole frames only)."""
    frame = fmt.bytes_per_sample * channels
    usable = data[: len(data) - len(data) % frame]
    with np.errstate(all="ignore"):
        return fmt.decode(usable).reshape(-1, channels)[:, 0]


def format_mismatch(data: bytes, declared: str, channels: int = 1) -> tuple[bool, str | None]:
    """Compare a stretch of raw bytes with the ``declared`` format (a :data:`RAW_FORMATS` name).

    Returns (decided, message): decided is False when the stretch is too quiet to tell;
    message names the likely format when the bytes are not ``declared`` audio, else None.
    """
    given = RAW_FORMATS[declared]
    scores = {name: smoothness(_decode(fmt, data, channels)) for name, fmt in RAW_FORMATS.items()}
    best = max(scores, key=lambda name: scores[name])
    quiet = min(_level_dbfs(_decode(RAW_FORMATS[name], data, channels)) for name in {best, "s16le"})
    if scores[best] < MIN_SMOOTHNESS or quiet < MIN_LEVEL_DBFS:
        # no reading of the bytes is audible audio (random data), or they are quiet 16-bit PCM (which other
        # formats read as a loud, smooth level): too little to tell
        return False, None
    pairs = channels == 1 and _halves_correlation(data) >= MIN_HALVES_CORRELATION  # 32-bit words of 16-bit pairs
    if declared in WIDTH_PAIRS and pairs:
        best = "s16le"
    elif best == declared or scores[best] - scores[declared] < MARGIN or (declared == "s16le" and pairs):
        return True, None
    guess = RAW_FORMATS[best]
    ratio = guess.bytes_per_sample / given.bytes_per_sample  # how much longer it lasts read as `declared`
    length = (
        f"it lasts {ratio:g} times as long as it should"
        if ratio > 1
        else f"it lasts 1/{1 / ratio:g} of its real duration"
        if ratio < 1
        else "it is distorted"
    )
    return True, (
        f"stdin does not look like --format {declared} ({given.description}) but like {best} "
        f"({guess.description}): read as {declared}, {length} and its readings mean nothing. Check --format "
        f"(e.g. --format {best}) and --rate"
    )
