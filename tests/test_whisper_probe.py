"""The Whisper probe input (emostream.train.whisper_probe): its log-mel front-end and speech rows, known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emostream.errors import ConfigError
from emostream.frontend.voice import mel_filterbank
from emostream.frontend.whisper import N_MELS, SAMPLE_RATE_HZ, whisper_log_mel
from emostream.train.whisper_probe import ENCODER_HOP_SAMPLES, encoder_statistics, speech_rows

RATE = SAMPLE_RATE_HZ


def _band_centres_hz(n_mels: int) -> np.ndarray:
    freqs = np.linspace(0.0, RATE / 2, 201)
    return freqs[np.argmax(mel_filterbank(n_mels), axis=1)]


def test_whisper_log_mel_shape_is_even_frames_of_ten_ms() -> None:
    for seconds in (1.0, 1.01, 2.345):
        n = int(seconds * RATE)
        mel = whisper_log_mel(np.zeros(n, dtype=np.float32))
        frames = n // 160  # 1 + n // 160 centred frames, the last one dropped as Whisper does
        assert mel.shape == (N_MELS, frames - frames % 2)
        assert mel.dtype == np.float32 and mel.flags.c_contiguous


def test_whisper_log_mel_peaks_in_the_tone_band_and_floors_eight_below_the_peak() -> None:
    t = np.arange(RATE) / RATE
    mel = whisper_log_mel((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    peak_band = int(np.argmax(mel[:, 50]))
    assert abs(_band_centres_hz(N_MELS)[peak_band] - 1000.0) < 60.0
    # log10 floored at 8 below the maximum, then (x + 4) / 4: values span at most 2
    assert mel.max() - mel.min() == pytest.approx(2.0, abs=1e-5)


def test_speech_rows_follow_the_vad_and_fall_back_to_every_row() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros(3 * RATE, dtype=np.float32)
    t = np.arange(RATE) / RATE
    burst = 0.3 * np.sin(2 * np.pi * 180.0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 4.0 * t))
    x[RATE : 2 * RATE] = burst + 0.01 * rng.standard_normal(RATE)
    n_rows = x.size // ENCODER_HOP_SAMPLES
    rows = speech_rows(x.astype(np.float32), n_rows)
    centres_s = (np.arange(n_rows) * ENCODER_HOP_SAMPLES + ENCODER_HOP_SAMPLES // 2) / RATE
    assert rows.any()
    assert not rows[centres_s < 0.9].any()  # silence before the burst
    assert rows[(centres_s > 1.2) & (centres_s < 1.8)].mean() > 0.9
    assert speech_rows(np.zeros(RATE, dtype=np.float32), 50).all()  # no speech at all: every row


def test_encoder_statistics_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.bin"):
        encoder_statistics([], tmp_path, None)
