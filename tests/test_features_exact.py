"""The front-end's faster arithmetic gives the same bits as the plain numpy formulas it replaced (issue 16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from emostream.frontend import features as feat
from emostream.frontend import pitch as pitch_mod
from emostream.frontend.features import FeatureConfig, mean_std, model_input, summary_vector
from emostream.frontend.voice import VOICE_DIM, VoiceConfig

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


def _frames(rng: np.random.Generator, n: int, width: int) -> F32:
    """Feature-like rows: columns on very different scales, some zeros (unvoiced F0), float32."""
    scales = 10.0 ** rng.uniform(-3, 3, size=width)
    frames = (rng.standard_normal((n, width)) * scales + rng.uniform(-100, 100, size=width)).astype(np.float32)
    frames[rng.random(n) < 0.3, -2] = 0.0
    return frames


@pytest.mark.parametrize("seed", range(20))
def test_mean_std_is_numpys_mean_and_std_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    for shape in ((n, int(rng.integers(1, 60))), (n,)):
        data = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-5, 5)).astype(np.float64)
        expected_mean, expected_std = data.mean(axis=0), data.std(axis=0)
        mean, std = mean_std(data.copy())
        assert mean.tobytes() == np.asarray(expected_mean).tobytes()
        assert std.tobytes() == np.asarray(expected_std).tobytes()


def _old_summary(frames: F32, mask: npt.NDArray[np.bool_] | None) -> F32:
    if mask is not None and int(np.count_nonzero(mask)) >= 2:
        frames = frames[mask]
    data = frames.astype(np.float64)
    return np.concatenate([data.mean(axis=0), data.std(axis=0)]).astype(np.float32)


def _old_voiced_f0(frames: F32, mask: npt.NDArray[np.bool_] | None, col: int) -> F32:
    voiced = frames[:, col] != 0
    if mask is not None:
        voiced &= mask
    values = frames[voiced, col].astype(np.float64)
    if values.size == 0:
        return np.zeros(2, dtype=np.float32)
    return np.array([values.mean(), values.std()], dtype=np.float32)


def _old_delta_std(frames: F32, mask: npt.NDArray[np.bool_] | None, columns: list[int]) -> F32:
    deltas = np.diff(frames[:, columns].astype(np.float64), axis=0)
    if mask is not None:
        pairs = mask[1:] & mask[:-1]
        if int(np.count_nonzero(pairs)) >= 2:
            deltas = deltas[pairs]
    if deltas.shape[0] == 0:
        return np.zeros(len(columns), dtype=np.float32)
    return deltas.std(axis=0).astype(np.float32)


def _old_model_input(frames: F32, mask: npt.NDArray[np.bool_] | None, cfg: FeatureConfig, voice: F32) -> F32:
    summary = _old_summary(frames, mask)
    n = frames.shape[1]
    summary[[n - 2, 2 * n - 2]] = _old_voiced_f0(frames, mask, n - 2)
    columns = [*range(cfg.n_mfcc), feat.frame_feature_names(cfg).index("rms_db")]
    return np.concatenate([summary, _old_delta_std(frames, mask, columns), voice])


def _masks(rng: np.random.Generator, n: int) -> list[npt.NDArray[np.bool_] | None]:
    one = np.zeros(n, dtype=bool)
    one[int(rng.integers(0, n))] = True
    alternating = np.arange(n) % 2 == 0  # speech frames but no two consecutive: the deltas fall back to all
    return [None, rng.random(n) < 0.6, one, alternating, np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]


@pytest.mark.parametrize("seed", range(10))
def test_model_input_and_its_statistics_are_the_old_formulas_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = FeatureConfig(pitch=True, deltas=True, voice=VoiceConfig())
    columns = cfg.summary_layout.delta_columns
    width = len(feat.frame_feature_names(cfg))
    for n in (1, 2, 3, cfg.frames_per_window):
        frames = _frames(rng, n, width)
        voice = rng.standard_normal(VOICE_DIM).astype(np.float32)
        for mask in _masks(rng, n):
            assert summary_vector(frames, mask).tobytes() == _old_summary(frames, mask).tobytes()
            assert (
                feat._voiced_f0_stats(frames, mask, width - 2).tobytes()
                == _old_voiced_f0(frames, mask, width - 2).tobytes()
            )
            assert feat._delta_std(frames, mask, columns).tobytes() == _old_delta_std(frames, mask, columns).tobytes()
            got = model_input(frames, mask, cfg, voice_embedding=voice)
            assert got.dtype == np.float32 and got.shape == (len(feat.summary_feature_names(cfg)),)
            assert got.tobytes() == _old_model_input(frames, mask, cfg, voice).tobytes()


def _old_first_strong_peak(r: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.intp]:
    core = r[:, 1:-1]
    is_peak = (core >= r[:, :-2]) & (core > r[:, 2:])
    highest = np.max(np.where(is_peak, core, -np.inf), axis=1, keepdims=True)
    strong = is_peak & (core >= pitch_mod.OCTAVE_RATIO * highest)
    found: npt.NDArray[np.intp] = np.where(strong.any(axis=1), np.argmax(strong, axis=1), np.argmax(core, axis=1))
    return found


@pytest.mark.parametrize("seed", range(5))
def test_first_strong_peak_is_the_old_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(200):
        r = rng.standard_normal((int(rng.integers(1, 60)), int(rng.integers(3, 200)))).astype(np.float32)
        if trial % 3 == 0:
            r = np.sort(r, axis=1)  # monotone rows: no peak at all
        if trial % 5 == 0:
            r[rng.random(r.shape) < 0.1] = np.nan
        if trial % 7 == 0:
            r = np.round(r, 1)  # ties between neighbours and between peaks
        np.testing.assert_array_equal(pitch_mod._first_strong_peak(r), _old_first_strong_peak(r))


def _old_spectral_features(frames: F32, power: F32, tables: Any) -> F32:
    signs = np.signbit(frames)
    zcr = np.count_nonzero(signs[:, 1:] != signs[:, :-1], axis=1) / np.float32(frames.shape[1])
    rms_db = 10.0 * np.log10(np.einsum("ij,ij->i", frames, frames) / np.float32(frames.shape[1]) + feat._EPS)
    mag = np.sqrt(power)
    mag_sum = mag.sum(axis=1) + feat._EPS
    centroid = mag @ tables.freqs_hz / mag_sum
    bandwidth = np.sqrt(np.maximum(0.0, mag @ tables.freqs_sq / mag_sum - centroid**2))
    cumulative = np.cumsum(mag, axis=1)
    rolloff = tables.freqs_hz[np.argmax(cumulative >= feat.ROLLOFF_FRACTION * cumulative[:, -1:], axis=1)]
    log_power = np.log(power + feat._EPS)
    n_bins = power.shape[1]
    flatness = np.exp(log_power.sum(axis=1) / n_bins) / (power.sum(axis=1) / n_bins + feat._EPS)
    chroma = power @ tables.chroma_fb_t
    chroma /= np.max(chroma, axis=1, keepdims=True) + feat._EPS
    contrast = feat._spectral_contrast(power, tables)
    scalars = np.stack([zcr, rms_db, centroid, bandwidth, rolloff, flatness], axis=1).astype(np.float32)
    out: F32 = np.concatenate([scalars, chroma, contrast], axis=1)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_spectral_columns_are_the_old_stacked_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = FeatureConfig(pitch=True)
    featurizer = feat.FrameFeaturizer(cfg)
    frames = (rng.standard_normal((70, cfg.frame_samples)) * 0.1).astype(np.float32)
    frames[:5] = 0.0  # silent frames: the EPS floors
    rows, power = featurizer.compute(frames)
    expected = _old_spectral_features(frames, power, featurizer._tables)
    assert rows[:, cfg.n_mfcc : cfg.n_mfcc + expected.shape[1]].tobytes() == expected.tobytes()
    tables = featurizer._tables
    mfcc = 10.0 * np.log10(power @ tables.mel_fb_t + np.float32(feat._EPS)) @ tables.dct_t
    assert np.ascontiguousarray(rows[:, : cfg.n_mfcc]).tobytes() == mfcc.tobytes()
    # the pitch columns, from the old separate real-valued buffer of the power
    full = np.fft.rfft(frames * featurizer._tables.window64, featurizer._tables.fft_size, axis=1)
    autocorrelation = np.fft.irfft((full.real**2 + full.imag**2).astype(np.complex128), axis=1)
    f0, voicing = pitch_mod.pitch_from_autocorrelation(autocorrelation, featurizer._tables.pitch)  # type: ignore[arg-type]
    assert rows[:, -2].tobytes() == f0.tobytes() and rows[:, -1].tobytes() == voicing.tobytes()


def test_frames_at_gives_the_samples_of_any_ascending_frames() -> None:
    cfg = FeatureConfig(pitch=True)
    featurizer = feat.FrameFeaturizer(cfg)
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(20000).astype(np.float32)
    for _ in range(300):
        first = int(rng.integers(1, 50))  # frame 0 starts before the audio held (from sample 7)
        frames = np.sort(rng.choice(np.arange(first, 100), size=int(rng.integers(0, 40)), replace=False))
        starts = cfg.frame_offset_samples + frames * cfg.hop_samples - 7
        expected = audio[7:][starts[:, None] + np.arange(cfg.frame_samples)]  # the old gather
        got = featurizer.frames_at(audio[7:], 7, frames)
        assert got.shape == expected.shape and got.tobytes() == expected.tobytes()


def _old_pitch(autocorrelation: F64, tables: Any) -> tuple[F32, F32]:
    ac = np.asarray(autocorrelation[:, : tables.max_lag + 2], dtype=np.float32)
    r = ac / (ac[:, :1] + np.float32(pitch_mod._EPS)) / tables.window_ac
    rows = np.arange(r.shape[0])
    lag = _old_first_strong_peak(r[:, tables.min_lag - 1 : tables.max_lag + 2]) + tables.min_lag
    voicing = np.clip(r[rows, lag], 0.0, 1.0)
    left, centre, right = r[rows, lag - 1], r[rows, lag], r[rows, lag + 1]
    curvature = left - 2.0 * centre + right
    shift = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    f0_hz = tables.sample_rate_hz / (lag + np.clip(shift, -0.5, 0.5))
    voiced = (voicing >= pitch_mod.VOICING_THRESHOLD) & (ac[:, 0] > pitch_mod._EPS)
    f0_st = np.where(voiced, 12.0 * np.log2(f0_hz / pitch_mod.F0_REFERENCE_HZ), 0.0)
    return f0_st.astype(np.float32), np.where(ac[:, 0] > pitch_mod._EPS, voicing, 0.0).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_pitch_from_autocorrelation_is_the_old_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = FeatureConfig(pitch=True)
    tables = feat.FrameFeaturizer(cfg)._tables.pitch
    t = np.arange(cfg.frame_samples) / cfg.sample_rate_hz
    f0 = rng.uniform(60, 520, size=(80, 1))
    frames = np.sin(2 * np.pi * f0 * t) + rng.uniform(0, 2, size=(80, 1)) * rng.standard_normal((80, t.size))
    frames[:4] = 0.0  # silent: unvoiced, no energy
    power = np.abs(np.fft.rfft(frames * np.hanning(cfg.frame_samples + 1)[:-1], tables.n_fft, axis=1)) ** 2
    autocorrelation = np.fft.irfft(power.astype(np.complex128), tables.n_fft, axis=1)
    got = pitch_mod.pitch_from_autocorrelation(autocorrelation, tables)
    expected = _old_pitch(autocorrelation, tables)
    assert got[0].tobytes() == expected[0].tobytes() and got[1].tobytes() == expected[1].tobytes()
