"""The shared feature front-end: known answers on synthetic signals and stream/batch parity."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.errors import ConfigError
from emostream.frontend.features import (
    FeatureConfig,
    FrameFeaturizer,
    frame_feature_names,
    frame_features,
    summary_feature_names,
    summary_vector,
)

SR = 16000


def tone(freq_hz: float, seconds: float = 1.0, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def column(cfg: FeatureConfig, frames: np.ndarray, name: str) -> np.ndarray:
    return frames[:, frame_feature_names(cfg).index(name)]


def test_summary_set_has_45_named_frame_features_and_90_summary_columns() -> None:
    cfg = FeatureConfig()
    assert len(frame_feature_names(cfg)) == 45
    names = summary_feature_names(cfg)
    assert len(names) == 90 and len(set(names)) == 90
    assert names[0] == "mfcc_00_mean" and names[-1] == "contrast_6_std"


def test_pure_tone_has_known_centroid_rolloff_zcr_rms_and_chroma() -> None:
    cfg = FeatureConfig()
    frames = frame_features(tone(1000.0), cfg)
    bin_hz = SR / cfg.n_fft
    assert np.all(np.abs(column(cfg, frames, "centroid_hz") - 1000.0) < 2 * bin_hz)
    assert np.all(np.abs(column(cfg, frames, "rolloff_hz") - 1000.0) < 2 * bin_hz)
    # two zero crossings per period of 16 samples
    assert np.allclose(column(cfg, frames, "zcr"), 2 / 16, atol=0.01)
    # a full-scale sine has RMS 1/sqrt(2): -3.01 dBFS
    assert np.allclose(column(cfg, frames, "rms_db"), -3.0103, atol=0.05)
    # 1000 Hz lies between B5 (987.8 Hz) and C6: B is the strongest chroma bin
    chroma = frames[:, frame_feature_names(cfg).index("chroma_c") :][:, :12]
    assert np.all(np.argmax(chroma, axis=1) == 11)


def test_silence_has_floor_rms_and_no_crossings() -> None:
    cfg = FeatureConfig()
    frames = frame_features(np.zeros(SR, dtype=np.float32), cfg)
    assert np.allclose(column(cfg, frames, "rms_db"), -100.0)
    assert np.all(column(cfg, frames, "zcr") == 0)
    assert np.all(np.isfinite(frames))


def test_noise_is_flat_and_a_tone_is_not() -> None:
    cfg = FeatureConfig()
    noise = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    assert column(cfg, frame_features(noise, cfg), "flatness").mean() > 0.4
    assert column(cfg, frame_features(tone(440.0), cfg), "flatness").mean() < 0.01


def test_frame_count_and_frame_grid() -> None:
    cfg = FeatureConfig()
    n = 5000
    frames = frame_features(np.zeros(n, dtype=np.float32), cfg)
    assert frames.shape == (1 + (n - cfg.frame_samples) // cfg.hop_samples, 45)
    assert frame_features(np.zeros(cfg.frame_samples - 1, dtype=np.float32), cfg).shape == (0, 45)


@pytest.mark.parametrize("feature_set", ["summary", "frames"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_chunks_give_the_whole_signal_features(feature_set: str, seed: int) -> None:
    cfg = FeatureConfig(feature_set=feature_set, n_mfcc=20 if feature_set == "summary" else 40)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    signal = (rng.normal(0, 0.05, 3 * SR) + tone(220.0, 3.0, 0.3)).astype(np.float32)
    whole = frame_features(signal, cfg)
    featurizer = FrameFeaturizer(cfg)
    parts, i = [], 0
    while i < signal.size:
        n = int(rng.integers(0, 2500))
        parts.append(featurizer.process(signal[i : i + n]))
        i += n
    chunked = np.concatenate(parts)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-4)


def test_reset_starts_a_new_stream() -> None:
    cfg = FeatureConfig()
    signal = tone(300.0, 0.5)
    featurizer = FrameFeaturizer(cfg)
    featurizer.process(signal[:1234])
    featurizer.reset()
    np.testing.assert_array_equal(featurizer.process(signal), frame_features(signal, cfg))


def test_summary_vector_uses_only_speech_frames() -> None:
    frames = np.array([[1.0, 10.0], [3.0, 10.0], [100.0, -50.0]], dtype=np.float32)
    mask = np.array([True, True, False])
    np.testing.assert_allclose(summary_vector(frames, mask), [2.0, 10.0, 1.0, 0.0])
    # fewer than two speech frames: every frame counts
    all_frames = summary_vector(frames, np.array([True, False, False]))
    np.testing.assert_allclose(all_frames[:2], frames.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"window_hop_ms": 505.0}, "window_hop_ms"),
        ({"frame_ms": 40.0, "n_fft": 512}, "n_fft"),
        ({"n_mfcc": 50}, "n_mfcc"),
        ({"fmax_hz": 9000.0}, "fmax_hz"),
        ({"feature_set": "spectrogram"}, "feature_set"),
        ({"frame_hop_ms": 10.03}, "frame_hop_ms"),
    ],
)
def test_bad_configs_name_the_setting(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        FeatureConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    cfg = FeatureConfig(window_ms=1500.0, n_mfcc=13)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        FeatureConfig.from_dict({**cfg.to_dict(), "n_chroma": 24})


def harmonic(f0_hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * sum(np.sin(2 * np.pi * f0_hz * k * t) / k for k in range(1, 8))).astype(np.float32)


@pytest.mark.parametrize("f0_hz", [100.0, 150.0, 220.0, 330.0, 450.0])
def test_pitch_of_a_harmonic_signal(f0_hz: float) -> None:
    cfg = FeatureConfig(pitch=True)
    frames = frame_features(harmonic(f0_hz), cfg)
    f0 = 100.0 * 2 ** (column(cfg, frames, "f0_st") / 12.0)
    assert np.median(f0) == pytest.approx(f0_hz, rel=0.005)
    assert np.mean(np.abs(f0 / f0_hz - 1) < 0.02) > 0.95  # no octave errors
    assert column(cfg, frames, "voicing").mean() > 0.9


def test_noise_and_silence_are_unvoiced() -> None:
    cfg = FeatureConfig(pitch=True)
    noise = np.random.default_rng(1).normal(0, 0.1, SR).astype(np.float32)
    assert np.mean(column(cfg, frame_features(noise, cfg), "f0_st") != 0) < 0.05
    silent = frame_features(np.zeros(SR, dtype=np.float32), cfg)
    assert np.all(column(cfg, silent, "f0_st") == 0) and np.all(column(cfg, silent, "voicing") == 0)


def test_pitch_and_delta_summary_columns() -> None:
    from emostream.frontend.features import model_input

    cfg = FeatureConfig(pitch=True, deltas=True)
    names = summary_feature_names(cfg)
    assert len(names) == 2 * 47 + 21 and "f0_st_mean" in names and names[-1] == "rms_db_delta_std"
    # half voiced at 200 Hz (12 st), half unvoiced: the F0 statistics cover the voiced frames only
    frames = np.zeros((10, 47), dtype=np.float32)
    frames[:5, 45] = 12.0
    frames[:, 0] = np.arange(10, dtype=np.float32) * 2.0  # mfcc_00 rises by 2 per frame
    x = model_input(frames, None, cfg)
    assert x[names.index("f0_st_mean")] == pytest.approx(12.0)
    assert x[names.index("f0_st_std")] == pytest.approx(0.0)
    assert x[names.index("mfcc_00_delta_std")] == pytest.approx(0.0)
    assert x[names.index("mfcc_00_std")] > 5


@pytest.mark.parametrize("feature_set", ["summary", "frames"])
def test_pitch_features_stream_like_the_whole_signal(feature_set: str) -> None:
    cfg = FeatureConfig(feature_set=feature_set, pitch=True, deltas=True)  # type: ignore[arg-type]
    signal = np.concatenate([harmonic(180.0, 0.7), np.random.default_rng(2).normal(0, 0.05, SR).astype(np.float32)])
    featurizer = FrameFeaturizer(cfg)
    rng = np.random.default_rng(4)
    parts, i = [], 0
    while i < signal.size:
        n = int(rng.integers(1, 3000))
        parts.append(featurizer.process(signal[i : i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts), frame_features(signal, cfg), rtol=1e-5, atol=1e-4)
