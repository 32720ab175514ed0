"""Shared test fixtures: fixture clips, a model for the runtime tests, CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emostream.errors import ModelError
from emostream.inference.metadata import DEFAULT_MODEL
from emostream.inference.model import EmotionModel

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures" / "ravdess"
# The model the runtime tests use: $EMOSTREAM_TEST_MODEL (a .json path) or the shipped default.
TEST_MODEL = os.environ.get("EMOSTREAM_TEST_MODEL", DEFAULT_MODEL)


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
