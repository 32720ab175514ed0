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
    babble,
    babble_picks,
    clip_rng,
    pink_noise,
    pitch_shift,
    reverberate,
    rir_bank,
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


def test_augment_with_rooms_and_babble_is_seeded_and_reproducible():
    pytest.importorskip("pyroomacoustics")
    cfg = AugmentConfig(copies=1, seed=3, noise_prob=1.0, babble_share=1.0, reverb_prob=1.0, rir_bank=2)
    x = _tone(300, seconds=1.0)
    talkers = [_tone(150, seconds=0.7), _tone(700, seconds=1.3)]
    a = augment(x, RATE, cfg, clip_rng(cfg, "a.flac", 1), talkers)
    b = augment(x, RATE, cfg, clip_rng(cfg, "a.flac", 1), talkers)
    np.testing.assert_array_equal(a, b)
    spectrum = np.abs(np.fft.rfft(a))
    # the babble's voices (150 and 700 Hz) are in the copy, around the tone
    assert spectrum[150] > 20 * np.median(spectrum) and spectrum[700] > 20 * np.median(spectrum)


def test_babble_is_unit_rms_and_holds_every_talker():
    rng = np.random.default_rng(0)
    mix = babble([_tone(200, seconds=0.5, amp=0.01), _tone(1200, seconds=2.0, amp=0.5)], 3 * RATE, rng)
    assert mix.size == 3 * RATE and np.sqrt(np.mean(mix**2)) == pytest.approx(1.0, rel=1e-3)
    spectrum = np.abs(np.fft.rfft(mix))
    # both talkers at the same level although one was 34 dB quieter
    assert spectrum[600] == pytest.approx(spectrum[3600], rel=0.1)
    with pytest.raises(ConfigError):
        babble([], 10, rng)


def test_babble_picks_other_speakers_each_once_and_seeded():
    speakers = ["a", "a", "b", "c", "c", "d"]
    cfg = AugmentConfig(copies=2, seed=1, babble_talkers=(2, 3))
    picks = babble_picks(speakers, cfg)
    assert picks == babble_picks(speakers, cfg)
    for i, per_copy in enumerate(picks):
        assert len(per_copy) == 2
        for chosen in per_copy:
            voices = [speakers[j] for j in chosen]
            assert 2 <= len(chosen) <= 3 and speakers[i] not in voices and len(set(voices)) == len(voices)
    assert babble_picks(["a", "a"], cfg) == [[[], []], [[], []]]  # nobody else to babble


def test_rooms_reverberate_with_their_time_and_keep_the_level():
    pytest.importorskip("pyroomacoustics")
    short, long_ = rir_bank(1, 3, (0.2, 0.25), RATE), rir_bank(1, 3, (0.8, 0.9), RATE)
    assert rir_bank(1, 3, (0.2, 0.25), RATE) is short  # one bank per process and setting
    for rooms in (short, long_):
        assert all(r.dtype == np.float32 and np.argmax(np.abs(r)) == 32 for r in rooms)

    def tail_energy(rir: np.ndarray) -> float:  # share of the energy later than 100 ms after the direct path
        e = rir.astype(np.float64) ** 2
        return float(e[32 + RATE // 10 :].sum() / e.sum())

    assert min(tail_energy(r) for r in long_) > max(tail_energy(r) for r in short)
    x = _tone(500, seconds=1.0)
    wet = reverberate(x, long_[0])
    assert wet.size == x.size and np.std(wet) == pytest.approx(np.std(x), rel=0.02)


def test_augment_config_checks():
    with pytest.raises(ConfigError):
        AugmentConfig(copies=-1)
    with pytest.raises(ConfigError):
        AugmentConfig(noise_prob=1.5)
    with pytest.raises(ConfigError):
        AugmentConfig(rt60_s=(0.5, 0.2))
    with pytest.raises(ConfigError):
        AugmentConfig(babble_talkers=(0, 3))
    assert AugmentConfig(seed=1).key_dict() == AugmentConfig(seed=2).key_dict() == {"copies": 0}
    assert AugmentConfig(copies=1, seed=1).key_dict() != AugmentConfig(copies=1, seed=2).key_dict()


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
