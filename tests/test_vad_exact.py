"""The speech gate's faster arithmetic gives the same levels, PCM and decisions as the plain formulas (issue 16)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import webrtcvad

from emostream.audio.codecs import float_to_pcm16, float_to_pcm16_bytes
from emostream.frontend.vad import VadConfig, VadGate, frame_levels_dbfs

SR = 16000


def _signal(rng: np.random.Generator, seconds: float) -> npt.NDArray[np.float32]:
    """Bursts of harmonic tones at random levels between noise at random levels, float32."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    envelope = np.repeat(rng.uniform(-60, -5, size=n // 1600 + 1), 1600)[:n]
    tone = np.sin(2 * np.pi * 150 * t) + 0.5 * np.sin(2 * np.pi * 300 * t) + 0.25 * np.sin(2 * np.pi * 450 * t)
    voiced = np.repeat(rng.random(n // 3200 + 1) < 0.5, 3200)[:n]
    x = np.where(voiced, tone, rng.standard_normal(n)) * 10.0 ** (envelope / 20.0)
    return x.astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_frame_levels_are_the_mean_square_formula_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = _signal(rng, 2.0)
    samples[:320] = 0.0  # a silent frame: the floor
    for frame in (160, 320, 480):
        n = samples.size // frame
        frames = samples[: n * frame].reshape(n, frame).astype(np.float64)
        expected = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
        assert frame_levels_dbfs(samples, n, frame).tobytes() == expected.tobytes()


def test_pcm16_is_round_then_clip() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-1.2, 1.2, 10000),
            np.array([-0.0, 0.0, 0.5 / 32768, -0.5 / 32768, 1.5 / 32768, 1.0, -1.0, 32767.5 / 32768, 2.0, -2.0]),
        ]
    ).astype(np.float32)
    expected = np.clip(np.rint(x * np.float32(32768.0)), -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(float_to_pcm16(x), expected)
    assert float_to_pcm16_bytes(x) == expected.astype("<i2").tobytes()


@pytest.mark.parametrize("aggressiveness", [0, 2, 3])
def test_the_gate_hears_what_webrtcvad_hears_in_any_chunks(aggressiveness: int) -> None:
    rng = np.random.default_rng(aggressiveness)
    signal = _signal(rng, 6.0)
    cfg = VadConfig(aggressiveness=aggressiveness, hangover_ms=0, speech_level_margin_db=None)
    frame = cfg.frame_samples(SR)
    vad = webrtcvad.Vad(aggressiveness)
    pcm = float_to_pcm16_bytes(signal)
    expected = [vad.is_speech(pcm[2 * i * frame : 2 * (i + 1) * frame], SR) for i in range(signal.size // frame)]
    gate = VadGate(cfg, SR)
    got: list[bool] = []
    start = 0
    while start < signal.size:
        size = int(rng.integers(1, 3 * frame))
        got += gate.process(signal[start : start + size]).tolist()
        start += size
    assert got == expected
    # with a level gate, webrtcvad hears only the loud frames (its noise model adapts to what it hears)
    gated = VadConfig(aggressiveness=aggressiveness, hangover_ms=0, speech_level_margin_db=None, min_level_dbfs=-40.0)
    levels = frame_levels_dbfs(signal, signal.size // frame, frame)
    vad = webrtcvad.Vad(aggressiveness)
    expected = [
        bool(level >= -40.0) and vad.is_speech(pcm[2 * i * frame : 2 * (i + 1) * frame], SR)
        for i, level in enumerate(levels.tolist())
    ]
    assert VadGate(gated, SR).process(signal).tolist() == expected


def test_hang_over_counts_frames_since_speech_across_blocks_as_before() -> None:
    rng = np.random.default_rng(7)
    cfg = VadConfig(hangover_ms=200)
    gate = VadGate(cfg, SR)
    hangover = cfg.hangover_ms // cfg.frame_ms
    carried = hangover + 1  # the old formula, block by block, with its own carried count
    for _ in range(300):
        heard = rng.random(int(rng.integers(0, 40))) < rng.choice([0.0, 0.05, 0.5, 1.0])
        index = np.arange(heard.size)
        last = np.maximum.accumulate(np.where(heard, index, -1))
        since = np.where(last >= 0, index - last, carried + index + 1)
        if heard.size:
            carried = int(since[-1])
        np.testing.assert_array_equal(gate._hang_over(heard), since <= hangover)


def test_speech_level_gate_is_the_old_running_maximum_across_blocks() -> None:
    rng = np.random.default_rng(8)
    cfg = VadConfig()
    assert cfg.speech_level_margin_db is not None
    margin = cfg.speech_level_margin_db
    gate = VadGate(cfg, SR)
    fall = gate._fall_db
    carried: float | None = None  # the old formula, block by block, with its own carried reference
    for _ in range(300):
        n = int(rng.integers(0, 40))
        levels = rng.uniform(-90, -5, n)
        heard = rng.random(n) < rng.choice([0.0, 0.3, 1.0])
        steps = np.arange(1, n + 1, dtype=np.float64) * fall
        expected = heard
        if n:
            lifted = np.where(heard, levels + steps, -np.inf)
            if carried is not None:
                lifted[0] = max(lifted[0], carried)
            reference = np.maximum.accumulate(lifted) - steps
            carried = None if not np.isfinite(reference[-1]) else float(reference[-1])
            expected = heard & (levels >= reference - margin)
        np.testing.assert_array_equal(gate._near_speech_level(levels, heard, margin), expected)
        assert gate._speech_db == carried
