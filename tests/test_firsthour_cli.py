"""Issue 19, the first hour of a new user: the command line, file reading, the API and JSONL records.

Items 1, 5, 6, 9, 10, 11, 12, 13, 15, 16, 17, 18 of the issue; each test reproduces what a
user did (the CLI in-process or as a subprocess, files written with soundfile).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
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


# ---------------------------------------------------------------- 10: a closed standard output


def pcm16_of_clip() -> bytes:
    samples, _ = speech()
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.mark.parametrize(("output", "silence"), [(["--jsonl", "-"], False), ([], False), ([], True)])
def test_the_run_ends_when_the_reader_of_stdout_goes_away(output: list[str], silence: bool) -> None:
    """``emostream --stdin ... | head -1`` with endless input: the run ends (exit 0, quietly) instead of running on;
    also when nothing is being written (endless silence: the change printer has nothing to say)."""
    clip = bytes(32000) if silence else pcm16_of_clip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream", "--stdin", "--rate", "16000", "--no-dashboard", *output],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    def feed() -> None:  # endless input, until emostream stops reading
        try:
            while True:
                proc.stdin.write(clip)  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError, OSError):
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    if not silence:
        first = proc.stdout.readline()
        assert first, proc.stderr.read().decode()
    proc.stdout.close()  # what `head -1` does after its line
    try:
        code = proc.wait(timeout=120)  # a hang guard, not a timing: on the old code it never ended
    finally:
        proc.kill()
    err = proc.stderr.read().decode()
    assert code == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err, err


def test_analyze_jsonl_into_a_closed_pipe_exits_0_quietly(tmp_path: Path) -> None:
    paths = [str(CLIP), str(fixture_clip(1, 3)), str(fixture_clip(2, 4))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream", "analyze", "--jsonl", *paths],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first record
    code = proc.wait(timeout=120)
    err = proc.stderr.read().decode()
    assert code == 0 and "internal error" not in err and "Traceback" not in err, err


# ---------------------------------------------------------------- 11: Ctrl-C or SIGTERM during start-up

SIGNAL_AT_IMPORT = """
import os, signal, sys
def hook(event, args):
    if event == "import" and args[0] == {module!r} and not sent:
        sent.append(1)
        os.kill(os.getpid(), signal.{sig})
sent = []
sys.addaudithook(hook)
sys.argv = ["emostream", *{argv!r}]
from emostream.apps.cli import main  # as the console script does
sys.exit(main())
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.parametrize("module", ["numpy", "emostream.engine.plan", "emostream.engine.runner"])
def test_a_signal_during_start_up_ends_the_run_cleanly_with_its_records(
    tmp_path: Path, sig: str, code: int, module: str
) -> None:
    """The signal arrives while a module loads (start-up: ~0.4 s of imports and the model): no traceback,
    the --jsonl file holds its start and end records, the exit code is the signal's."""
    jsonl = tmp_path / "out.jsonl"
    argv = ["--file", str(CLIP), "--no-dashboard", "--jsonl", str(jsonl)]
    script = SIGNAL_AT_IMPORT.format(module=module, sig=sig, argv=argv)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [r["type"] for r in records] == ["start", "end"], records
    assert records[-1]["exit_reason"] == "interrupted"


def test_a_signal_during_start_up_of_analyze_exits_130_without_a_traceback() -> None:
    script = SIGNAL_AT_IMPORT.format(module="numpy", sig="SIGINT", argv=["analyze", str(CLIP)])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_the_console_script_module_loads_no_numpy() -> None:
    """What runs before main() installs its handlers is small: no numpy, no model code."""
    code = (
        "import sys, emostream.apps.cli; print(sorted(m for m in sys.modules if m.startswith(('numpy', 'soundfile'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------- 5: math-library threads

THREADS_PROBE = """
import json, os, sys
import numpy  # loaded first, as an embedding program does
from threadpoolctl import threadpool_info
import emostream
def blas() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
before = blas()
seen = []
mon = emostream.Monitor(sample_rate_hz=8000)
import emostream.engine.session as session_module
feed = session_module.Session.feed
def spy(self, block):
    seen.append(blas())
    return feed(self, block)
session_module.Session.feed = spy
mon.feed(numpy.zeros(8000, numpy.float32))
print(json.dumps({"before": before, "inside": seen[0], "after": blas()}))
"""


def test_the_api_runs_with_one_blas_thread_and_gives_the_host_its_setting_back() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_NUM_THREADS", "_MAXIMUM_THREADS"))}
    proc = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["inside"] == [1] * len(found["inside"]) and found["inside"], found
    assert found["after"] == found["before"], found


CLI_THREADS_PROBE = """
import json, multiprocessing, os, sys
from emostream.apps import cli
def child(queue):
    import numpy  # loads OpenBLAS, which reads its thread count from the inherited environment
    from threadpoolctl import threadpool_info
    queue.put([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
def probe(args):
    from threadpoolctl import threadpool_info
    ctx = multiprocessing.get_context("spawn")  # as the server starts its workers
    queue = ctx.Queue()
    worker = ctx.Process(target=child, args=(queue,))
    worker.start()
    worker_threads = queue.get(timeout=60)
    worker.join()
    own = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    print(json.dumps({"own": own, "worker": worker_threads}))
    return 0
cli.cmd_analyze = probe  # `emostream analyze` runs the probe, after main() set up the process
if __name__ == "__main__":
    sys.exit(cli.main(["analyze", sys.argv[1]]))
"""


def test_the_cli_and_the_processes_it_starts_use_one_blas_thread(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(CLI_THREADS_PROBE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_NUM_THREADS", "_MAXIMUM_THREADS"))}
    proc = subprocess.run(
        [sys.executable, str(script), str(CLIP)], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["own"] == [1] and found["worker"] == [1], found


def test_a_thread_count_the_user_set_is_kept(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(CLI_THREADS_PROBE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_NUM_THREADS", "_MAXIMUM_THREADS"))}
    env["OPENBLAS_NUM_THREADS"] = "2"
    proc = subprocess.run(
        [sys.executable, str(script), str(CLIP)], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"own": [2], "worker": [2]}


# ---------------------------------------------------------------- 15: calls stream their recordings


def test_calls_read_a_recording_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call is decoded a block at a time (memory bounded by the block, not the call's length)."""
    from emostream.apps.calls.analysis import CHUNK_S, CallAnalyzer, CallJob
    from emostream.config import Config

    samples, _ = speech()
    rate = 8000
    mono = np.resize(samples[::2], 35 * rate)  # 35 s at 8 kHz (decimated is fine for this test)
    path = tmp_path / "call.wav"
    sf.write(path, np.stack([mono, mono[::-1]], axis=1), rate, subtype="PCM_16")
    requested: list[int] = []
    read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> object:
        requested.append(frames)
        return read(self, frames, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    summary, runs = CallAnalyzer(Config()).analyze(CallJob(path=path, key="call"))
    assert requested and all(0 < n <= CHUNK_S * rate for n in requested), requested
    assert len(requested) >= 4  # 35 s in blocks of at most 10 s
    assert summary["duration_s"] == 35.0 and len(summary["channels"]) == 2
    assert runs[0].hops and runs[0].hops[-1].t_end >= 34.0


def test_calls_refuse_a_call_with_nan_samples_naming_the_file(tmp_path: Path) -> None:
    from emostream.apps.calls.analysis import CallAnalyzer, CallJob
    from emostream.config import Config
    from emostream.errors import AudioInputError

    samples, rate = speech()
    stereo = np.stack([samples, samples], axis=1)
    stereo[rate + 3, 1] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")
    with pytest.raises(AudioInputError, match=r"nan\.wav: holds a non-finite sample \(nan\) at sample 16003"):
        CallAnalyzer(Config()).analyze(CallJob(path=path, key="nan"))


def test_calls_loads_only_its_own_plugin(tmp_path: Path) -> None:
    """`emostream calls` builds its parser without importing the training commands (70 MB of scipy and more)."""
    code = (
        "import sys; from emostream.apps.cli import main; "
        f"code = main(['calls', {str(tmp_path / 'none')!r}, '--out', {str(tmp_path / 'out')!r}]); "
        "print(code, sorted(m for m in sys.modules if m.startswith(('emostream.train', 'scipy', 'starlette'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr


# ---------------------------------------------------------------- 9: a --format that does not fit


@pytest.mark.parametrize("declared", ["s32le", "mulaw", "alaw"])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_16_bit_pcm_piped_with_another_format_is_warned_about(declared: str, rate: int) -> None:
    import soxr

    samples, clip_rate = speech()
    audio = np.tile(soxr.resample(samples, clip_rate, rate).astype(np.float32), 2)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    proc = run_cli("--stdin", "--rate", str(rate), "--format", declared, "--no-dashboard", input_bytes=pcm)
    err = proc.stderr.decode()
    assert f"stdin does not look like --format {declared}" in err and "like s16le" in err, err
    assert proc.returncode == 0  # analysed, warned about (as white noise is)


@pytest.mark.parametrize("fmt", ["s16le", "s32le", "f32le", "mulaw", "alaw"])
def test_the_format_check_passes_every_format_read_as_itself(fmt: str) -> None:
    import soxr

    from emostream.audio.codecs import encode_raw
    from emostream.audio.format_probe import format_mismatch

    decided_any = False
    for actor in (1, 2):
        for emotion in range(1, 9):
            samples, clip_rate = sf.read(fixture_clip(actor, emotion), dtype="float32")
            for rate in (8000, 16000):
                data = encode_raw(soxr.resample(samples, clip_rate, rate), fmt)
                stretch = 2 * rate * {"mulaw": 1, "alaw": 1, "s16le": 2}.get(fmt, 4)
                for start in range(0, max(1, len(data) - stretch + 1), stretch):
                    decided, message = format_mismatch(data[start : start + stretch], fmt)
                    assert message is None, (actor, emotion, rate, message)
                    decided_any = decided_any or decided
    assert decided_any
