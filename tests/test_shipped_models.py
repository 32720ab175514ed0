"""Every shipped model loads through the runtime, its metadata is consistent, int8 agrees with float."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from emostream.audio.files import load_mono
from emostream.frontend.windowing import extract_windows
from emostream.inference.metadata import EMOTIONS, ModelMetadata, bundled_models_dir
from emostream.inference.model import EmotionModel
from emostream.inference.tflite import TfliteRunner

FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"
MODELS = sorted(bundled_models_dir().glob("*.json"))
MAX_BYTES = 1_000_000


def test_default_model_is_shipped():
    assert (bundled_models_dir() / "resnet_mlp.json").is_file()


@pytest.mark.parametrize("meta_path", MODELS, ids=[p.stem for p in MODELS])
def test_metadata_consistent(meta_path):
    meta = ModelMetadata.load(meta_path)
    tflite = meta_path.parent / meta.tflite_file
    assert tflite.stat().st_size <= MAX_BYTES
    assert hashlib.sha256(tflite.read_bytes()).hexdigest() == meta.sha256
    assert meta.labels == EMOTIONS
    assert meta.quantization["type"] == "int8"
    assert meta.training.get("clips")
    model = EmotionModel.load(meta_path)
    assert model.metadata.name == meta_path.stem


def _fixture_windows(meta: ModelMetadata) -> np.ndarray:
    rows = []
    for path in sorted(FIXTURES.glob("Actor_*/*.flac")):
        audio = load_mono(path, meta.feature_config.sample_rate_hz)
        rows += [w.features for w in extract_windows(audio, meta.feature_config, meta.vad_config) if w.is_speech]
    return np.stack(rows)


def _float_probs(path: Path, x: np.ndarray) -> np.ndarray:
    return TfliteRunner(path.read_bytes(), source=str(path)).run(x)


@pytest.mark.parametrize("meta_path", MODELS, ids=[p.stem for p in MODELS])
def test_int8_agrees_with_float_on_fixture_windows(meta_path):
    model = EmotionModel.load(meta_path)
    x = _fixture_windows(model.metadata)
    p_int8 = model.predict_batch(x)
    float_path = meta_path.with_suffix(".float.tflite")
    if float_path.is_file():
        p_float = _float_probs(float_path, model.prepare(x))
    else:
        stored = model.metadata.metrics.get("fixture_float_probs")
        if stored is None:
            pytest.fail(f"{meta_path.name}: no {float_path.name} and no fixture_float_probs in the metadata")
        p_float = np.asarray(stored, dtype=np.float32)
    assert p_float.shape == p_int8.shape
    agreement = float(np.mean(p_int8.argmax(1) == p_float.argmax(1)))
    assert agreement >= 0.9, agreement
    assert float(np.mean(np.abs(p_int8 - p_float))) < 0.03


# Issue 19 item 13: an inaudible gain must not change a reading. Measured on the 16 fixture clips'
# speech windows: fast (int8 head) max probability change 0.03, no label; the int8-embedding accurate
# of 2026-12-03 (v4) 0.13 with changed window labels (its embedding rounds activations; the float
# embedding with the same head: 0.03, none; v4.1, retrained on the float embedding: 0.036, none).
# The int8 heads' input step (0.066 std) alone moves a probability by up to ~0.045
# (python -m benchmarks --only stability, docs/stability.md).
# v6 `fast` runs the int8 voice student, which rounds its activations too: on the fixtures 0.066,
# on 424 RAVDESS windows 0.18 (v4 `fast` 0.045), with no window or clip label changed (v4 `fast`:
# 1 window). Until a student with float activations ships (docs/stability.md), its bound is 0.1 here.
GAIN_MAX_PROB_CHANGE = {"accurate": 0.06, "fast": 0.1}


@pytest.mark.parametrize("gain", [0.999, 1.001])
@pytest.mark.parametrize("name", ["accurate", "fast"])
def test_readings_hold_under_an_inaudible_gain(name, gain):
    model = EmotionModel.load(name)
    meta = model.metadata
    changed, windows, worst = 0, 0, 0.0
    for path in sorted(FIXTURES.glob("Actor_*/*.flac")):
        audio = load_mono(path, meta.feature_config.sample_rate_hz)
        ref = extract_windows(audio, meta.feature_config, meta.vad_config)
        new = extract_windows((audio * gain).astype(np.float32), meta.feature_config, meta.vad_config)
        assert [w.is_speech for w in ref] == [w.is_speech for w in new], path.name
        speech = [i for i, w in enumerate(ref) if w.is_speech]
        p_ref = model.predict_batch(np.stack([ref[i].features for i in speech]))
        p_new = model.predict_batch(np.stack([new[i].features for i in speech]))
        changed += int((p_ref.argmax(axis=1) != p_new.argmax(axis=1)).sum())
        windows += len(speech)
        worst = max(worst, float(np.abs(p_ref - p_new).max()))
    print(f"{name} x{gain}: {changed} of {windows} window labels changed, max |dp| {worst:.4f}")
    assert changed == 0
    assert worst <= GAIN_MAX_PROB_CHANGE[name]


def test_shipped_fused_models_run_the_float_embedding():
    """Issue 19 item 13: the int8 embedding file made readings jump; shipped models use the continuous float one.

    Since v5 `accurate` fuses the voice encoder (float, NumPy) instead of the speech embedding.
    """
    assert ModelMetadata.load(next(p for p in MODELS if p.stem == "accurate")).feature_config.voice is not None
    fused = [p for p in MODELS if ModelMetadata.load(p).feature_config.embedding is not None]
    for path in fused:
        embedding = ModelMetadata.load(path).feature_config.embedding
        assert embedding is not None and embedding.variant == "float", path.stem
