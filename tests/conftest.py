"""Shared test fixtures: fixture clips, a model for the runtime tests, CLI helpers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.errors import ModelError
from emostream.inference.metadata import DEFAULT_MODEL
from emostream.inference.model import EmotionModel

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures" / "ravdess"
# The model the runtime tests use: $EMOSTREAM_TEST_MODEL (a .json path) or the shipped default.
TEST_MODEL = os.environ.get("EMOSTREAM_TEST_MODEL", DEFAULT_MODEL)


def one_clip_ravdess_zip(folder: Path) -> tuple[Path, str]:
    """A RAVDESS-shaped zip holding one 0.5 s 48 kHz WAV (Actor_05, angry), and its MD5, for fetch-ravdess tests."""
    wav = folder / "a.wav"
    sf.write(wav, 0.1 * np.sin(np.arange(24000) / 10.0), 48000)
    archive = folder / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(wav, "Actor_05/03-01-05-02-01-01-05.wav")
    return archive, hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()


def fixture_clip(actor: int = 1, emotion: int = 5) -> Path:
    """A RAVDESS fixture clip (16 kHz mono FLAC); emotion 1..8 in RAVDESS order."""
    intensity = 1 if emotion == 1 else 2
    return FIXTURES / f"Actor_{actor:02d}" / f"03-01-{emotion:02d}-{intensity:02d}-01-01-{actor:02d}.flac"


@pytest.fixture(scope="session")
def model() -> EmotionModel:
    """The runtime model; skips when neither the shipped model nor $EMOSTREAM_TEST_MODEL is available."""
    try:
        return EmotionModel.load(TEST_MODEL)
    except ModelError as exc:
        pytest.skip(f"no model to run ({exc}); set EMOSTREAM_TEST_MODEL to a model .json")


@pytest.fixture(scope="session")
def model_arg(model: EmotionModel) -> str:
    """The --model value that selects the test model."""
    return TEST_MODEL


def run_cli(
    *args: str, input_bytes: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m emostream.apps.cli ARGS`` (the installed console script's code) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "emostream", *args],
        input=input_bytes,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def windows_whole_and_streamed(cfg, audio: np.ndarray, chunk: int) -> tuple[list, list, object]:
    """(windows of the whole signal, windows of the same signal fed to one extractor in ``chunk``-sample
    pieces, that extractor)."""
    from emostream.frontend.vad import VadConfig
    from emostream.frontend.windowing import WindowExtractor, extract_windows

    whole = extract_windows(audio, cfg, VadConfig())
    extractor = WindowExtractor(cfg, VadConfig())
    streamed = []
    for i in range(0, audio.size, chunk):
        streamed += extractor.process(audio[i : i + chunk])
    return whole, streamed + extractor.flush(), extractor
