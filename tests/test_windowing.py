"""VAD gating and sliding windows: known answers, and identical windows streamed or whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.audio.files import load_mono
from emostream.errors import ConfigError
from emostream.frontend.features import FeatureConfig, frame_features, model_input
from emostream.frontend.vad import VadConfig, VadGate, speech_flags
from emostream.frontend.windowing import WindowExtractor, _Rows, extract_windows

SR = 16000
FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"
ANGRY = FIXTURES / "Actor_01" / "03-01-05-02-01-01-01.flac"


def speech_clip() -> np.ndarray:
    return load_mono(ANGRY, SR)


def test_silence_is_not_speech() -> None:
    flags = speech_flags(np.zeros(2 * SR, dtype=np.float32), VadConfig(), SR)
    assert flags.size == 100 and not flags.any()


def test_speech_clip_has_speech_and_leading_silence() -> None:
    signal = np.concatenate([np.zeros(SR, dtype=np.float32), speech_clip()])
    flags = speech_flags(signal, VadConfig(hangover_ms=0), SR)
    assert not flags[:50].any()
    assert flags.mean() > 0.3


def test_hangover_extends_speech_after_the_detector_stops() -> None:
    signal = np.concatenate([speech_clip(), np.zeros(SR, dtype=np.float32)])
    short = speech_flags(signal, VadConfig(hangover_ms=0), SR)
    long = speech_flags(signal, VadConfig(hangover_ms=300), SR)
    last = int(np.flatnonzero(short)[-1])
    assert long[last + 1 : last + 16].all()
    assert not long[last + 16 :].any()


def test_vad_chunking_does_not_change_decisions() -> None:
    signal = speech_clip()
    whole = speech_flags(signal, VadConfig(), SR)
    gate = VadGate(VadConfig(), SR)
    rng = np.random.default_rng(3)
    parts, i = [], 0
    while i < signal.size:
        n = int(rng.integers(1, 2000))
        parts.append(gate.process(signal[i : i + n]))
        i += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_vad_refuses_rates_webrtcvad_cannot_take() -> None:
    with pytest.raises(ConfigError, match="44100"):
        VadGate(VadConfig(), 44100)


def test_window_times_and_flush_of_the_tail() -> None:
    cfg = FeatureConfig()
    signal = np.zeros(int(3.3 * SR), dtype=np.float32)
    windows = extract_windows(signal, cfg, VadConfig())
    assert [(w.start_s, w.end_s) for w in windows] == [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0), (1.5, 3.5)]
    assert all(not w.is_speech and w.speech_ratio == 0.0 for w in windows)
    assert windows[0].features.shape == (90,)


def test_short_signal_gets_one_padded_window() -> None:
    windows = extract_windows(np.zeros(SR // 2, dtype=np.float32), FeatureConfig(), VadConfig())
    assert len(windows) == 1 and windows[0].end_s == 2.0


@pytest.mark.parametrize("feature_set", ["summary", "frames"])
def test_streamed_windows_equal_whole_signal_windows(feature_set: str) -> None:
    cfg = FeatureConfig(feature_set=feature_set, n_mfcc=20 if feature_set == "summary" else 40)  # type: ignore[arg-type]
    signal = np.concatenate([speech_clip(), np.zeros(SR // 3, dtype=np.float32), speech_clip()])
    whole = extract_windows(signal, cfg, VadConfig())
    extractor = WindowExtractor(cfg, VadConfig())
    rng = np.random.default_rng(11)
    streamed, i = [], 0
    while i < signal.size:
        n = int(rng.integers(1, 6000))
        streamed += extractor.process(signal[i : i + n])
        i += n
    streamed += extractor.flush()
    assert len(streamed) == len(whole) > 5
    for a, b in zip(whole, streamed, strict=True):
        assert (a.index, a.start_s, a.speech_ratio, a.is_speech) == (b.index, b.start_s, b.speech_ratio, b.is_speech)
        np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-4)
    assert any(w.is_speech for w in whole)


def test_window_features_are_not_overwritten_by_later_audio() -> None:
    cfg = FeatureConfig(feature_set="frames", n_mfcc=40)
    extractor = WindowExtractor(cfg, VadConfig())
    signal = speech_clip()
    first = extractor.process(signal[: 2 * SR])[0]
    snapshot = first.features.copy()
    extractor.process(signal[2 * SR :])
    np.testing.assert_array_equal(first.features, snapshot)


def test_vad_frame_must_divide_the_window_hop() -> None:
    with pytest.raises(ConfigError, match="VAD frame"):
        WindowExtractor(FeatureConfig(), VadConfig(frame_ms=30))


def test_first_window_closes_after_the_lead_in() -> None:
    cfg = FeatureConfig()
    signal = np.zeros(int(3.3 * SR), dtype=np.float32)
    extractor = WindowExtractor(cfg, VadConfig(), first_window_ms=1000.0)
    windows = extractor.process(signal) + extractor.flush()
    assert [(w.start_s, w.end_s) for w in windows] == [
        (0.0, 1.0),
        (0.0, 1.5),
        (0.0, 2.0),
        (0.5, 2.5),
        (1.0, 3.0),
        (1.5, 3.5),
    ]
    assert extractor.samples_seen == int(3.5 * SR)


def test_lead_in_speech_ratio_counts_only_real_audio_but_classifying_needs_a_full_windows_speech() -> None:
    # the clip's first second holds 0.44 s of speech: its ratio over the real audio is 0.44, but a
    # full 2 s window needs 0.6 s of speech (min_speech_ratio 0.3), so the lead-in window is not read
    # (issue 19, item 3: readings from so little speech leaned to one emotion)
    clip = speech_clip()
    head_ratio = float(speech_flags(clip[:SR], VadConfig(), SR).mean())
    assert 0.15 < head_ratio < 0.6
    extractor = WindowExtractor(FeatureConfig(), VadConfig(), first_window_ms=1000.0)
    first, second, third = extractor.process(clip[: 2 * SR])
    assert first.end_s == 1.0
    assert first.speech_ratio == pytest.approx(head_ratio, abs=0.05)
    assert not first.is_speech
    speech_s = [w.speech_ratio * (w.end_s - w.start_s) for w in (second, third)]
    assert [w.is_speech for w in (second, third)] == [s >= 0.6 for s in speech_s]
    assert third.is_speech


def test_lead_in_windows_stream_like_the_whole_signal() -> None:
    cfg = FeatureConfig()
    signal = speech_clip()
    whole = WindowExtractor(cfg, VadConfig(), first_window_ms=1000.0)
    expected = whole.process(signal) + whole.flush()
    streamed = WindowExtractor(cfg, VadConfig(), first_window_ms=1000.0)
    rng = np.random.default_rng(5)
    got, i = [], 0
    while i < signal.size:
        n = int(rng.integers(1, 4000))
        got += streamed.process(signal[i : i + n])
        i += n
    got += streamed.flush()
    assert [(w.start_s, w.end_s, w.speech_ratio) for w in got] == [
        (w.start_s, w.end_s, w.speech_ratio) for w in expected
    ]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("first_window_ms", [0.0, 1010.0])
def test_lead_in_must_align_with_frames(first_window_ms: float) -> None:
    with pytest.raises(ConfigError, match="first_window_ms"):
        WindowExtractor(FeatureConfig(), VadConfig(), first_window_ms=first_window_ms)


def test_level_gate_keeps_noise_after_speech_out_of_speech() -> None:
    noise = np.random.default_rng(6).normal(0, 10 ** (-55 / 20), int(1.5 * SR)).astype(np.float32)  # -55 dBFS
    signal = np.concatenate([speech_clip(), noise])
    tail = slice(-int(1.0 * SR) // 320, None)  # the last second: noise only, past the hang-over
    alone = VadConfig(speech_level_margin_db=None)
    assert speech_flags(signal, alone, SR)[tail].mean() > 0.5  # webrtcvad alone calls it speech
    gated = speech_flags(signal, VadConfig(min_level_dbfs=-50.0, speech_level_margin_db=None), SR)
    assert not gated[tail].any()
    assert gated[: speech_clip().size // 320].mean() > 0.3  # the speech itself still passes


def test_level_gate_is_validated() -> None:
    with pytest.raises(ConfigError, match="min_level_dbfs"):
        VadConfig(min_level_dbfs=3.0)


def test_vad_only_windows_match_the_full_ones() -> None:
    signal = np.concatenate([speech_clip(), np.zeros(SR, dtype=np.float32)])
    full = WindowExtractor(FeatureConfig(), VadConfig(), first_window_ms=1000.0)
    vad_only = WindowExtractor(FeatureConfig(), VadConfig(), first_window_ms=1000.0, compute_features=False)
    a = full.process(signal) + full.flush()
    b = vad_only.process(signal) + vad_only.flush()
    assert [(w.start_s, w.end_s, w.speech_ratio, w.is_speech) for w in a] == [
        (w.start_s, w.end_s, w.speech_ratio, w.is_speech) for w in b
    ]
    assert all(w.features.size == 0 for w in b)


def test_noise_floor_gate_follows_the_pauses_and_needs_the_margin() -> None:
    from emostream.frontend.vad import VadGate

    gate = VadGate(VadConfig(noise_floor_margin_db=10.0), 16000)
    # 20 ms frames: 1 s at -60 dB (the floor settles there), then -45 dB (15 dB above: loud), -55 dB (5 dB: not)
    levels = np.array([-60.0] * 50 + [-45.0] * 5 + [-55.0] * 5)
    loud = gate._above_floor(levels, 10.0)
    assert not loud[:50].any() and loud[50:55].all() and not loud[55:].any()
    # a quieter frame lowers the floor at once; a steady louder noise raises it by 1 dB/s only
    gate.reset()
    rising = gate._above_floor(np.array([-80.0] + [-50.0] * 100), 10.0)
    assert rising[1] and rising[-1]  # 2 s later the floor has risen 2 dB: -50 is still 28 dB above it
    with pytest.raises(ConfigError, match="noise_floor_margin_db"):
        VadConfig(noise_floor_margin_db=-1.0)


def test_only_the_frames_a_window_reads_are_computed_and_inputs_do_not_change() -> None:
    """Each window computes just its speech frames (each frame once); its input is that of every frame."""
    cfg = FeatureConfig(pitch=True, deltas=True)
    signal = np.concatenate([np.zeros(3 * SR, dtype=np.float32), speech_clip(), np.zeros(3 * SR, dtype=np.float32)])
    extractor = WindowExtractor(cfg, VadConfig())
    windows = extractor.process(signal) + extractor.flush()
    rows = frame_features(np.concatenate([signal, np.zeros(cfg.window_samples, dtype=np.float32)]), cfg)
    flags = speech_flags(np.concatenate([signal, np.zeros(cfg.window_samples, dtype=np.float32)]), VadConfig(), SR)
    vad_frame = VadConfig().frame_samples(SR)
    centres = np.arange(cfg.frames_per_window) * cfg.hop_samples + cfg.frame_samples // 2
    for w in windows:
        start = w.index * cfg.window_hop_samples
        frames = rows[start // cfg.hop_samples : start // cfg.hop_samples + cfg.frames_per_window]
        mask = flags[(start + centres) // vad_frame]
        np.testing.assert_allclose(w.features, model_input(frames, mask, cfg), rtol=1e-5, atol=1e-4)
    # the runtime (speech windows only) never frames the silence; overlapping windows share their frames
    lazy = WindowExtractor(cfg, VadConfig(), speech_only=True)
    assert len(lazy.process(signal) + lazy.flush()) == len(windows)
    total = (signal.size - cfg.frame_samples) // cfg.hop_samples + 1
    speech_frames = int(np.count_nonzero(flags)) * vad_frame // cfg.hop_samples
    assert 0 < lazy.frames_computed <= speech_frames + 10 < total // 2
    assert extractor.frames_computed > lazy.frames_computed  # every window's input, silence included


def test_speech_only_windows_skip_the_rest() -> None:
    cfg = FeatureConfig(pitch=True, deltas=True)
    signal = np.concatenate([np.zeros(3 * SR, dtype=np.float32), speech_clip()])
    full = extract_windows(signal, cfg, VadConfig())
    lazy = WindowExtractor(cfg, VadConfig(), speech_only=True)
    got = lazy.process(signal) + lazy.flush()
    assert [w.is_speech for w in got] == [w.is_speech for w in full]
    assert any(w.is_speech for w in got) and not all(w.is_speech for w in got)
    for a, b in zip(full, got, strict=True):
        if a.is_speech:
            np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-4)
        else:
            assert b.features.size == 0


@pytest.mark.parametrize("seed", range(5))
def test_stream_rows_keep_every_row_asked_for_while_dropping_old_ones_lazily(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = _Rows(3, 8, np.float32)
    model: list[np.ndarray] = []  # every row ever appended, by global index
    keep_from = 0
    for _ in range(300):
        keep_from = min(len(model), keep_from + int(rng.integers(0, 6)))
        if rng.random() < 0.5:
            new = rng.standard_normal((int(rng.integers(0, 12)), 3)).astype(np.float32)
            rows.extend(new, keep_from)
            model += list(new)
        else:
            stop = len(model) + int(rng.integers(0, 12))
            rows.grow_to(stop, keep_from)
            model += [np.zeros(3, np.float32)] * (stop - len(model))
        assert rows.end == len(model) and rows.first <= keep_from
        expected = np.array(model[keep_from:], dtype=np.float32).reshape(-1, 3)
        np.testing.assert_array_equal(rows.take(keep_from, len(model) - keep_from), expected)
