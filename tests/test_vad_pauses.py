"""The speech-level gate of the VAD (issue 19, item 2): noise in the pauses is not speech.

Synthetic signals only: a voiced "speech" stand-in (harmonics of a gliding 140 Hz F0,
syllable-rate amplitude modulation) at -12 dBFS RMS, quiet tails (-75 dBFS white noise,
like a studio clip's) and pink-noise pauses. webrtcvad alone hears the pink noise after a
quiet tail as speech (its noise model adapted to the tail); the default gate does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from emostream.errors import ConfigError
from emostream.frontend.vad import SPEECH_LEVEL_FALL_DB_PER_S, VadConfig, VadGate, speech_flags

SR = 16000
FRAMES_PER_S = 50  # 20 ms VAD frames


def voiced(seconds: float, level_dbfs: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(140.0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 25)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (level_dbfs / 20)).astype(np.float32)


def pink(seconds: float, level_dbfs: float, rng: np.random.Generator) -> np.ndarray:
    n = round(seconds * SR)
    spectrum = np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(np.arange(n // 2 + 1), 1.0))
    x = np.fft.irfft(spectrum, n)
    return (x / np.sqrt(np.mean(x**2)) * 10 ** (level_dbfs / 20)).astype(np.float32)


def quiet(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.standard_normal(round(seconds * SR)) * 10 ** (-75 / 20)).astype(np.float32)


def conversation(level_dbfs: float, turns: int = 4) -> tuple[np.ndarray, list[slice], list[slice]]:
    """Turns of (quiet 1 s, speech 2 s, quiet 1 s, pink pause 3 s); speech and pause spans in VAD frames."""
    rng = np.random.default_rng(7)
    parts: list[np.ndarray] = []
    speech: list[slice] = []
    pauses: list[slice] = []
    for k in range(turns):
        start = 7 * FRAMES_PER_S * k
        parts += [quiet(1, rng), voiced(2, -12), quiet(1, rng), pink(3, level_dbfs, rng)]
        speech.append(slice(start + FRAMES_PER_S, start + 3 * FRAMES_PER_S))
        pauses.append(slice(start + 4 * FRAMES_PER_S + 15, start + 7 * FRAMES_PER_S))  # after the hang-over
    return np.concatenate(parts), speech, pauses


def share(flags: np.ndarray, spans: list[slice]) -> float:
    return float(np.mean(np.concatenate([flags[s] for s in spans])))


@pytest.mark.parametrize("level_dbfs", [-40.0, -50.0, -60.0])
def test_pause_noise_is_not_speech_with_the_default_gate(level_dbfs: float) -> None:
    signal, speech, pauses = conversation(level_dbfs)
    flags = speech_flags(signal, VadConfig(), SR)
    assert share(flags, pauses) == 0.0
    assert share(flags, speech) > 0.95


@pytest.mark.parametrize("level_dbfs", [-40.0, -50.0])
def test_webrtcvad_alone_hears_the_pause_noise(level_dbfs: float) -> None:
    """The failure the gate fixes (so the test above can fail): without it the pauses are speech."""
    signal, _, pauses = conversation(level_dbfs)
    assert share(speech_flags(signal, VadConfig(speech_level_margin_db=None), SR), pauses) > 0.5


def test_gate_decisions_do_not_depend_on_chunking() -> None:
    signal, _, _ = conversation(-45.0, turns=2)
    whole = speech_flags(signal, VadConfig(), SR)
    gate = VadGate(VadConfig(), SR)
    rng = np.random.default_rng(3)
    parts, i = [], 0
    while i < signal.size:
        n = int(rng.integers(1, 9000))
        parts.append(gate.process(signal[i : i + n]))
        i += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_the_speech_level_falls_so_a_quieter_talker_is_heard() -> None:
    """A talker 28 dB below a loud one is dropped at first and heard once the reference has fallen
    (0.5 dB/s) to within 22 dB of their loudest frames; webrtcvad alone hears them throughout."""
    rng = np.random.default_rng(5)
    loud = voiced(2, -12)
    turns = [part for _ in range(14) for part in (voiced(2, -40), quiet(1, rng))]
    signal = np.concatenate([quiet(1, rng), loud, quiet(1, rng), *turns])
    start = 4 * FRAMES_PER_S
    quiet_talker = [
        slice(start + 3 * FRAMES_PER_S * k, start + 3 * FRAMES_PER_S * k + 2 * FRAMES_PER_S) for k in range(14)
    ]
    alone = speech_flags(signal, VadConfig(speech_level_margin_db=None), SR)
    flags = speech_flags(signal, VadConfig(), SR)
    assert share(alone, quiet_talker) > 0.95
    assert share(flags, quiet_talker[:2]) == 0.0  # 0-6 s: 28 dB below the loud talker's level
    assert share(flags, quiet_talker[-4:]) > 0.95  # 30-42 s: the reference has fallen 15+ dB
    assert SPEECH_LEVEL_FALL_DB_PER_S == 0.5


def test_gate_setting_is_checked_and_recorded() -> None:
    assert VadConfig().to_dict()["speech_level_margin_db"] == 22.0
    assert VadConfig.from_dict({"speech_level_margin_db": None}).speech_level_margin_db is None
    for bad in (0.0, -3.0, 200.0):
        with pytest.raises(ConfigError, match="speech_level_margin_db"):
            VadConfig(speech_level_margin_db=bad)
