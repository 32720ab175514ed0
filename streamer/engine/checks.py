"""The input check every audio block passes before analysis (the Session's ``feed`` runs it).

Float audio is expected in [-1, 1]. What the check does with each kind of garbage:

* **non-finite samples** (NaN, +inf, -inf; e.g. a damaged float WAV, an API caller's bad
  buffer, integer PCM read with ``--format f32le``): **refused** with
  :class:`~emostream.errors.AudioInputError` (exit 3), naming the first such sample
  (index since the start, its time in seconds, the channel) and the likely cause.
* **values far outside [-1, 1]** (a peak above :data:`MAX_PEAK`, i.e. > 24 dB over full
  scale: integer PCM piped as ``f32le`` or float audio scaled to the integer range):
  **refused** (exit 3) the same way; a confident reading of such input would be garbage.
  Peaks between 1 and :data:`MAX_PEAK` (a clipped or hot float file) are analysed as they are.
* **a constant signal** (the same non-zero value on a channel for :data:`CONSTANT_WARN_S`
  seconds or more: a DC level, a stuck device, a wrong format): **warned** once per
  channel (``warnings``; the live monitor shows it and prints it at the end, exit 0),
  since the reading of silence is simply "no speech" and refusing would end a live run.
  Digital silence (exact zeros) is normal and never flagged.
* **loud white noise** (RMS above :data:`NOISE_LEVEL_DBFS` with almost no correlation between
  neighbouring samples, for :data:`NOISE_WARN_S` seconds: random bytes, or raw PCM of another
  width read with the wrong ``--format``, e.g. float data as ``s16le``): **warned** once per
  channel like a constant signal. Speech, music and room noise are correlated from one
  sample to the next (lag-1 autocorrelation well above 0.3 at 8–48 kHz); white noise is not.

The check costs two reductions per block (min and max per channel, on a transposed copy), which also catch NaN
and infinities (they propagate through min/max), and two dot products per channel for the
noise test, so it runs on every block; the position of a bad sample is looked up only when
a block is refused.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from emostream.errors import AudioInputError

MAX_PEAK = 16.0  # |sample| above this (24 dB over full scale) is not float audio in [-1, 1]
CONSTANT_WARN_S = 1.0
NOISE_LEVEL_DBFS = -15.0  # RMS level above which uncorrelated audio is taken for garbage
NOISE_MAX_CORRELATION = 0.15  # |lag-1 autocorrelation| below this is white noise
NOISE_WARN_S = 1.0
FORMAT_HINT = (
    "float samples in [-1, 1] are expected; raw PCM read with the wrong --format "
    "(e.g. 16-bit PCM piped with --format f32le) looks like this: check --format (s16le for 16-bit PCM)"
)


class InputChecker:
    """Checks (n, channels) float32 blocks at ``rate_hz``; see the module docstring."""

    def __init__(self, rate_hz: int, channels: int) -> None:
        self.rate_hz = rate_hz
        self.channels = channels
        self.warnings: list[str] = []
        self.reset()

    def reset(self) -> None:
        """A new stream: forget constant runs and warnings."""
        self._constant_value = np.full(self.channels, np.nan, dtype=np.float32)
        self._constant_frames = np.zeros(self.channels, dtype=np.int64)
        self._warned = [False] * self.channels
        self._noise_frames = np.zeros(self.channels, dtype=np.int64)
        self._noise_warned = [False] * self.channels
        self.warnings.clear()

    def check(self, x: npt.NDArray[np.float32], first_frame: int) -> None:
        """Check block ``x`` whose first frame is frame ``first_frame`` of the stream; raise if refused."""
        if x.shape[0] == 0:
            return
        # one row per channel, contiguous: NumPy reduces an (n, 2) block along its first axis some 40 times
        # slower than a contiguous row (185 µs against 5 µs for 4000 frames)
        rows = np.ascontiguousarray(x.T)
        lo = rows.min(axis=1)
        hi = rows.max(axis=1)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            self._refuse_non_finite(x, first_frame)
        peak = float(max(-float(lo.min()), float(hi.max())))
        if peak > MAX_PEAK:
            self._refuse_peak(x, first_frame, peak)
        self._track_constant(lo, hi, x.shape[0])
        self._track_white_noise(rows)

    def _track_white_noise(self, rows: npt.NDArray[np.float32]) -> None:
        """Count consecutive frames of loud, uncorrelated audio per channel (``rows``: one each); warn once past
        NOISE_WARN_S."""
        n = rows.shape[1]
        if n < 2:
            return
        wide = rows.astype(np.float64)  # sums in float64; one cast instead of einsum's buffered casting (2x slower)
        energy = np.einsum("ij,ij->i", wide, wide)
        lag1 = np.einsum("ij,ij->i", wide[:, 1:], wide[:, :-1])
        loud = energy / n >= 10.0 ** (NOISE_LEVEL_DBFS / 10.0)
        white = loud & (np.abs(lag1) < NOISE_MAX_CORRELATION * np.maximum(energy, 1e-30))
        self._noise_frames = np.where(white, self._noise_frames + n, 0)
        for ch in np.flatnonzero(self._noise_frames >= NOISE_WARN_S * self.rate_hz):
            if not self._noise_warned[ch]:
                self._noise_warned[ch] = True
                level = 10.0 * np.log10(energy[ch] / n)
                self.warnings.append(
                    f"channel {ch} sounds like random data, not audio: white noise at {level:.0f} dBFS for "
                    f"{self._noise_frames[ch] / self.rate_hz:.1f} s or more (readings of it mean nothing); raw PCM "
                    "of another width read with the wrong --format (e.g. f32le data as s16le) or random bytes "
                    "look like this: check --format"
                )

    def _where(self, frame: int, channel: int) -> str:
        return f"sample {frame} ({frame / self.rate_hz:.3f} s), channel {channel}"

    def _refuse_non_finite(self, x: npt.NDArray[np.float32], first_frame: int) -> None:
        with np.errstate(all="ignore"):
            row, col = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        value = float(x[row, col])
        raise AudioInputError(
            f"the audio holds a non-finite sample ({value}) at {self._where(first_frame + row, col)}; "
            f"it cannot be analysed. {FORMAT_HINT}; a float file with NaN/inf samples is damaged"
        )

    def _refuse_peak(self, x: npt.NDArray[np.float32], first_frame: int, peak: float) -> None:
        with np.errstate(all="ignore"):
            row, col = (int(v) for v in np.argwhere(np.abs(x) > MAX_PEAK)[0])
        raise AudioInputError(
            f"the audio holds implausible sample values (peak {peak:.3g}, first at "
            f"{self._where(first_frame + row, col)}: {float(x[row, col]):.3g}); {FORMAT_HINT}"
        )

    def _track_constant(self, lo: npt.NDArray[np.float32], hi: npt.NDArray[np.float32], n: int) -> None:
        flat = (lo == hi) & (lo != 0)
        if not flat.any() and not self._constant_frames.any():
            return
        same = flat & (lo == self._constant_value)
        self._constant_frames = np.where(same, self._constant_frames + n, np.where(flat, n, 0))
        self._constant_value = np.where(flat, lo, np.nan).astype(np.float32)
        for ch in np.flatnonzero(self._constant_frames >= CONSTANT_WARN_S * self.rate_hz):
            if not self._warned[ch]:
                self._warned[ch] = True
                self.warnings.append(
                    f"channel {ch} holds a constant value ({float(lo[ch]):.4g}) for "
                    f"{self._constant_frames[ch] / self.rate_hz:.1f} s or more: a DC level or a stuck "
                    f"device, not audio; {FORMAT_HINT}"
                )
