"""Issue 9, item 14: fuzzing the inputs (hypothesis): random files, random PCM on stdin, random TOML configs.

Every run goes through ``emostream.apps.cli.main`` in-process and must end with a documented
exit code (never 1, the internal-error code) and without a traceback.
"""

from __future__ import annotations

import io
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emostream.apps import cli
from emostream.audio.codecs import RAW_FORMATS

DOCUMENTED = {0, 2, 3, 4, 5, 6}
FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    assert code in DOCUMENTED, f"exit {code}: {err}"
    return code, err


def valid_header(suffix: str) -> bytes:
    buffer = io.BytesIO()
    fmt = "WAV" if suffix == ".wav" else "FLAC"
    sf.write(buffer, np.zeros(800, np.int16), 16000, format=fmt, subtype="PCM_16")
    return buffer.getvalue()[:64]


# Random bytes, or a real header followed by random bytes (reaches the decoder, not only the header parser).
audio_bytes = st.one_of(
    st.binary(max_size=4096),
    st.tuples(st.sampled_from([".wav", ".flac"]), st.binary(min_size=1, max_size=40000)).map(
        lambda t: valid_header(t[0]) + t[1]
    ),
)


@FUZZ
@given(data=audio_bytes, suffix=st.sampled_from([".wav", ".flac"]))
def test_random_files_to_analyze(capsys: pytest.CaptureFixture[str], data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        code, _ = run(capsys, "analyze", "--jsonl", str(path))
        assert code in (0, 3)


@pytest.mark.slow
@FUZZ
@given(data=audio_bytes, suffix=st.sampled_from([".wav", ".flac"]))
def test_random_files_streamed_live(capsys: pytest.CaptureFixture[str], data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(data)
        code, _ = run(capsys, "--file", str(path), "--fast", "--no-dashboard", "--jsonl", str(Path(tmp) / "e.jsonl"))
        assert code in (0, 3)


@pytest.mark.slow
@FUZZ
@given(
    fmt=st.sampled_from(sorted(RAW_FORMATS)),
    data=st.binary(max_size=48000),
    layout=st.tuples(st.sampled_from([8000, 16000, 44100]), st.integers(1, 2)),
)
def test_random_pcm_on_stdin_in_every_format(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fmt: str, data: bytes, layout: tuple[int, int]
) -> None:
    rate, channels = layout
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--stdin", "--format", fmt, "--rate", str(rate), "--channels", str(channels), "--no-dashboard"]
        code, _ = run(capsys, *argv, "--jsonl", str(Path(tmp) / "e.jsonl"))
    assert code in (0, 3)


SECTIONS = ["audio", "vad", "windowing", "smoothing", "model", "output", "privacy", "calibration", "alerts", "bogus"]
KEYS = [
    "aggressiveness",
    "min_speech_ratio",
    "window_hop_ms",
    "first_window_ms",
    "method",
    "time_constant_s",
    "hysteresis",
    "min_dwell_s",
    "name",
    "num_threads",
    "enabled",
    "sample_rate_hz",
    "channels",
    "block_ms",
    "min_level_dbfs",
    "nonsense",
]
values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=3),
)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


configs = st.one_of(
    st.dictionaries(
        st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEYS), values, max_size=4), max_size=4
    ).map(
        lambda doc: "\n".join(
            f"[{section}]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in body.items())
            for section, body in doc.items()
        )
    ),
    st.text(max_size=200),  # not TOML at all, mostly
)


@FUZZ
@given(text=configs)
def test_random_toml_configs(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        run(capsys, "--config", str(path), "analyze", "--jsonl", str(fixture_clip(1, 5)))
