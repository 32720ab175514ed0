"""Turning per-window probabilities into a steady reading: averaging plus hysteresis.

One call of :meth:`Smoother.process` per analysis hop (every ``hop_s`` seconds of audio),
with the hop's end time ``t_s`` (seconds since the stream started): durations (dwell,
silence) are differences of these timestamps, never sums of hop lengths.

* speech hop (``probs`` given): the running probabilities move towards ``probs`` —
  ``"ema"``: ``s = s + alpha * (p - s)`` with ``alpha = 1 - exp(-hop_s / time_constant_s)``
  (the first speech hop sets ``s = p``); ``"window"``: ``s`` = mean of the last
  ``round(window_s / hop_s)`` (at least 1) speech hops.
* no-speech hop (``probs`` None): the reading stays as it is (silence is no evidence about
  emotion); after ``silence_reset_s`` seconds of continuous no-speech (if > 0) it is cleared.
* label with hysteresis: the first label is the top class; afterwards the shown label
  changes only when another class's smoothed probability exceeds the current label's by
  more than ``hysteresis`` and the current label has been shown for at least
  ``min_dwell_s`` seconds (counted in audio time, silence included).
* a label whose smoothed probability is below ``min_confidence`` is not shown (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emostream.errors import InvalidSettingError

SMOOTHING_METHODS: tuple[str, ...] = ("ema", "window")
FloatArray = npt.NDArray[np.float32]
SmoothedReading = tuple[FloatArray | None, str | None, float | None]


@dataclass(frozen=True, kw_only=True)
class SmoothingConfig:
    """[smoothing]: how per-window scores become the shown reading (rules in the module docstring).

    ``method`` "ema" or "window"; ``time_constant_s`` of the ema; ``window_s`` of the moving
    mean; ``hysteresis`` probability margin another label needs to take over;
    ``min_dwell_s`` seconds a label stays shown at least; ``min_confidence`` below which no
    label is shown; ``silence_reset_s`` seconds of no speech after which the reading is
    cleared (0 = never).
    """

    method: str = "ema"
    time_constant_s: float = 1.0
    window_s: float = 4.0
    hysteresis: float = 0.2
    min_dwell_s: float = 0.0
    min_confidence: float = 0.0
    silence_reset_s: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in SMOOTHING_METHODS:
            raise InvalidSettingError("method", f"is {self.method!r}; expected one of {', '.join(SMOOTHING_METHODS)}")
        for key in ("time_constant_s", "window_s", "min_dwell_s"):
            if getattr(self, key) < 0:
                raise InvalidSettingError(key, f"is {getattr(self, key)}; expected 0 s or more")
        if not 0.0 <= self.hysteresis < 1.0:
            raise InvalidSettingError("hysteresis", f"is {self.hysteresis}; expected a probability margin from 0 to <1")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise InvalidSettingError("min_confidence", f"is {self.min_confidence}; expected 0.0 to 1.0")
        if self.silence_reset_s < 0:
            raise InvalidSettingError(
                "silence_reset_s", f"is {self.silence_reset_s}; expected 0 (never) or more seconds"
            )


class Smoother:
    """Running emotion reading of one channel; see the module docstring for the rules."""

    def __init__(self, labels: Sequence[str], cfg: SmoothingConfig, hop_s: float = 0.5) -> None:
        if hop_s <= 0:
            raise ValueError(f"hop_s is {hop_s}; expected a positive hop in seconds")
        self.labels = tuple(labels)
        self.cfg = cfg
        self.hop_s = hop_s
        tau = cfg.time_constant_s
        self.alpha = 1.0 if tau == 0 else 1.0 - math.exp(-hop_s / tau)
        self.window_hops = max(1, round(cfg.window_s / hop_s))
        self._history = np.zeros((self.window_hops, len(self.labels)), dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget the reading, the shown label and the history."""
        self._smoothed: npt.NDArray[np.float64] | None = None
        self._history_count = 0
        self._history_pos = 0
        self._current: int | None = None
        self._shown_since_s = 0.0  # when the current label was first shown
        self._last_speech_s: float | None = None

    def _reading(self) -> SmoothedReading:
        if self._smoothed is None or self._current is None:
            smoothed = None if self._smoothed is None else self._smoothed.astype(np.float32)
            return smoothed, None, None
        confidence = float(self._smoothed[self._current])
        if confidence < self.cfg.min_confidence:
            return self._smoothed.astype(np.float32), None, None
        return self._smoothed.astype(np.float32), self.labels[self._current], confidence

    def process(self, probs: npt.ArrayLike | None, t_s: float) -> SmoothedReading:
        """One hop ending at ``t_s`` s: ``probs`` (n_labels,) for a speech window or None.

        Returns (smoothed probabilities or None, shown label or None, its smoothed probability or None).
        """
        if probs is None:
            reset_after = self.cfg.silence_reset_s
            silent_s = None if self._last_speech_s is None else t_s - self._last_speech_s
            if reset_after > 0 and silent_s is not None and silent_s >= reset_after - 1e-9:
                self.reset()
            return self._reading()
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.shape != (len(self.labels),):
            raise ValueError(f"probabilities of shape {p.shape}; expected ({len(self.labels)},)")
        self._last_speech_s = t_s
        self._update(p)
        self._choose_label(t_s)
        return self._reading()

    def _update(self, p: npt.NDArray[np.float64]) -> None:
        if self.cfg.method == "window":
            self._history[self._history_pos] = p
            self._history_pos = (self._history_pos + 1) % self.window_hops
            self._history_count = min(self._history_count + 1, self.window_hops)
            self._smoothed = self._history[: self._history_count].mean(axis=0)
        elif self._smoothed is None:
            self._smoothed = p.copy()
        else:
            self._smoothed = self._smoothed + self.alpha * (p - self._smoothed)

    def _choose_label(self, t_s: float) -> None:
        if self._smoothed is None:
            return
        top = int(np.argmax(self._smoothed))
        if self._current is None:
            if self._smoothed[top] >= self.cfg.min_confidence:
                self._current, self._shown_since_s = top, t_s
            return
        if top == self._current:
            return
        margin = self._smoothed[top] - self._smoothed[self._current]
        if margin > self.cfg.hysteresis and t_s - self._shown_since_s >= self.cfg.min_dwell_s - 1e-9:
            self._current, self._shown_since_s = top, t_s
