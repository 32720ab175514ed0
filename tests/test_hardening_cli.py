"""Issue 9 hardening of the command line: global options (2), runtime-only install (9), exit codes (12), paths (13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, fixture_clip, one_clip_ravdess_zip, run_cli

from emostream.apps import cli

CLIP = fixture_clip(1, 5)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- 2: global options before a command


def test_global_options_move_after_the_command_that_takes_them() -> None:
    parser = cli.build_parser()
    assert cli.hoist_global_options(parser, ["--model", "cnn", "analyze", "f.wav"]) == [
        "analyze",
        "--model",
        "cnn",
        "f.wav",
    ]
    assert cli.hoist_global_options(parser, ["--config=c.toml", "--thr", "2", "analyze", "f.wav"]) == [
        "analyze",
        "--config=c.toml",
        "--threads",
        "2",
        "f.wav",
    ]
    assert cli.hoist_global_options(parser, ["--file", "a.wav", "--fast"]) == ["--file", "a.wav", "--fast"]


def test_a_bad_model_before_analyze_is_not_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "--model", "nope", "analyze", str(CLIP))
    assert code == 5 and "no shipped model named 'nope'" in err


def test_a_config_before_analyze_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[model]\nname = "no_such_model"\n', encoding="utf-8")
    code, _, err = run_main(capsys, "--config", str(config), "analyze", str(CLIP))
    assert code == 5 and "no_such_model" in err


def test_a_live_option_before_a_command_is_refused_naming_where_it_belongs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "--jsonl", "x.jsonl", "analyze", str(CLIP))
    assert code == 2 and out == ""
    assert "--jsonl was given before `analyze`" in err and "emostream analyze --help" in err


def test_plugins_load_when_the_command_follows_options() -> None:
    assert cli._wants_plugins(["--config", "cc.toml", "calls", "DIR", "--out", "O"])
    assert not cli._wants_plugins(["--model", "cnn", "analyze", "f.wav"])
    assert not cli._wants_plugins(["--file", "x.wav", "--fast"])


def test_config_before_calls_is_honoured(tmp_path: Path, model_arg: str) -> None:
    config = tmp_path / "cc.toml"
    config.write_text(f"[model]\nname = {json.dumps(model_arg)}\n", encoding="utf-8")
    calls = tmp_path / "calls"
    calls.mkdir()
    (calls / "a.flac").write_bytes(CLIP.read_bytes())
    out = tmp_path / "out"
    proc = run_cli("--config", str(config), "calls", str(calls), "--out", str(out), "--no-png", "--no-progress")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (
        json.loads((out / "a.json").read_text())["model"]
        == json.loads((out / "batch_summary.json").read_text())["model"]
    )


# ---------------------------------------------------------------- 12: exit codes


def test_empty_stdin_exits_3_like_an_empty_file(model_arg: str) -> None:
    proc = run_cli("--stdin", "--rate", "16000", "--no-dashboard", "--model", model_arg, input_bytes=b"")
    assert proc.returncode == 3
    assert "stdin ended without any audio" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()


def test_too_short_stdin_exits_3_like_a_too_short_file(model_arg: str, tmp_path: Path) -> None:
    pcm = (np.sin(np.arange(3200) / 7) * 8000).astype("<i2").tobytes()  # 0.2 s at 16 kHz
    jsonl = tmp_path / "out.jsonl"
    argv = ["--stdin", "--rate", "16000", "--no-dashboard", "--model", model_arg, "--jsonl", str(jsonl)]
    proc = run_cli(*argv, input_bytes=pcm)
    assert proc.returncode == 3, proc.stderr.decode()
    assert "stdin ended after 0.20 s of audio; at least 0.5 s" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "end"]  # no reading from 0.2 s, every record whole
    enough = (np.sin(np.arange(9600) / 7) * 8000).astype("<i2").tobytes()  # 0.6 s: analysed
    assert run_cli(*argv, input_bytes=enough).returncode == 0


def test_a_too_short_file_exits_3_live_and_in_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(3200, np.float32), 16000)
    for argv in (["--file", str(short), "--fast", "--no-dashboard"], ["analyze", str(short)]):
        code, _, err = run_main(capsys, *argv)
        assert code == 3 and "0.20 s of audio is too short; at least 0.5 s" in err, argv


def test_a_truncated_wav_warns_and_exits_3_live_and_in_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full = tmp_path / "full.wav"
    sf.write(full, (np.sin(np.arange(16000 * 39) / 9) * 0.2).astype(np.float32), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * 15040])  # the header still says 39 s
    for argv in (["--file", str(cut), "--fast", "--no-dashboard"], ["analyze", "--jsonl", str(cut)]):
        code, out, err = run_main(capsys, *argv)
        assert code == 3, argv
        assert "the header says 39.00 s of audio but the file holds 0.94 s" in err, argv
    assert json.loads(out)["warning"].startswith(str(cut))


def test_an_internal_error_exits_1_with_a_report_hint_and_the_traceback_on_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_devices", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    code, _, err = run_main(capsys, "devices")
    assert code == 1 and "internal error: RuntimeError: boom" in err and "EMOSTREAM_DEBUG=1" in err
    assert "Traceback" not in err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    code, _, err = run_main(capsys, "devices")
    assert code == 1 and "Traceback" in err


# ---------------------------------------------------------------- 13: paths


def test_analyze_a_folder_analyses_its_audio_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = FIXTURES / "Actor_02"
    code, out, _ = run_main(capsys, "analyze", "--jsonl", str(folder))
    assert code == 0
    paths = [json.loads(line)["path"] for line in out.splitlines()]
    assert paths == sorted(str(p) for p in folder.glob("*.flac")) and len(paths) >= 2
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, out, err = run_main(capsys, "analyze", "--jsonl", str(empty))
    assert code == 3 and "a folder without audio files" in err and ".wav" in err


@pytest.mark.parametrize("target", ["file", "/proc/emostream-out"])
def test_calls_out_that_cannot_be_a_folder_exits_2(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str], model_arg: str
) -> None:
    out = tmp_path / "existing.txt" if target == "file" else Path(target)
    if target == "file":
        out.write_text("x")
    code, _, err = run_main(capsys, "calls", str(CLIP), "--out", str(out), "--model", model_arg, "--no-progress")
    assert code == 2 and f"--out {out}" in err and "Traceback" not in err


# ---------------------------------------------------------------- 9: runtime-only install

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCK = {"tensorflow", "keras", "scipy", "sklearn", "matplotlib"}
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    from emostream.apps.cli import main
    code = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
    print("BLOCKED-LOADED", loaded, file=sys.stderr)
    sys.exit(code)
    """
)


def run_runtime_only(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, *argv], capture_output=True, text=True, timeout=120, check=False, env=os.environ
    )


@pytest.mark.parametrize("command", [["train", "--data", "D"], ["evaluate", "--out", "R"]])
def test_training_commands_without_the_extras_say_how_to_install_them(command: list[str]) -> None:
    proc = run_runtime_only(*command)
    assert proc.returncode == 2, proc.stderr
    assert "needs the training extras" in proc.stderr and "pip install 'emostream[train]'" in proc.stderr
    assert "reinstall" not in proc.stderr and "Traceback" not in proc.stderr


def test_fetch_ravdess_runs_without_tensorflow_or_scipy(tmp_path: Path) -> None:
    archive, md5 = one_clip_ravdess_zip(tmp_path)
    dest = tmp_path / "out"
    proc = run_runtime_only("fetch-ravdess", str(dest), "--zip", str(archive), "--md5", md5)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "Actor_05" / "03-01-05-02-01-01-05.flac").is_file()
    assert "BLOCKED-LOADED []" in proc.stderr


def test_a_file_run_without_webhooks_imports_neither_http_client_nor_numpy_ma(tmp_path: Path) -> None:
    """Start-up and exit cost: ``http.client`` (with ``email``) is for webhook alerts only and ``numpy.ma``
    came in through ``np.median`` of the summary; a plain file run needs neither."""
    code = textwrap.dedent(
        """
        import sys
        from emostream.apps.cli import main
        code = main(sys.argv[1:])
        print("LOADED", sorted(m for m in ("http.client", "email.parser", "numpy.ma") if m in sys.modules),
              file=sys.stderr)
        sys.exit(code)
        """
    )
    argv = ["--file", str(CLIP), "--fast", "--no-dashboard", "--model", "fast", "--jsonl", str(tmp_path / "o.jsonl")]
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, check=False, env=os.environ
    )
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stderr
