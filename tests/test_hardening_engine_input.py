"""Issue 9, item 4: garbage input is refused (non-finite, implausible) or flagged (constant), never analysed quietly."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip, run_cli

from emostream.api import Monitor
from emostream.audio.files import load_mono
from emostream.config import Config
from emostream.engine.checks import MAX_PEAK, InputChecker
from emostream.engine.plan import make_plan
from emostream.engine.session import Session
from emostream.errors import AudioInputError
from emostream.inference.model import EmotionModel

RUN = ("--fast", "--no-dashboard", "--jsonl", "-")


def session(model: EmotionModel, channels: int = 1, rate: int = 16000) -> Session:
    return Session(make_plan(Config(), model), input_rate_hz=rate, channels=channels)


def test_nan_is_refused_naming_sample_time_and_channel(model: EmotionModel) -> None:
    s = session(model, channels=2)
    s.feed(np.zeros((16000, 2), dtype=np.float32))
    bad = np.zeros((800, 2), dtype=np.float32)
    bad[100, 1] = np.nan
    with pytest.raises(AudioInputError) as err:
        s.feed(bad)
    text = str(err.value)
    assert "non-finite" in text and "sample 16100" in text and "1.006 s" in text and "channel 1" in text
    assert err.value.exit_code == 3


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinities_are_refused(model: EmotionModel, value: float) -> None:
    block = np.zeros(1600, dtype=np.float32)
    block[7] = value
    with pytest.raises(AudioInputError, match=r"sample 7 .*channel 0"):
        session(model).feed(block)


def test_values_far_outside_full_scale_are_refused_naming_the_format(model: EmotionModel) -> None:
    block = (np.random.default_rng(0).standard_normal(1600) * 3000).astype(np.float32)
    with pytest.raises(AudioInputError, match="--format") as err:
        session(model).feed(block)
    assert "implausible" in str(err.value)


def test_hot_but_plausible_float_audio_is_analysed(model: EmotionModel) -> None:
    s = session(model)
    s.feed(np.full(1600, MAX_PEAK * 0.9, dtype=np.float32) * np.sign(np.sin(np.arange(1600))))
    assert s.warnings == []


def test_constant_signal_warns_once_and_zeros_do_not(model: EmotionModel) -> None:
    s = session(model, channels=2)
    block = np.zeros((800, 2), dtype=np.float32)
    block[:, 1] = 0.25
    for _ in range(50):  # 2.5 s
        s.feed(block)
    assert len(s.warnings) == 1 and "channel 1" in s.warnings[0] and "constant" in s.warnings[0]
    assert "--format" in s.warnings[0]
    s.reset()
    assert s.warnings == []


def test_checker_tracks_constant_runs_across_blocks_and_breaks_on_change() -> None:
    c = InputChecker(1000, 1)
    c.check(np.full((600, 1), 0.5, dtype=np.float32), 0)
    c.check(np.full((300, 1), 0.4, dtype=np.float32), 600)  # another value: the run restarts
    c.check(np.full((600, 1), 0.4, dtype=np.float32), 900)
    assert c.warnings == []
    c.check(np.full((200, 1), 0.4, dtype=np.float32), 1500)
    assert len(c.warnings) == 1


def test_api_blocks_are_checked(model_arg: str) -> None:
    mon = Monitor(model_arg, sample_rate_hz=16000)
    block = np.zeros(800, dtype=np.float32)
    block[3] = np.nan
    with pytest.raises(AudioInputError, match="non-finite"):
        mon.feed(block)


def _no_warning_text(stderr: bytes) -> None:
    text = stderr.decode()
    assert "RuntimeWarning" not in text and "Traceback" not in text, text


def test_cli_refuses_a_float_wav_with_nan_exit_3_under_warnings_as_errors(model_arg: str, tmp_path) -> None:
    audio = load_mono(fixture_clip(1, 5), 16000)
    audio[20000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    proc = run_cli("--file", str(path), *RUN, "--model", model_arg, env={"PYTHONWARNINGS": "error"})
    assert proc.returncode == 3, proc.stderr.decode()
    assert b"non-finite" in proc.stderr and b"sample 20000 (1.250 s), channel 0" in proc.stderr
    _no_warning_text(proc.stderr)


def test_cli_refuses_16_bit_pcm_piped_as_f32le_naming_the_format(model_arg: str) -> None:
    audio = load_mono(fixture_clip(1, 5), 16000)
    pcm = (audio * 32767).astype("<i2").tobytes()
    proc = run_cli(
        "--stdin",
        "--rate",
        "16000",
        "--format",
        "f32le",
        *RUN[1:],
        "--model",
        model_arg,
        input_bytes=pcm,
        env={"PYTHONWARNINGS": "error"},
    )
    assert proc.returncode == 3, proc.stderr.decode()
    assert b"--format" in proc.stderr
    _no_warning_text(proc.stderr)


def test_cli_warns_about_a_dc_signal_and_exits_0(model_arg: str, tmp_path) -> None:
    path = tmp_path / "dc.wav"
    sf.write(path, np.full(48000, 0.3, dtype=np.float32), 16000, subtype="FLOAT")
    proc = run_cli("--file", str(path), *RUN, "--model", model_arg, env={"PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"constant value" in proc.stderr
    _no_warning_text(proc.stderr)


def test_random_bytes_are_warned_about_as_not_audio(model_arg: str) -> None:
    noise = np.random.default_rng(3).integers(-32768, 32767, 24000).astype("<i2").tobytes()  # 1.5 s
    argv = ["--stdin", "--rate", "16000", *RUN[1:], "--model", model_arg]
    proc = run_cli(*argv, input_bytes=noise, env={"PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"sounds like random data, not audio" in proc.stderr and b"--format" in proc.stderr
    _no_warning_text(proc.stderr)


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_speech_at_full_scale_is_not_taken_for_random_data(rate: int) -> None:
    checker = InputChecker(rate, 1)
    for emotion in (1, 5, 8):
        x = load_mono(fixture_clip(2, emotion), rate)
        x = (x / np.max(np.abs(x)) * 0.99).astype(np.float32)
        for start in range(0, x.size, rate // 20):
            checker.check(x[start : start + rate // 20].reshape(-1, 1), start)
    assert checker.warnings == []
