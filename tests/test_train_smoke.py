"""Tiny end-to-end: fixture windows → train a few epochs → int8 export → EmotionModel → predict."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.inference.metadata import EMOTIONS
from emostream.inference.model import EmotionModel
from emostream.train.dataset import build_windows, clip_scores
from emostream.train.export import run_tflite, write_model
from emostream.train.fit import TrainConfig, fit
from emostream.train.models import ModelConfig
from emostream.train.ravdess import list_clips

FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"

# A marker, not importorskip: importing TensorFlow at collection costs ~12 s even when slow tests are deselected.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow (train extra)")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["resnet_mlp", "linear", "cnn"])
def test_train_export_load_predict(tmp_path, family):
    fcfg = FeatureConfig(feature_set="frames", n_mfcc=40) if family == "cnn" else FeatureConfig()
    vcfg = VadConfig()
    clips = list_clips(FIXTURES)
    wset = build_windows(clips, fcfg, vcfg, cache_dir=tmp_path / "cache", workers=1)
    assert len(wset.clips) == 16 and wset.features.shape[0] == wset.clip_index.shape[0]
    again = build_windows(clips, fcfg, vcfg, cache_dir=tmp_path / "cache", workers=1)  # from the cache
    np.testing.assert_array_equal(again.features, wset.features)
    assert len(list((tmp_path / "cache").glob("windows_*.npz"))) == 1

    keep = wset.is_speech
    cfg = TrainConfig(family=family, epochs=3, batch_size=16, model=ModelConfig(cnn_filters=(8, 8), width=32))
    fitted = fit(wset.features[keep], wset.window_labels[keep], len(EMOTIONS), cfg)
    assert fitted.epochs_run == 3
    meta, _int8, flt = write_model(
        tmp_path / "out",
        name="tiny",
        family=family,
        fitted=fitted,
        feature_cfg=fcfg,
        vad_cfg=vcfg,
        representative=wset.features[keep],
        training={"dataset": "fixtures"},
        metrics={},
    )
    assert meta.quantization["input_dtype"] == "int8" and meta.quantization["output_dtype"] == "int8"

    model = EmotionModel.load(tmp_path / "out" / "tiny.json")
    assert model.labels == EMOTIONS
    probs = model.predict_batch(wset.features)
    assert probs.shape == (len(wset.features), 8)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # The runtime's int8 path matches the float model closely.
    p_float = run_tflite(flt, fitted.prepare(wset.features))
    assert float(np.mean(np.abs(probs - p_float))) < 0.05
    scores = clip_scores(probs, wset.is_speech, wset.clip_index, len(clips))
    assert scores.shape == (16, 8) and not np.isnan(scores).any()


@pytest.mark.slow
def test_fused_model_trains_and_runs_end_to_end(tmp_path):
    """`train --embedding-stride 50` on the fixtures, then the exported model through the runtime and `analyze`."""
    import json

    from conftest import run_cli

    from emostream.audio.files import load_mono
    from emostream.frontend.windowing import WindowExtractor
    from emostream.train.cli import main

    out = tmp_path / "out"
    argv = ["train", "--data", str(FIXTURES), "--model", "mlp", "--embedding-stride", "50", "--epochs", "2"]
    argv += ["--out", str(out), "--cache", str(tmp_path / "cache"), "--workers", "1", "--name", "fused"]
    assert main(argv) == 0
    model = EmotionModel.load(out / "fused.json")
    fcfg = model.metadata.feature_config
    assert fcfg.embedding is not None and fcfg.embedding.stride_frames == 50
    assert model.metadata.input_shape == (115 + 288,)

    clip = FIXTURES / "Actor_02" / "03-01-05-02-01-01-02.flac"
    extractor = WindowExtractor(fcfg, model.metadata.vad_config, first_window_ms=1000.0)
    audio = load_mono(clip, 16000)
    windows = [w for i in range(0, audio.size, 1600) for w in extractor.process(audio[i : i + 1600])]
    speech = [w for w in windows + extractor.flush() if w.is_speech]
    assert speech and extractor.embeddings_computed > 0
    probs = model.predict_batch(np.stack([w.features for w in speech]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)

    proc = run_cli("analyze", "--jsonl", "--model", str(out / "fused.json"), str(clip))
    assert proc.returncode == 0, proc.stderr.decode()
    record = json.loads(proc.stdout.decode().splitlines()[0])
    assert record["emotion"] in EMOTIONS and abs(sum(record["scores"].values()) - 1) < 1e-3
