"""emostream analyze: one emotion per file; bad files get their own error; silence gives null."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip, run_cli

from emostream.apps.analyze import analyze_file
from emostream.audio.files import load_mono
from emostream.config import Config
from emostream.engine.labels import LabelsConfig
from emostream.engine.plan import make_plan
from emostream.errors import AudioInputError
from emostream.frontend.windowing import extract_windows
from emostream.inference.model import EmotionModel


def test_file_scores_are_the_mean_over_speech_windows(model: EmotionModel) -> None:
    clip = fixture_clip(1, 6)
    result = analyze_file(clip, make_plan(Config(labels=LabelsConfig(show="all")), model))  # the model's own
    windows = extract_windows(load_mono(clip, 16000), model.metadata.feature_config, model.metadata.vad_config)
    expected = model.predict_batch(np.stack([w.features for w in windows if w.is_speech])).mean(axis=0)
    assert result.scores is not None
    np.testing.assert_allclose([result.scores[k] for k in model.labels], expected, atol=1e-6)
    assert result.emotion == model.labels[int(np.argmax(expected))]
    assert 0.5 < result.speech_seconds <= result.duration_s


def test_stereo_files_are_mixed_to_mono(model: EmotionModel, tmp_path: Path) -> None:
    x = load_mono(fixture_clip(2, 4), 16000)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([x, x], axis=1), 16000, subtype="FLOAT")
    stereo, mono = (
        analyze_file(path, make_plan(Config(), model)),
        analyze_file(fixture_clip(2, 4), make_plan(Config(), model)),
    )
    assert stereo.emotion == mono.emotion and stereo.scores is not None and mono.scores is not None
    np.testing.assert_allclose(list(stereo.scores.values()), list(mono.scores.values()), atol=1e-3)


def test_too_short_file_is_refused(model: EmotionModel, tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, np.zeros(4000, np.float32), 16000)
    with pytest.raises(AudioInputError, match="too short"):
        analyze_file(path, make_plan(Config(), model))


def test_cli_analyses_good_files_despite_bad_ones(tmp_path: Path, model_arg: str) -> None:
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(32000, np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"not audio at all")
    empty = tmp_path / "empty.flac"
    sf.write(empty, np.zeros((0, 1), np.float32), 16000, format="FLAC")
    good = fixture_clip(1, 5)
    paths = [str(corrupt), str(good), str(silence), str(empty), str(tmp_path / "missing.wav")]
    proc = run_cli("analyze", "--jsonl", "--model", model_arg, *paths)
    assert proc.returncode == 3
    recs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["path"] for r in recs] == paths
    by_path = {r["path"]: r for r in recs}
    assert by_path[str(good)]["emotion"] is not None and "error" not in by_path[str(good)]
    assert abs(sum(by_path[str(good)]["scores"].values()) - 1) < 1e-3
    assert by_path[str(silence)]["emotion"] is None and by_path[str(silence)]["scores"] is None
    assert "error" not in by_path[str(silence)]
    for bad in (corrupt, empty, tmp_path / "missing.wav"):
        assert by_path[str(bad)]["error"] and by_path[str(bad)]["emotion"] is None
    assert proc.stderr.decode().count("emostream: error: ") == 3


def test_cli_table_output(model_arg: str) -> None:
    proc = run_cli("analyze", "--model", model_arg, str(fixture_clip(2, 2)))
    assert proc.returncode == 0, proc.stderr.decode()
    assert "03-01-02-02-01-01-02.flac" in proc.stdout.decode() and "emotion" in proc.stdout.decode()
