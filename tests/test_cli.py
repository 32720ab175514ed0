"""The emostream command end to end (subprocesses): sources, JSONL, errors, exit codes, Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_clip, run_cli

from emostream.apps.cli import _add_unavailable, build_parser
from emostream.audio.codecs import float_to_pcm16_bytes as to_pcm16
from emostream.audio.files import load_mono
from emostream.audio.sources import input_devices
from emostream.errors import EmoStreamError

RUN = ("--no-dashboard", "--jsonl", "-")


def records(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def test_file_fast_writes_start_hops_and_end(model_arg: str) -> None:
    clip = fixture_clip(2, 5)
    proc = run_cli("--file", str(clip), "--fast", *RUN, "--model", model_arg)
    assert proc.returncode == 0, proc.stderr.decode()
    recs = records(proc.stdout)
    assert recs[0]["type"] == "start" and recs[0]["rate_hz"] == 16000
    assert recs[0]["labels"] == ["neutral", "happy", "sad", "angry"]  # [labels] default
    assert recs[0]["config"]["smoothing"]["method"] == "ema"
    hops = recs[1:-1]
    assert hops and all(r["type"] == "hop" for r in hops)
    assert recs[-1]["type"] == "end" and recs[-1]["hops"] == len(hops) and recs[-1]["exit_reason"] == "end of input"
    assert any(h["emotion"] for h in hops)
    assert b"session summary" in proc.stderr  # the summary goes to stderr when stdout carries JSONL


def test_stdin_s16le_gives_the_same_hops_as_the_file(model_arg: str) -> None:
    clip = fixture_clip(2, 5)
    pcm = to_pcm16(load_mono(clip, 16000))
    piped = run_cli("--stdin", "--rate", "16000", "--format", "s16le", *RUN, "--model", model_arg, input_bytes=pcm)
    filed = run_cli("--file", str(clip), "--fast", *RUN, "--model", model_arg)
    assert piped.returncode == 0, piped.stderr.decode()

    def strip(recs: list[dict]) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k not in ("latency_ms", "source", "session_id", "time")}
            for r in recs
            if r["type"] == "hop"
        ]

    assert strip(records(piped.stdout)) == strip(records(filed.stdout))


def test_stdin_ending_mid_frame_warns_and_exits_3(model_arg: str) -> None:
    pcm = to_pcm16(load_mono(fixture_clip(1, 3), 16000)) + b"\x07"
    proc = run_cli("--stdin", "--rate", "16000", *RUN, "--model", model_arg, input_bytes=pcm)
    assert proc.returncode == 3
    assert b"emostream: error: stdin ended in the middle of a frame: the last 1 byte(s)" in proc.stderr
    recs = records(proc.stdout)
    assert recs[-1]["type"] == "end" and recs[-1]["hops"] > 0


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--stdin"], 2, "--stdin needs the sample rate"),
        (["--stdin", "--rate", "0"], 2, "[audio] sample_rate_hz is 0"),
        (["--stdin", "--rate", "16000", "--channels", "0"], 2, "[audio] channels is 0"),
        (["--stdin", "--rate", "16000", "--format", "u8"], 2, "raw PCM format 'u8' is not supported"),
        (["--hop-ms", "250"], 2, "window_hop_ms is 250 ms, not a multiple of the VAD frame"),
        (["--file", "a.wav", "--demo"], 2, "--file and --demo given; expected one source"),
        (["--duration", "0"], 2, "--duration is 0.0; expected a positive number"),
        (["--duration", "-1"], 2, "--duration is -1.0; expected a positive number"),
        (["--model", "no_such_model"], 5, "no shipped model named 'no_such_model'"),
    ],
)
def test_bad_settings_exit_with_the_error_class_code(args: list[str], code: int, fragment: str, model_arg: str) -> None:
    model = [] if "--model" in args else ["--model", model_arg]
    proc = run_cli(*args, *RUN, *model, input_bytes=b"")
    assert proc.returncode == code, proc.stderr.decode()
    assert "emostream: error: " in proc.stderr.decode()
    assert fragment in proc.stderr.decode()


def test_corrupt_file_is_an_audio_input_error(tmp_path: Path, model_arg: str) -> None:
    corrupt = tmp_path / "x.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    proc = run_cli("--file", str(corrupt), *RUN, "--model", model_arg)
    assert proc.returncode == 3
    assert "emostream: error: " in proc.stderr.decode() and "cannot be decoded as audio" in proc.stderr.decode()
    assert proc.stdout == b""


@pytest.mark.slow
@pytest.mark.skipif(bool(input_devices()), reason="this machine has input devices (see test_alsa_mic.py)")
def test_missing_device_and_demo_fallback_without_devices(model_arg: str) -> None:
    proc = run_cli("--device", "nosuch", *RUN, "--model", model_arg)
    assert proc.returncode == 4
    assert "emostream: error: no audio input device found" in proc.stderr.decode()
    demo = run_cli("--duration", "3", "--fast", *RUN, "--model", model_arg)
    assert demo.returncode == 0, demo.stderr.decode()
    assert "playing the bundled demo recording instead" in demo.stderr.decode()
    recs = records(demo.stdout)
    assert recs[0]["source"].startswith("demo") and recs[-1]["exit_reason"] == "duration reached"
    assert recs[-1]["duration_s"] == 3.0
    listing = run_cli("devices")
    assert listing.returncode == 0 and b"no audio input devices found" in listing.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_exits_130_after_the_summary_and_the_end_record(model_arg: str, sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream", "--demo", *RUN, "--model", model_arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]  # start record + two hops, delivered live
    assert json.loads(lines[0])["type"] == "start" and json.loads(lines[2])["type"] == "hop"
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err.decode()  # 128 + signal number
    recs = records(b"".join(lines) + rest)
    end = recs[-1]
    assert end["type"] == "end" and end["exit_reason"] == "interrupted"
    assert end["hops"] == len(recs) - 2
    assert end["duration_s"] < 30  # stopped long before the 77 s demo ended
    assert b"session summary" in err


def test_version_and_plugin_without_training_extras() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.decode().startswith("emostream ")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    _add_unavailable(sub, "train", ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow"))
    args = parser.parse_args(["train", "--epochs", "3"])
    with pytest.raises(EmoStreamError, match=r"install them with `pip install 'emostream\[train\]'`"):
        args.func(args)


def test_a_command_needing_tensorflow_at_run_time_says_how_to_install_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from emostream.apps import cli

    def lazy_train(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        sub.add_parser("train").set_defaults(func=lazy_train)

    original = cli.build_parser

    def parser_with_plugin(plugins: bool = False, command: str | None = None) -> argparse.ArgumentParser:
        parser = original()
        register(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)))
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_with_plugin)  # a plugin importing TensorFlow lazily
    assert cli.main(["train"]) == 2
    assert "emostream: error: `emostream train` needs the training extras" in capsys.readouterr().err


def test_run_options_parse_without_a_command() -> None:
    args = build_parser().parse_args(["--file", "x.wav", "--fast", "--smoothing", "window"])
    assert args.command is None and args.file == "x.wav" and args.fast and args.smoothing == "window"
    assert build_parser().parse_args(["analyze", "a.wav", "b.wav"]).paths == ["a.wav", "b.wav"]


@pytest.mark.slow
def test_jsonl_file_is_written_live(tmp_path: Path, model_arg: str) -> None:
    out = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream", "--demo", "--no-dashboard", "--jsonl", str(out), "--model", model_arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
            time.sleep(0.1)
        lines = out.read_text().splitlines()
        assert len(lines) >= 3 and json.loads(lines[2])["type"] == "hop"  # visible while the run goes on
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert json.loads(out.read_text().splitlines()[-1])["type"] == "end"
    assert np.isfinite(json.loads(out.read_text().splitlines()[-1])["duration_s"])


def test_ctrl_c_while_a_stdin_writer_is_silent(model_arg: str) -> None:
    pcm = to_pcm16(load_mono(fixture_clip(1, 5), 16000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream", "--stdin", "--rate", "16000", *RUN, "--model", model_arg],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(pcm)  # then keep the pipe open without writing more
    proc.stdin.flush()
    while json.loads(proc.stdout.readline()).get("t_end") != 4.0:  # the last full window of what was written
        pass
    proc.send_signal(signal.SIGINT)  # while the engine waits for more audio
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    end = records(rest)[-1]
    assert end["type"] == "end" and end["exit_reason"] == "interrupted"
    assert 4.0 <= end["duration_s"] <= round(len(pcm) / 2 / 16000, 3)
