"""The opt-in Silero VAD engine ([vad] engine = "silero"): stream == batch, noise in pauses, settings, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_clip, run_cli

from emostream.audio.files import load_mono
from emostream.errors import ConfigError, InvalidSettingError, ModelError
from emostream.frontend import silero
from emostream.frontend.vad import VadConfig, VadGate, speech_flags

pytest.importorskip("onnxruntime", reason="the [silero] extra (onnxruntime) is not installed")

RATE = 16000


def _speech_with_noisy_pauses() -> tuple[np.ndarray, np.ndarray]:
    """Two clips with digital silence inside them, a 1.5 s pause of -55 dBFS white noise between
    them (noise that comes and goes with the pause, as in the demo); and the mask of the pause samples."""
    clip_a = load_mono(fixture_clip(1, 5), RATE)
    clip_b = load_mono(fixture_clip(2, 3), RATE)
    rms = 10 ** (-55 / 20)
    pause = (np.random.default_rng(0).standard_normal(int(1.5 * RATE)) * rms).astype(np.float32)
    signal = np.concatenate([clip_a, pause, clip_b]).astype(np.float32)
    in_pause = np.zeros(signal.size, dtype=bool)
    in_pause[clip_a.size : clip_a.size + pause.size] = True
    return signal, in_pause


def _frame_share(flags: np.ndarray, mask: np.ndarray, frame_samples: int, skip_s: float = 0.3) -> float:
    """Share of the frames wholly inside ``mask`` (after ``skip_s`` of hang-over) that are speech."""
    starts = np.arange(flags.size) * frame_samples
    inside = np.array([mask[s : s + frame_samples].all() for s in starts])
    first = int(np.flatnonzero(inside)[0]) + round(skip_s * RATE / frame_samples)
    inside[:first] = False
    return float(flags[inside].mean())


def test_silero_gate_gives_the_same_decisions_whatever_the_block_sizes() -> None:
    signal, _ = _speech_with_noisy_pauses()
    cfg = VadConfig(engine="silero", frame_ms=20)
    whole = speech_flags(signal, cfg, RATE)
    gate = VadGate(cfg, RATE)
    rng = np.random.default_rng(1)
    parts, position = [], 0
    while position < signal.size:
        size = int(rng.integers(1, 2500))  # odd sizes: chunks of 512 and frames of 320 never line up
        parts.append(gate.process(signal[position : position + size]))
        position += size
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    gate.reset()
    np.testing.assert_array_equal(gate.process(signal), whole)  # reset starts the chunk grid again


def test_silero_rejects_noise_that_comes_with_the_pauses_where_webrtcvad_hears_speech() -> None:
    signal, in_pause = _speech_with_noisy_pauses()
    webrtc = speech_flags(signal, VadConfig(speech_level_margin_db=None), RATE)  # webrtcvad alone
    silero_flags = speech_flags(signal, VadConfig(engine="silero"), RATE)
    frame = VadConfig().frame_samples(RATE)
    assert _frame_share(webrtc, in_pause, frame) > 0.5  # the known failure of webrtcvad alone
    assert _frame_share(silero_flags, in_pause, frame) < 0.15
    speech = np.zeros_like(in_pause)
    speech[: np.flatnonzero(in_pause)[0]] = True
    assert silero_flags[: speech.sum() // frame].mean() > 0.3  # it still hears the speech


def test_frame_probabilities_use_the_last_complete_chunk() -> None:
    detector = silero.SileroDetector()
    samples = np.zeros(3 * silero.CHUNK_SAMPLES, dtype=np.float32)
    probs = detector.frame_probabilities(samples, 0, samples.size // 320, 320)
    assert probs.shape == (4,) and probs[0] == 0.0  # frame 0 ends at 320: no chunk has ended yet
    assert detector.frame_probabilities(np.zeros(0, np.float32), 4, 0, 320).shape == (0,)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"engine": "silerO"}, "engine"), ({"silero_threshold": 1.0}, "silero_threshold")],
)
def test_bad_engine_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSettingError, match=message):
        VadConfig(**settings)  # type: ignore[arg-type]


def test_silero_refuses_rates_other_than_16k() -> None:
    with pytest.raises(ConfigError, match="runs at 16000 Hz; this model analyses 8000 Hz"):
        VadGate(VadConfig(engine="silero"), 8000)


def test_missing_onnxruntime_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    silero._session.cache_clear()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    try:
        with pytest.raises(ConfigError, match=r"pip install 'emostream\[silero\]'"):
            VadGate(VadConfig(engine="silero"), RATE)
    finally:
        silero._session.cache_clear()


def test_a_damaged_model_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    silero._session.cache_clear()
    monkeypatch.setattr(silero, "MODEL_SHA256", "0" * 64)
    try:
        with pytest.raises(ModelError, match="damaged: reinstall"):
            silero.SileroDetector()
    finally:
        silero._session.cache_clear()


def test_the_cli_runs_with_the_silero_engine_from_the_config(tmp_path: Path, model_arg: str) -> None:
    config = tmp_path / "noisy_room.toml"
    config.write_text('[vad]\nengine = "silero"\n')
    out = tmp_path / "out.jsonl"
    argv = ["--config", str(config), "--file", str(fixture_clip(1, 5)), "--fast", "--no-dashboard"]
    proc = run_cli(*argv, "--model", model_arg, "--jsonl", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["config"]["vad"]["engine"] == "silero"
    assert any(r["type"] == "hop" and r["emotion"] for r in records)
    bad = tmp_path / "bad.toml"
    bad.write_text('[vad]\nengine = "rnnoise"\n')
    proc = run_cli("--config", str(bad), "--file", str(fixture_clip(1, 5)), "--fast", "--no-dashboard")
    assert proc.returncode == 2 and "engine" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()
