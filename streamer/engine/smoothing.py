"""Turning per-window probabilities into a steady reading: averaging plus hysteresis.

One call of :meth:`Smoother.process` per analysis hop (every ``hop_s`` seconds of audio):

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

import numpy as np
import numpy.typing as npt

from emostream.config import SmoothingSettings

FloatArray = npt.NDArray[np.float32]
SmoothedReading = tuple[FloatArray | None, str | None, float | None]


class Smoother:
    """Running emotion reading of one channel; see the module docstring for the rules."""

    def __init__(self, labels: Sequence[str], cfg: SmoothingSettings, hop_s: float = 0.5) -> None:
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
        self._shown_for_s = 0.0
        self._silence_s = 0.0

    def _reading(self) -> SmoothedReading:
        if self._smoothed is None or self._current is None:
            smoothed = None if self._smoothed is None else self._smoothed.astype(np.float32)
            return smoothed, None, None
        confidence = float(self._smoothed[self._current])
        if confidence < self.cfg.min_confidence:
            return self._smoothed.astype(np.float32), None, None
        return self._smoothed.astype(np.float32), self.labels[self._current], confidence

    def process(self, probs: npt.ArrayLike | None) -> SmoothedReading:
        """One hop: ``probs`` (n_labels,) for a speech window or None; returns (smoothed, label, confidence)."""
        self._shown_for_s += self.hop_s
        if probs is None:
            self._silence_s += self.hop_s
            reset_after = self.cfg.silence_reset_s
            if reset_after > 0 and self._silence_s >= reset_after - 1e-9 and self._smoothed is not None:
                self.reset()
            return self._reading()
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.shape != (len(self.labels),):
            raise ValueError(f"probabilities of shape {p.shape}; expected ({len(self.labels)},)")
        self._silence_s = 0.0
        self._update(p)
        self._choose_label()
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

    def _choose_label(self) -> None:
        if self._smoothed is None:
            return
        top = int(np.argmax(self._smoothed))
        if self._current is None:
            if self._smoothed[top] >= self.cfg.min_confidence:
                self._current, self._shown_for_s = top, 0.0
            return
        if top == self._current:
            return
        margin = self._smoothed[top] - self._smoothed[self._current]
        if margin > self.cfg.hysteresis and self._shown_for_s >= self.cfg.min_dwell_s - 1e-9:
            self._current, self._shown_for_s = top, 0.0
