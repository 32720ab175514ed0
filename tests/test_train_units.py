"""Augmentation, clip scoring, metrics and splits with known answers (no TensorFlow needed)."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.errors import ConfigError
from emostream.train.augment import (
    AugmentConfig,
    add_noise,
    apply_gain,
    augment,
    augment_config_from_dict,
    clip_rng,
    pink_noise,
    pitch_shift,
    snr_db,
    telephone,
    time_stretch,
    white_noise,
)
from emostream.train.dataset import clip_scores
from emostream.train.evaluate import metrics

RATE = 16000


def _tone(freq: float, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * RATE / x.size)


@pytest.mark.parametrize("target", [5.0, 15.0, 30.0])
def test_noise_hits_the_requested_snr(target):
    rng = np.random.default_rng(0)
    clean = _tone(300)
    for noise in (white_noise(clean.size, rng), pink_noise(clean.size, rng)):
        assert snr_db(clean, add_noise(clean, target, noise)) == pytest.approx(target, abs=0.05)


def test_pink_noise_has_more_low_than_high_power():
    x = pink_noise(1 << 16, np.random.default_rng(1))
    power = np.abs(np.fft.rfft(x)) ** 2
    low, high = power[10:1000].mean(), power[-1000:].mean()
    assert low > 30 * high


def test_gain():
    x = _tone(200, amp=0.1)
    assert np.max(np.abs(apply_gain(x, 6.0))) == pytest.approx(0.1 * 10 ** (6 / 20), rel=1e-3)
    assert np.max(np.abs(apply_gain(x, 40.0))) <= 1.0


def test_time_stretch_changes_length_not_pitch():
    x = _tone(440, seconds=2.0)
    y = time_stretch(x, 1.25)
    assert y.size == pytest.approx(x.size / 1.25, rel=0.03)
    assert _peak_hz(y) == pytest.approx(440, abs=8)


def test_pitch_shift_moves_the_frequency_and_keeps_the_length():
    x = _tone(440, seconds=2.0)
    y = pitch_shift(x, RATE, 12.0)
    assert y.size == x.size
    assert _peak_hz(y[: int(1.5 * RATE)]) == pytest.approx(880, abs=15)


def test_telephone_removes_out_of_band_energy():
    low, mid, high = _tone(100), _tone(1000), _tone(6000)
    for tone, kept in ((low, False), (mid, True), (high, False)):
        out = telephone(tone, RATE)
        ratio = np.std(out[2000:-2000]) / np.std(tone)
        assert (ratio > 0.8) if kept else (ratio < 0.2), ratio


def test_augment_is_seeded_and_reproducible():
    cfg = AugmentConfig(copies=2, seed=5, noise_prob=1.0, tempo_prob=1.0, pitch_prob=1.0, telephone_prob=1.0)
    x = _tone(300, seconds=1.5)
    a = augment(x, RATE, cfg, clip_rng(cfg, "03-01-01-01-01-01-01.flac", 1))
    b = augment(x, RATE, cfg, clip_rng(cfg, "03-01-01-01-01-01-01.flac", 1))
    c = augment(x, RATE, cfg, clip_rng(cfg, "03-01-01-01-01-01-01.flac", 2))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and not np.array_equal(a[: c.size], c[: a.size])
    assert augment_config_from_dict(cfg.to_dict()) == cfg


def test_augment_config_checks():
    with pytest.raises(ConfigError):
        AugmentConfig(copies=-1)
    with pytest.raises(ConfigError):
        AugmentConfig(noise_prob=1.5)


def test_clip_scores_use_speech_windows_and_fall_back():
    probs = np.array([[1, 0], [0, 1], [0, 1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    speech = np.array([True, False, False, False, False])
    index = np.array([0, 0, 0, 1, 1], dtype=np.int32)
    out = clip_scores(probs, speech, index, 3)
    np.testing.assert_allclose(out[0], [1, 0])  # only the speech window counts
    np.testing.assert_allclose(out[1], [0.4, 0.6])  # no speech window: all windows
    assert np.isnan(out[2]).all()  # no windows at all


def test_metrics_known_answer():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2], dtype=np.int32)
    y_pred = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    m = metrics(y_true, y_pred)
    assert m["wa"] == pytest.approx(6 / 8)
    assert m["ua"] == pytest.approx((0.75 + 1.0 + 0.5) / 3)
    f1_0 = 2 * 0.75 * 0.75 / 1.5
    f1_1 = 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)
    f1_2 = 2 * 1.0 * 0.5 / 1.5
    assert m["macro_f1"] == pytest.approx((f1_0 + f1_1 + f1_2) / 3)
