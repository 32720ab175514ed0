"""Issue 19, the first hour of a new user: the command line, file reading, the API and JSONL records.

Items 1, 5, 6, 9, 10, 11, 12, 13, 15, 16, 17, 18 of the issue; each test reproduces what a
user did (the CLI in-process or as a subprocess, files written with soundfile).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip, run_cli

from emostream.apps import cli

CLIP = fixture_clip(1, 5)  # angry, 16 kHz mono


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def speech(seconds: float | None = None) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(CLIP, dtype="float32")
    if seconds is not None:
        samples = np.resize(samples, int(seconds * rate))
    return samples, rate


# ---------------------------------------------------------------- 1: broken float files


def broken_file(tmp_path: Path, kind: str) -> Path:
    """A float WAV of the fixture clip with NaN, inf or a peak of 37.5 in the middle of the speech."""
    samples, rate = speech()
    samples = samples.copy()
    if kind == "nan":
        samples[rate : rate + 100] = np.nan
    elif kind == "inf":
        samples[rate + 7] = np.inf
    else:
        samples = samples / np.abs(samples).max() * 37.5
    path = tmp_path / f"{kind}.wav"
    sf.write(path, samples, rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("kind", ["nan", "inf", "loud"])
def test_analyze_refuses_a_float_file_with_nan_inf_or_a_huge_peak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = broken_file(tmp_path, kind)
    code, out, err = run_main(capsys, "analyze", "--jsonl", str(path))
    assert code == 3, err
    record = json.loads(out)
    assert record["emotion"] is None and record["error"].startswith(f"{path}: ")
    assert "non-finite" in record["error"] or "implausible" in record["error"]
    assert "--format" not in record["error"]  # a file has no --format: the hint is about the file


def test_analyze_of_a_nan_file_prints_no_numpy_warning() -> None:
    # a subprocess: numpy's RuntimeWarnings go to the real stderr there
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = broken_file(Path(folder), "nan")
        proc = run_cli("analyze", str(path))
    err = proc.stderr.decode()
    assert proc.returncode == 3 and "RuntimeWarning" not in err and "Traceback" not in err, err
    assert err.count(str(path)) == 1, err  # the path once, not repeated by the message


@pytest.mark.parametrize("kind", ["nan", "loud"])
def test_calibrate_refuses_a_broken_file_and_writes_no_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = broken_file(tmp_path, kind)
    profile = tmp_path / "p.json"
    code, _, err = run_main(capsys, "calibrate", str(path), "--out", str(profile))
    assert code == 3 and str(path) in err, err
    assert not profile.exists()
    code, _, err = run_main(capsys, "analyze", "--calibrate", str(path), str(CLIP))
    assert code == 3 and str(path) in err


def test_file_source_gives_the_file_message_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = broken_file(tmp_path, "inf")
    code, _, err = run_main(capsys, "--file", str(path), "--fast", "--no-dashboard")
    assert code == 3 and f"{path}: " in err and "--format" not in err, err


# ---------------------------------------------------------------- 6: the default model in --help


@pytest.mark.parametrize("command", [[], ["analyze"], ["calibrate"]])
def test_help_names_the_real_default_model(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from emostream.inference.metadata import DEFAULT_MODEL

    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DEFAULT_MODEL})" in out and "resnet_mlp)" not in out


def test_load_model_docstring_names_the_real_default() -> None:
    from emostream.api import load_model
    from emostream.inference.metadata import DEFAULT_MODEL

    assert f"default ``{DEFAULT_MODEL}``" in (load_model.__doc__ or "")


# ---------------------------------------------------------------- 12: secrets in the start record


def test_webhook_credentials_stay_out_of_the_jsonl_start_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        textwrap.dedent(
            """
            [[alerts]]
            name = "angry"
            emotions = ["angry"]
            threshold = 0.99
            min_duration_s = 60
            [alerts_output]
            webhook = "https://user:pa55word@hooks.example.com/x/y?key=s3cr3t&team=a"
            """
        ),
        encoding="utf-8",
    )
    jsonl = tmp_path / "out.jsonl"
    argv = ["--config", str(config), "--file", str(CLIP), "--fast", "--no-dashboard", "--jsonl", str(jsonl)]
    code, _, err = run_main(capsys, *argv)
    assert code == 0, err
    text = jsonl.read_text(encoding="utf-8")
    assert "pa55word" not in text and "s3cr3t" not in text and "user:" not in text
    start = json.loads(text.splitlines()[0])
    assert start["config"]["alerts_output"]["webhook"] == "https://***@hooks.example.com/***"


# ---------------------------------------------------------------- 16: empty stdin, RTF wording


def test_empty_stdin_prints_the_error_once_and_no_speed() -> None:
    for given in (b"", b"\x01"):  # nothing, or less than a frame
        proc = run_cli("--stdin", "--rate", "16000", "--no-dashboard", input_bytes=given)
        shown = proc.stdout.decode() + proc.stderr.decode()  # what the terminal shows
        assert proc.returncode == 3
        assert shown.count("stdin ended without any audio") == 1, shown
        assert "real time" not in shown and "RTF" not in shown, shown


def test_the_speed_line_says_what_the_real_time_factor_means(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--file", str(CLIP), "--fast", "--no-dashboard")
    assert code == 0
    line = next(x for x in out.splitlines() if "speed" in x)
    assert "x real time" not in line and "× real time" not in line
    assert "% of the audio's duration" in line, line


# ---------------------------------------------------------------- 17: messages


def test_a_broken_call_file_is_named_once_and_the_hint_keeps_the_channels(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    calls.mkdir()
    bad = calls / "broken.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    proc = run_cli("calls", str(calls), "--out", str(tmp_path / "out"), "--no-png")
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert err.count("broken.wav") == 1, err
    assert "-ac 1" not in err


def test_load_model_with_a_path_that_is_not_a_model_says_so() -> None:
    from emostream.api import load_model
    from emostream.errors import ModelError

    with pytest.raises(ModelError) as info:
        load_model("/etc/passwd")
    message = str(info.value)
    assert "no shipped model" not in message and "/etc/passwd" in message and ".json" in message


@pytest.mark.parametrize(("dtype", "hint"), [("uint8", "128"), ("int32", "2**31"), ("int8", "128")])
def test_the_api_dtype_hint_fits_the_dtype(dtype: str, hint: str) -> None:
    from emostream.api import as_float_block
    from emostream.errors import AudioInputError

    with pytest.raises(AudioInputError) as info:
        as_float_block(np.zeros(160, dtype=dtype), 1)
    message = str(info.value)
    assert dtype in message and hint in message
    if dtype == "uint8":
        assert "2**31" not in message


def test_a_truncated_file_is_reported_as_an_error_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full.wav"
    sf.write(full, speech(4.0)[0], 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * 32000])
    for argv in (["--file", str(cut), "--fast", "--no-dashboard"], ["analyze", str(cut)]):
        code, _, err = run_main(capsys, *argv)
        assert code == 3, argv
        assert "warning:" not in err and "error:" in err and "truncated" in err, argv


# ---------------------------------------------------------------- 18: options that do nothing


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--rate", "8000"], "--rate"),
        (["--format", "mulaw"], "--format"),
        (["--channels", "2"], "--channels"),
        (["--device", "1"], "--device"),
    ],
)
def test_stdin_or_device_options_with_a_file_are_refused(
    capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    code, _, err = run_main(capsys, "--file", str(CLIP), "--fast", "--no-dashboard", *extra)
    assert code == 2 and fragment in err and "--file" in err, err


def test_fast_without_a_file_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "--stdin", "--rate", "16000", "--fast", "--no-dashboard")
    assert code == 2 and "--fast" in err, err


@pytest.mark.parametrize("flag", ["--min-dwell", "--time-constant", "--hysteresis"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_smoothing_settings_are_refused(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    code, _, err = run_main(capsys, "--file", str(CLIP), "--fast", "--no-dashboard", flag, value)
    assert code == 2 and value in err, err
