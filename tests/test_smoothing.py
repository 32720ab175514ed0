"""Smoother: synthetic score sequences with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from emostream.config import SmoothingSettings
from emostream.engine.smoothing import Smoother

LABELS = ("a", "b", "c", "d")


def onehot(i: int) -> np.ndarray:
    p = np.full(len(LABELS), 0.0)
    p[i] = 1.0
    return p


def labels_of(smoother: Smoother, seq: list[np.ndarray | None]) -> list[str | None]:
    return [smoother.process(p)[1] for p in seq]


@pytest.mark.parametrize(("tau", "hysteresis"), [(2.0, 0.1), (1.0, 0.3), (4.0, 0.0)])
def test_ema_switch_happens_exactly_after_the_expected_number_of_hops(tau: float, hysteresis: float) -> None:
    cfg = SmoothingSettings(method="ema", time_constant_s=tau, hysteresis=hysteresis, min_dwell_s=0.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    alpha = 1 - math.exp(-0.5 / tau)
    # after k hops of b: s_a = (1-alpha)^k, s_b = 1 - (1-alpha)^k; switch when s_b - s_a > hysteresis
    expected_k = next(k for k in range(1, 100) if 1 - 2 * (1 - alpha) ** k > hysteresis)
    assert labels_of(smoother, [onehot(0)] * 3) == ["a"] * 3
    got = labels_of(smoother, [onehot(1)] * 40)
    assert got.index("b") + 1 == expected_k
    assert got[expected_k - 1 :] == ["b"] * (40 - expected_k + 1)
    smoothed, _, confidence = smoother.process(onehot(1))
    assert smoothed is not None and confidence == pytest.approx(float(smoothed[1]))


def test_window_average_switches_when_the_window_majority_moves() -> None:
    cfg = SmoothingSettings(method="window", window_s=2.0, hysteresis=0.1, min_dwell_s=0.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)  # 4 hops in the window
    labels_of(smoother, [onehot(0)] * 4)
    # after k hops of b the mean is b = k/4, a = (4-k)/4: b - a > 0.1 first at k = 3
    assert labels_of(smoother, [onehot(1)] * 4) == ["a", "a", "b", "b"]
    smoothed, _, _ = smoother.process(onehot(1))
    assert smoothed is not None and smoothed[1] == pytest.approx(1.0)


def test_min_dwell_holds_the_label() -> None:
    cfg = SmoothingSettings(time_constant_s=0.0, hysteresis=0.0, min_dwell_s=2.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    assert labels_of(smoother, [onehot(0), onehot(1), onehot(1), onehot(1), onehot(1), onehot(2)]) == [
        "a",
        "a",
        "a",
        "a",
        "b",
        "b",
    ]


def test_alternating_noise_does_not_flicker_but_would_without_smoothing() -> None:
    rng = np.random.default_rng(0)
    seq = []
    for i in range(60):
        p = np.array([0.4, 0.4, 0.1, 0.1]) + rng.normal(0, 0.01, 4)
        p[i % 2] += 0.08
        seq.append(p / p.sum())
    steady = Smoother(LABELS, SmoothingSettings(), hop_s=0.5)
    shown = labels_of(steady, seq)
    assert len(set(shown)) == 1
    raw = Smoother(LABELS, SmoothingSettings(time_constant_s=0.0, hysteresis=0.0, min_dwell_s=0.0), hop_s=0.5)
    raw_shown = labels_of(raw, seq)
    assert sum(x != y for x, y in itertools.pairwise(raw_shown)) > 50


def test_no_speech_hops_leave_the_reading_alone_until_the_silence_reset() -> None:
    cfg = SmoothingSettings(time_constant_s=1.0, silence_reset_s=2.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    first = smoother.process(onehot(2))
    for _ in range(3):
        held = smoother.process(None)
        assert held[1] == "c" and held[0] is not None and first[0] is not None
        np.testing.assert_array_equal(held[0], first[0])
    assert smoother.process(None) == (None, None, None)  # 2 s of silence: cleared
    assert smoother.process(onehot(3))[1] == "d"  # a fresh start, no dwell/hysteresis to overcome


def test_min_confidence_hides_an_unsure_reading() -> None:
    cfg = SmoothingSettings(time_constant_s=0.0, min_confidence=0.5)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    smoothed, label, confidence = smoother.process(np.array([0.3, 0.3, 0.2, 0.2]))
    assert smoothed is not None and label is None and confidence is None
    assert smoother.process(np.array([0.1, 0.7, 0.1, 0.1]))[1:] == ("b", pytest.approx(0.7))


def test_reset_forgets_everything_and_bad_shapes_are_refused() -> None:
    smoother = Smoother(LABELS, SmoothingSettings(), hop_s=0.5)
    smoother.process(onehot(0))
    smoother.reset()
    assert smoother.process(None) == (None, None, None)
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        smoother.process(np.ones(3))
