"""Smoother: synthetic score sequences with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from emostream.engine.smoothing import Smoother, SmoothingConfig

LABELS = ("a", "b", "c", "d")


def onehot(i: int) -> np.ndarray:
    p = np.full(len(LABELS), 0.0)
    p[i] = 1.0
    return p


_hops_fed: dict[int, int] = {}


def step(smoother: Smoother, p: np.ndarray | None) -> tuple:
    """Feed one hop, ending one hop later than the previous one fed to this smoother."""
    n = _hops_fed.get(id(smoother), 0) + 1
    _hops_fed[id(smoother)] = n
    return smoother.process(p, n * smoother.hop_s)


def labels_of(smoother: Smoother, seq: list[np.ndarray | None]) -> list[str | None]:
    return [step(smoother, p)[1] for p in seq]


@pytest.mark.parametrize(("tau", "hysteresis"), [(2.0, 0.1), (1.0, 0.3), (4.0, 0.0)])
def test_ema_switch_happens_exactly_after_the_expected_number_of_hops(tau: float, hysteresis: float) -> None:
    cfg = SmoothingConfig(method="ema", time_constant_s=tau, hysteresis=hysteresis, min_dwell_s=0.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    alpha = 1 - math.exp(-0.5 / tau)
    # after k hops of b: s_a = (1-alpha)^k, s_b = 1 - (1-alpha)^k; switch when s_b - s_a > hysteresis
    expected_k = next(k for k in range(1, 100) if 1 - 2 * (1 - alpha) ** k > hysteresis)
    assert labels_of(smoother, [onehot(0)] * 3) == ["a"] * 3
    got = labels_of(smoother, [onehot(1)] * 40)
    assert got.index("b") + 1 == expected_k
    assert got[expected_k - 1 :] == ["b"] * (40 - expected_k + 1)
    smoothed, _, confidence = step(smoother, onehot(1))
    assert smoothed is not None and confidence == pytest.approx(float(smoothed[1]))


def test_window_average_switches_when_the_window_majority_moves() -> None:
    cfg = SmoothingConfig(method="window", window_s=2.0, hysteresis=0.1, min_dwell_s=0.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)  # 4 hops in the window
    labels_of(smoother, [onehot(0)] * 4)
    # after k hops of b the mean is b = k/4, a = (4-k)/4: b - a > 0.1 first at k = 3
    assert labels_of(smoother, [onehot(1)] * 4) == ["a", "a", "b", "b"]
    smoothed, _, _ = step(smoother, onehot(1))
    assert smoothed is not None and smoothed[1] == pytest.approx(1.0)


def test_min_dwell_holds_the_label() -> None:
    cfg = SmoothingConfig(time_constant_s=0.0, hysteresis=0.0, min_dwell_s=2.0)
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
    steady = Smoother(LABELS, SmoothingConfig(), hop_s=0.5)
    shown = labels_of(steady, seq)
    assert len(set(shown)) == 1
    raw = Smoother(LABELS, SmoothingConfig(time_constant_s=0.0, hysteresis=0.0, min_dwell_s=0.0), hop_s=0.5)
    raw_shown = labels_of(raw, seq)
    assert sum(x != y for x, y in itertools.pairwise(raw_shown)) > 50


def test_no_speech_hops_leave_the_reading_alone_until_the_silence_reset() -> None:
    cfg = SmoothingConfig(time_constant_s=1.0, silence_reset_s=2.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    first = step(smoother, onehot(2))
    for _ in range(3):
        held = step(smoother, None)
        assert held[1] == "c" and held[0] is not None and first[0] is not None
        np.testing.assert_array_equal(held[0], first[0])
    assert step(smoother, None) == (None, None, None)  # 2 s of silence: cleared
    assert step(smoother, onehot(3))[1] == "d"  # a fresh start, no dwell/hysteresis to overcome


def test_min_confidence_hides_an_unsure_reading() -> None:
    cfg = SmoothingConfig(time_constant_s=0.0, min_confidence=0.5)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    smoothed, label, confidence = step(smoother, np.array([0.3, 0.3, 0.2, 0.2]))
    assert smoothed is not None and label is None and confidence is None
    assert step(smoother, np.array([0.1, 0.7, 0.1, 0.1]))[1:] == ("b", pytest.approx(0.7))


def test_reset_forgets_everything_and_bad_shapes_are_refused() -> None:
    smoother = Smoother(LABELS, SmoothingConfig(), hop_s=0.5)
    step(smoother, onehot(0))
    smoother.reset()
    assert step(smoother, None) == (None, None, None)
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        step(smoother, np.ones(3))


def test_dwell_and_silence_are_measured_between_timestamps_not_counted_in_hops() -> None:
    cfg = SmoothingConfig(time_constant_s=0.0, hysteresis=0.0, min_dwell_s=2.0, silence_reset_s=3.0)
    smoother = Smoother(LABELS, cfg, hop_s=0.5)
    assert smoother.process(onehot(0), 0.5)[1] == "a"
    assert smoother.process(onehot(1), 1.0)[1] == "a"  # shown 0.5 s: held
    assert smoother.process(onehot(1), 2.5)[1] == "b"  # hops went missing, yet 2 s have passed
    assert smoother.process(None, 5.0)[1] == "b"  # 2.5 s since the last speech hop
    assert smoother.process(None, 5.5) == (None, None, None)  # 3 s: cleared
