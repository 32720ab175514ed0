"""Audio codecs: float <-> PCM16, G.711 μ-law/A-law, the phone-line round trip, the raw-format table."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.audio import codecs as tel
from emostream.audio.files import read_audio
from emostream.errors import AudioInputError, ConfigError

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop is not available (removed in Python 3.13)")


def test_mulaw_bit_exact_with_audioop():
    audioop = _audioop()
    pcm_bytes = ALL_PCM.astype("<i2").tobytes()
    assert tel.pcm16_to_mulaw(ALL_PCM).tobytes() == audioop.lin2ulaw(pcm_bytes, 2)
    decoded = audioop.ulaw2lin(ALL_CODES.tobytes(), 2)
    assert tel.mulaw_to_pcm16(ALL_CODES).astype("<i2").tobytes() == decoded


def test_alaw_bit_exact_with_audioop():
    audioop = _audioop()
    pcm_bytes = ALL_PCM.astype("<i2").tobytes()
    assert tel.pcm16_to_alaw(ALL_PCM).tobytes() == audioop.lin2alaw(pcm_bytes, 2)
    decoded = audioop.alaw2lin(ALL_CODES.tobytes(), 2)
    assert tel.alaw_to_pcm16(ALL_CODES).astype("<i2").tobytes() == decoded


def test_standard_table_values():
    # Values from ITU-T G.711: silence codes, and the largest magnitudes of each law.
    assert tel.mulaw_encode(np.zeros(1, np.float32))[0] == 0xFF
    assert tel.alaw_encode(np.zeros(1, np.float32))[0] == 0xD5
    assert tel.mulaw_to_pcm16(ALL_CODES).max() == 32124
    assert tel.mulaw_to_pcm16(ALL_CODES).min() == -32124
    assert tel.alaw_to_pcm16(ALL_CODES).max() == 32256
    assert tel.alaw_to_pcm16(ALL_CODES).min() == -32256
    assert tel.mulaw_to_pcm16(np.array([0x00], np.uint8))[0] == -32124
    assert tel.alaw_to_pcm16(np.array([0x55], np.uint8))[0] == -8


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_decode_encode_is_identity_on_codes(law):
    enc, dec = (tel.mulaw_encode, tel.mulaw_decode) if law == "mulaw" else (tel.alaw_encode, tel.alaw_decode)
    codes = ALL_CODES
    again = enc(dec(codes))
    if law == "mulaw":
        # 0x7F (negative zero) decodes to 0, which encodes as 0xFF (positive zero).
        keep = codes != 0x7F
        assert np.array_equal(again[keep], codes[keep])
        assert again[0x7F] == 0xFF
    else:
        assert np.array_equal(again, codes)


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_float_roundtrip_error_is_companded(law):
    enc, dec = (tel.mulaw_encode, tel.mulaw_decode) if law == "mulaw" else (tel.alaw_encode, tel.alaw_decode)
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.9, 0.9, 20000).astype(np.float32)
    y = dec(enc(x))
    assert y.dtype == np.float32 and y.shape == x.shape
    # Segmented companding: error below ~1/32 of the magnitude (4 quantisation bits), plus a small floor.
    assert np.all(np.abs(y - x) <= np.abs(x) / 32 + 2e-3)
    snr_db = 10 * np.log10(np.sum(x**2) / np.sum((y - x) ** 2))
    assert 30 < snr_db < 45  # G.711 gives ~38 dB on full-scale signals


def test_encode_keeps_shape_and_clips():
    x = np.array([[2.0, -2.0], [1.0, -1.0]], dtype=np.float32)
    codes = tel.mulaw_encode(x)
    assert codes.shape == (2, 2) and codes.dtype == np.uint8
    assert codes[0, 0] == codes[1, 0] == 0x80  # largest positive code
    assert codes[0, 1] == codes[1, 1] == 0x00  # largest negative code


def _tone(freq_hz: float, rate_hz: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _band_power(x: np.ndarray, rate_hz: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate_hz)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_roundtrip_is_narrowband(law):
    rate = 16000
    speechy = _tone(1000, rate, 1.0)
    high = _tone(6000, rate, 1.0)
    out = tel.g711_roundtrip(speechy + high, rate, law=law)
    assert out.shape == speechy.shape and out.dtype == np.float32
    # The 1 kHz tone passes, the 6 kHz tone (above the 4 kHz phone band) is gone.
    assert _band_power(out, rate, 900, 1100) > 0.9 * _band_power(speechy, rate, 900, 1100)
    assert _band_power(out, rate, 5500, 6500) < 1e-4 * _band_power(high, rate, 5500, 6500)


def test_g711_roundtrip_stereo_and_8k():
    x = np.stack([_tone(500, 8000, 0.5), _tone(700, 8000, 0.5)], axis=1)
    out = tel.g711_roundtrip(x, 8000, law="alaw")
    assert out.shape == x.shape
    assert np.array_equal(out, tel.alaw_decode(tel.alaw_encode(x)))


def test_g711_roundtrip_rejects_unknown_law():
    with pytest.raises(ConfigError, match=r"G\.711 law"):
        tel.g711_roundtrip(np.zeros(100, np.float32), 16000, law="gsm")  # type: ignore[arg-type]


def test_decode_raw_formats():
    x = np.array([0.0, 0.25, -0.5, 0.999], dtype=np.float32)
    assert np.array_equal(tel.decode_raw(tel.mulaw_encode(x).tobytes(), "mulaw"), tel.mulaw_decode(tel.mulaw_encode(x)))
    assert np.array_equal(tel.decode_raw(tel.alaw_encode(x).tobytes(), "alaw"), tel.alaw_decode(tel.alaw_encode(x)))
    pcm = tel.float_to_pcm16(x)
    assert np.array_equal(tel.decode_raw(pcm.astype("<i2").tobytes(), "s16le"), pcm.astype(np.float32) / 32768)
    with pytest.raises(AudioInputError, match="multiple"):
        tel.decode_raw(b"\x00\x01\x02", "s16le")
    with pytest.raises(ConfigError, match=r"raw PCM format 'mp3' is not supported; supported formats: s16le \(16-bit"):
        tel.decode_raw(b"", "mp3")


@pytest.mark.parametrize(("subtype", "law"), [("ULAW", "mulaw"), ("ALAW", "alaw")])
def test_g711_wav_reads_through_audio_io(tmp_path: Path, subtype, law):
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal((8000, 2))).clip(-1, 1).astype(np.float32)
    path = tmp_path / f"call_{law}.wav"
    sf.write(str(path), x, 8000, subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    data, rate = read_audio(path)
    assert rate == 8000 and data.shape == (8000, 2)
    # libsndfile's G.711 decoder agrees bit for bit with ours on the stored bytes.
    stored = _wav_data_chunk(path.read_bytes())
    decoded = tel.decode_raw(stored, law).reshape(-1, 2)
    assert np.array_equal(data, decoded)


def _wav_data_chunk(blob: bytes) -> bytes:
    """The payload of a RIFF/WAVE file's ``data`` chunk."""
    pos = 12
    while pos + 8 <= len(blob):
        tag, size = blob[pos : pos + 4], int.from_bytes(blob[pos + 4 : pos + 8], "little")
        if tag == b"data":
            return blob[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


# ---------------------------------------------------------------- the raw-format table

# Largest decode(encode(x)) - x per format for x in [-1, 1): half a quantisation step for the
# linear formats, half the widest G.711 segment step (plus the 14/13-bit input truncation).
ROUND_TRIP_ATOL = {"s16le": 0.5 / 32768, "s32le": 1e-7, "f32le": 0.0, "mulaw": 0.032, "alaw": 0.032}


def test_the_table_holds_the_five_formats_with_their_sizes():
    assert {name: f.bytes_per_sample for name, f in tel.RAW_FORMATS.items()} == {
        "s16le": 2,
        "s32le": 4,
        "f32le": 4,
        "mulaw": 1,
        "alaw": 1,
    }
    assert all(f.name == name and f.description for name, f in tel.RAW_FORMATS.items())
    assert next(iter(tel.RAW_FORMATS)) == "s16le"


@pytest.mark.parametrize("fmt", list(tel.RAW_FORMATS))
def test_every_format_round_trips(fmt):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-1, 1, 4000), [0.0, -1.0, 32767 / 32768, 1e-6, -1e-6]]).astype(np.float32)
    data = tel.encode_raw(x, fmt)
    assert len(data) == x.size * tel.bytes_per_sample(fmt)
    y = tel.decode_raw(data, fmt)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, rtol=0, atol=ROUND_TRIP_ATOL[fmt] + 1e-9)
    # Decoded values are fixed points: a second round trip changes nothing.
    assert np.array_equal(tel.decode_raw(tel.encode_raw(y, fmt), fmt), y)


@pytest.mark.parametrize("fmt", list(tel.RAW_FORMATS))
def test_interleaved_channels_round_trip_in_frame_order(fmt):
    x = np.array([[0.5, -0.25], [0.0, 0.125]], dtype=np.float32)
    y = tel.decode_raw(tel.encode_raw(x, fmt), fmt).reshape(-1, 2)
    np.testing.assert_allclose(y, x, rtol=0, atol=ROUND_TRIP_ATOL[fmt] + 1e-9)


def test_format_names_are_case_insensitive_and_unknown_ones_list_the_table():
    assert tel.raw_format("S16LE") is tel.RAW_FORMATS["s16le"]
    with pytest.raises(ConfigError) as info:
        tel.raw_format("u8")
    message = str(info.value)
    assert "'u8'" in message and "--format" in message
    for name, fmt in tel.RAW_FORMATS.items():
        assert f"{name} ({fmt.description})" in message


def test_float_to_pcm16_rounds_and_clips():
    x = np.array([0.0, 0.4 / 32768, 0.6 / 32768, -0.6 / 32768, 1.0, -1.0, 2.0, -2.0], dtype=np.float32)
    assert tel.float_to_pcm16(x).tolist() == [0, 0, 1, -1, 32767, -32768, 32767, -32768]
    assert tel.float_to_pcm16_bytes(x) == tel.float_to_pcm16(x).astype("<i2").tobytes()
    assert tel.float_to_pcm16_bytes(x) == tel.encode_raw(x, "s16le")
    assert np.array_equal(tel.pcm16_to_float(ALL_PCM), ALL_PCM.astype(np.float32) / 32768)
    assert np.array_equal(tel.float_to_pcm16(tel.pcm16_to_float(ALL_PCM)), ALL_PCM)


def test_as_law_checks_the_name():
    assert tel.as_law("alaw") == "alaw"
    with pytest.raises(ConfigError, match=r"G\.711 law is 'gsm'"):
        tel.as_law("gsm")
