"""Stream resampling (any chunking gives the whole-signal result, at the right frequency) and raw stdin input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soxr

from emostream.audio.codecs import RAW_FORMATS, decode_raw, encode_raw
from emostream.audio.resample import StreamResampler, input_frames_for_output
from emostream.audio.sources import StdinSource
from emostream.errors import ConfigError


def tone(rate: int, seconds: float = 1.0, hz: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


def stream(resampler: StreamResampler, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 4000))
        out.append(resampler.process(x[i : i + n]))
        i += n
    out.append(resampler.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(("rate_in", "channels"), [(44100, 1), (48000, 2), (8000, 1)])
def test_random_chunks_equal_the_whole_signal_and_keep_the_frequency(rate_in: int, channels: int) -> None:
    x = tone(rate_in, channels=channels)
    y = stream(StreamResampler(rate_in, 16000, channels), x, seed=rate_in)
    whole = soxr.resample(x, rate_in, 16000, quality="HQ")
    assert y.shape == whole.shape == (16000, channels)
    np.testing.assert_allclose(y, whole, atol=1e-5)
    spectrum = np.abs(np.fft.rfft(y[2000:-2000, 0] * np.hanning(12000)))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 1000) < 2


def test_equal_rates_pass_through_and_reset_starts_over() -> None:
    same = StreamResampler(16000, 16000, 1)
    x = tone(16000, 0.1)
    assert same.identity and same.process(x) is not None
    np.testing.assert_array_equal(same.process(x), x)
    assert same.flush().shape == (0, 1)
    r = StreamResampler(48000, 16000, 1)
    first = stream(r, tone(48000, 0.5), seed=1)
    r.reset()
    second = stream(r, tone(48000, 0.5), seed=2)
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_wrong_channel_count_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected \(n, 2\)"):
        StreamResampler(48000, 16000, 2).process(np.zeros((10, 1), np.float32))


@pytest.mark.parametrize("fmt", list(RAW_FORMATS))
def test_stdin_reads_every_format_of_the_codec_table(fmt: str) -> None:
    stereo = tone(8000, 0.6, channels=2)
    data = encode_raw(stereo, fmt) + b"\x00"  # one stray byte: less than a frame
    source = StdinSource(io.BytesIO(data), 8000, 2, fmt.upper(), block_ms=30)
    blocks = []
    while (block := source.read()) is not None:
        blocks.append(block)
    expected = decode_raw(data[:-1], fmt).reshape(-1, 2)
    assert np.array_equal(np.concatenate(blocks), expected)
    assert source.truncated_bytes == 1 and "ignored" in source.warnings[0]


def test_stdin_refuses_an_unknown_format_listing_the_table() -> None:
    with pytest.raises(ConfigError, match=r"raw PCM format 'u8' is not supported; supported formats: s16le"):
        StdinSource(io.BytesIO(b""), 8000, 1, "u8")


@pytest.mark.parametrize(
    ("rate_in", "exact"), [(8000, True), (32000, True), (16000, True), (44100, False), (48000, False)]
)
def test_input_needed_tells_when_the_output_reaches_a_total(rate_in: int, exact: bool) -> None:
    """soxr gives its output in blocks: ``input_needed`` says at which input total a given output total is out,
    whatever the chunks (exact for integer rate ratios; otherwise at most one block early, never late)."""
    rng = np.random.default_rng(rate_in)
    r = StreamResampler(rate_in, 16000, 2)
    early = 0
    for _ in range(60):
        target = r.frames_out + int(rng.integers(1, 12000))
        need = r.input_needed(target)
        assert need > r.frames_in
        while r.frames_in < need - 1:  # up to one frame short, in random chunks: not out yet
            n = min(int(rng.integers(1, 3000)), need - 1 - r.frames_in)
            r.process(np.zeros((n, 2), dtype=np.float32))
        assert r.frames_out < target
        r.process(np.zeros((1, 2), dtype=np.float32))
        if r.frames_out < target:
            early += 1
            while r.frames_out < target:
                r.process(np.zeros((1, 2), dtype=np.float32))
        assert input_frames_for_output(rate_in, 16000, r.frames_out) <= r.frames_in
    assert early == 0 if exact else early <= 30
