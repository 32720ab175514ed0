"""The microphone path through real PortAudio/ALSA, with a virtual capture device.

The test writes its own ALSA configuration (``$HOME/.asoundrc`` in a temporary HOME):
a ``type file`` PCM that reads raw S16_LE 16 kHz mono audio from an ``infile`` the
test generates, with ``slave.pcm "null"``, wrapped in a ``type plug`` PCM that fixes
that format (PortAudio's ALSA host API lists the ``pcm.NAME`` entries of the user
configuration; the ``hint`` block gives it a description). ``emostream --device NAME``
then captures it through sounddevice's InputStream exactly like a microphone. The null
slave is not paced in real time, so the capture runs faster than real time (the ring
buffer counts what it must drop) and ``--duration`` bounds the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_clip, run_cli

from emostream.audio.codecs import float_to_pcm16_bytes as to_pcm16
from emostream.audio.files import load_mono

DEVICE = "emostream_test_mic"


def alsa_home(tmp_path: Path, audio: np.ndarray) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    infile = tmp_path / "mic.raw"
    infile.write_bytes(to_pcm16(audio))
    (home / ".asoundrc").write_text(
        f"""
pcm.{DEVICE}_file {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.{DEVICE} {{
    type plug
    slave {{
        pcm "{DEVICE}_file"
        format S16_LE
        rate 16000
        channels 1
    }}
    hint {{
        show on
        description "emostream virtual test microphone"
    }}
}}
""",
        encoding="utf-8",
    )
    return home


def visible_devices(home: Path) -> list[str]:
    code = (
        "import sounddevice as sd, json;"
        "print(json.dumps([d['name'] for d in sd.query_devices() if d['max_input_channels'] > 0]))"
    )
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.skip(f"PortAudio cannot be loaded: {proc.stderr.decode().strip()[-300:]}")
    return list(json.loads(proc.stdout))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    if shutil.which("aplay") is None and not Path("/usr/share/alsa/alsa.conf").exists():
        pytest.skip("ALSA (alsa-lib configuration) is not installed")
    speech = np.concatenate([load_mono(fixture_clip(1, 5), 16000), load_mono(fixture_clip(2, 4), 16000)])
    home = alsa_home(tmp_path, speech)
    if DEVICE not in visible_devices(home):
        pytest.skip("PortAudio's ALSA host API does not list PCMs from a user .asoundrc on this machine")
    return home


def test_virtual_alsa_microphone_through_portaudio(home: Path, model_arg: str) -> None:
    proc = run_cli(
        "--device", DEVICE, "--rate", "16000", "--duration", "6", "--no-dashboard", "--jsonl", "-",
        "--model", model_arg, env={"HOME": str(home)}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    recs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    start, hops, end = recs[0], recs[1:-1], recs[-1]
    assert start["type"] == "start" and DEVICE in start["source"] and start["source"].startswith("microphone")
    assert start["rate_hz"] == 16000 and start["channels"] == 1
    assert end["type"] == "end" and end["exit_reason"] == "duration reached" and end["duration_s"] == 6.0
    # 6 s of audio: the first reading after 1 s (config.toml's first_window_ms), then one every 0.5 s
    assert [h["t_end"] for h in hops] == [1.0 + 0.5 * i for i in range(11)]
    # the fixture speech came through the device (windows with under 0.6 s of speech are not read, the
    # first second's among them: issue 19, item 3)
    assert sum(h["scores"] is not None for h in hops) >= 4
    assert any(h["emotion"] is not None for h in hops)


def test_unknown_device_lists_the_available_ones(home: Path, model_arg: str) -> None:
    proc = run_cli("--device", "no such mic", "--no-dashboard", "--model", model_arg, env={"HOME": str(home)})
    assert proc.returncode == 4
    err = proc.stderr.decode()
    assert "emostream: error: no input device matches 'no such mic'" in err and DEVICE in err
    listing = run_cli("devices", env={"HOME": str(home)})
    assert listing.returncode == 0 and DEVICE in listing.stdout.decode()


def test_device_refusing_the_channel_count(home: Path, model_arg: str) -> None:
    proc = run_cli(
        "--device", DEVICE, "--channels", "200", "--no-dashboard", "--model", model_arg, env={"HOME": str(home)}
    )
    assert proc.returncode == 2  # more than the config allows (1..32): a config error naming the key
    assert "[audio] channels is 200" in proc.stderr.decode()


def test_rate_the_device_refuses_suggests_its_default_rate(home: Path, model_arg: str) -> None:
    env = {"HOME": str(home)}
    proc = run_cli("--device", DEVICE, "--rate", "1000", "--no-dashboard", "--model", model_arg, env=env)
    assert proc.returncode == 4
    err = proc.stderr.decode()
    assert f"{DEVICE} refuses 1000 Hz with 1 channel(s)" in err and "try --rate 16000" in err
