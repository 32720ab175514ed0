"""A model's own arousal output (`--arousal-output`): trained on high/low, exported, read by the runtime."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from emostream.errors import ModelError
from emostream.inference.metadata import EMOTIONS, ModelMetadata
from emostream.inference.model import split_outputs
from emostream.train.fit import masked_targets
from emostream.train.loco import corpus_ua
from emostream.train.reading import arousal_truth, arousal_ua, clip_arousal

FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"
# A marker, not importorskip: importing TensorFlow at collection costs ~12 s even when slow tests are deselected.
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow (train extra)")


def test_each_label_has_its_arousal_truth_and_disgust_none() -> None:
    truth = arousal_truth(EMOTIONS)
    expected = {"neutral": 0, "calm": 0, "sad": 0, "happy": 1, "angry": 1, "fearful": 1, "surprised": 1}
    for label, value in zip(EMOTIONS, truth, strict=True):
        if label == "disgust":
            assert math.isnan(value)
        else:
            assert value == expected[label]


def test_targets_carry_the_arousal_truth_and_whether_there_is_one() -> None:
    y = np.array([EMOTIONS.index(e) for e in ("angry", "sad", "disgust")], dtype=np.int32)
    plain = masked_targets(y, 8, None)
    assert plain.shape == (3, 16)
    with_head = masked_targets(y, 8, None, arousal_truth(EMOTIONS))
    np.testing.assert_array_equal(with_head[:, :16], plain)
    np.testing.assert_array_equal(with_head[:, 16:], [[1, 1], [0, 1], [0, 0]])


def test_outputs_split_into_renormalised_probabilities_and_a_clipped_arousal() -> None:
    raw = np.array([[0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.004], [0.5, -0.01, 0, 0, 0, 0, 0, 0.5, 0.3]])
    probs, aro = split_outputs(raw.astype(np.float32), 8)
    assert probs.shape == (2, 8) and aro is not None
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[0, :2], 0.5)
    assert probs[1, 1] == 0.0
    np.testing.assert_allclose(aro, [1.0, 0.3], rtol=1e-6)
    only, none = split_outputs(raw[:, :8].astype(np.float32), 8)
    assert none is None and only.shape == (2, 8)


def test_arousal_is_read_from_the_column_when_there_is_one() -> None:
    angry, sad = EMOTIONS.index("angry"), EMOTIONS.index("sad")
    probs = np.zeros((2, 8), dtype=np.float32)
    probs[0, angry] = probs[1, sad] = 1.0  # the probabilities say high, then low
    np.testing.assert_allclose(clip_arousal(probs, EMOTIONS), [1.0, 0.0])
    own = np.concatenate([probs, np.array([[0.2], [0.9]], dtype=np.float32)], axis=1)  # the column says the opposite
    np.testing.assert_allclose(clip_arousal(own, EMOTIONS), [0.2, 0.9], rtol=1e-6)
    y = np.array([angry, sad], dtype=np.int32)
    assert arousal_ua(probs, y, EMOTIONS) == 1.0
    assert arousal_ua(own, y, EMOTIONS) == 0.0
    # the arousal column is not a label: the corpus UA's prediction never picks it
    assert corpus_ua(own, y, [True] * 8) == 1.0


def test_metadata_records_the_arousal_output_and_refuses_a_non_boolean(tmp_path: Path) -> None:
    from test_model_metadata import metadata

    meta = dataclasses.replace(metadata(), arousal_output=True)
    assert meta.n_outputs == len(meta.labels) + 1
    path = tmp_path / "m.json"
    meta.save(path)
    data = json.loads(path.read_text())
    assert data["arousal_output"] is True
    assert ModelMetadata._from_dict(data).arousal_output is True
    data.pop("arousal_output")
    assert ModelMetadata._from_dict(data).arousal_output is False  # models written before it: no head
    data["arousal_output"] = "yes"
    with pytest.raises(ValueError, match="arousal_output is 'yes'; expected true or false"):
        ModelMetadata._from_dict(data)


@needs_tf
@pytest.mark.slow
def test_the_arousal_loss_scores_only_windows_with_a_truth() -> None:
    from emostream.train.fit import masked_arousal_loss

    y_true = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    y_pred = np.array([0.8, 0.8, 0.1], dtype=np.float32)
    loss = np.asarray(masked_arousal_loss(y_true, y_pred))
    np.testing.assert_allclose(loss, [-math.log(0.8), -math.log(0.2), 0.0], rtol=1e-5)
    smoothed = np.asarray(masked_arousal_loss(y_true, y_pred, 0.2))  # truth 1 -> 0.9, 0 -> 0.1
    np.testing.assert_allclose(smoothed[0], -(0.9 * math.log(0.8) + 0.1 * math.log(0.2)), rtol=1e-5)


@needs_tf
@pytest.mark.slow
def test_a_model_with_its_own_arousal_output_is_read_by_the_runtime(tmp_path: Path) -> None:
    """Known answer: the arousal unit's weights set to give sigmoid(logit 0.8) = 0.8 whatever the input; the
    runtime, the streaming pipeline and `analyze` must read 0.8 (int8 steps aside), not the weighted probabilities."""
    from conftest import run_cli

    from emostream.audio.files import load_mono
    from emostream.engine.pipeline import ChannelPipeline
    from emostream.engine.smoothing import SmoothingConfig
    from emostream.frontend.features import FeatureConfig
    from emostream.frontend.vad import VadConfig
    from emostream.inference.model import EmotionModel
    from emostream.train.dataset import build_windows
    from emostream.train.export import write_model
    from emostream.train.fit import TrainConfig, fit
    from emostream.train.models import ModelConfig
    from emostream.train.ravdess import list_clips

    fcfg, vcfg = FeatureConfig(), VadConfig()
    wset = build_windows(list_clips(FIXTURES), fcfg, vcfg, cache_dir=tmp_path / "cache", workers=1)
    keep = wset.is_speech
    cfg = TrainConfig(epochs=2, batch_size=16, ensemble=2, model=ModelConfig(width=32, arousal_output=True))
    fitted = fit(wset.features[keep], wset.window_labels[keep], len(EMOTIONS), cfg)
    outputs = fitted.predict(wset.features[keep])
    assert outputs.shape == (int(keep.sum()), 9)
    np.testing.assert_allclose(outputs[:, :8].sum(axis=1), 1.0, rtol=1e-5)
    for member in fitted.model.layers[1:3]:  # the two members; their mean is the ensemble's output
        unit = member.get_layer("arousal")
        kernel, _bias = unit.get_weights()
        unit.set_weights([np.zeros_like(kernel), np.array([math.log(0.8 / 0.2)], dtype=np.float32)])
    np.testing.assert_allclose(fitted.predict(wset.features[keep])[:, 8], 0.8, rtol=1e-5)
    meta, _int8, _flt = write_model(
        tmp_path / "out",
        name="aro",
        family="resnet_mlp",
        fitted=fitted,
        feature_cfg=fcfg,
        vad_cfg=vcfg,
        representative=wset.features[keep],
        training={"dataset": "fixtures"},
        metrics={},
    )
    assert meta.arousal_output

    model = EmotionModel.load(tmp_path / "out" / "aro.json")
    probs, aro = model.predict_outputs(model.prepare(wset.features[keep]))
    assert probs.shape == (int(keep.sum()), 8) and aro is not None
    np.testing.assert_allclose(aro, 0.8, atol=0.01)
    np.testing.assert_allclose(model.predict_batch(wset.features[keep]), probs)

    clip = FIXTURES / "Actor_01" / "03-01-05-02-01-01-01.flac"
    pipeline = ChannelPipeline(model, vcfg, SmoothingConfig())
    hops = pipeline.process(load_mono(clip, 16000)) + pipeline.flush()
    read = [h.arousal for h in hops if h.smoothed is not None]
    assert read and all(abs(a - 0.8) < 0.01 for a in read if a is not None)
    assert all(a is not None for a in read)

    proc = run_cli("analyze", "--jsonl", "--model", str(tmp_path / "out" / "aro.json"), str(clip))
    assert proc.returncode == 0, proc.stderr.decode()
    assert abs(json.loads(proc.stdout.decode().splitlines()[0])["arousal"] - 0.8) < 0.01

    # metadata that hides the arousal output no longer fits the model file: refused, naming the fix
    data = json.loads((tmp_path / "out" / "aro.json").read_text())
    data["arousal_output"] = False
    (tmp_path / "out" / "aro.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="has 9 outputs but its metadata gives 8 labels"):
        EmotionModel.load(tmp_path / "out" / "aro.json")


def test_high_and_low_arousal_weigh_the_same_in_each_corpus() -> None:
    from emostream.train.fit import arousal_balance

    # corpus a: three high windows, one low (weights 1); corpus b: one high (weight 2), one low (1), one disgust
    targets = np.array([[1, 1], [1, 1], [1, 1], [0, 1], [1, 1], [0, 1], [0, 0]], dtype=np.float32)
    weights = np.array([1, 1, 1, 1, 2, 1, 1], dtype=np.float32)
    groups = np.array(["a", "a", "a", "a", "b", "b", "b"])
    factors = arousal_balance(targets, weights, groups)
    np.testing.assert_allclose(factors, [4 / 6, 4 / 6, 4 / 6, 2.0, 3 / 4, 3 / 2, 0.0], rtol=1e-6)
    for corpus in ("a", "b"):
        rows = groups == corpus
        high = float((weights * factors)[rows & (targets[:, 0] == 1) & (targets[:, 1] > 0)].sum())
        low = float((weights * factors)[rows & (targets[:, 0] == 0) & (targets[:, 1] > 0)].sum())
        assert high == pytest.approx(low)
    # one side only: left as it is
    np.testing.assert_array_equal(arousal_balance(targets[:3], weights[:3], None), [1, 1, 1])


@needs_tf
@pytest.mark.slow
def test_train_with_arousal_output_writes_a_model_the_cli_reads(tmp_path: Path) -> None:
    from conftest import run_cli

    from emostream.train.cli import main

    out = tmp_path / "out"
    argv = ["train", "--data", str(FIXTURES), "--song=", "--model", "resnet_mlp", "--calibration-prior", "5"]
    argv += ["--calibration-reps", "2", "--epochs", "2", "--out", str(out), "--cache", str(tmp_path / "cache")]
    argv += ["--workers", "1", "--name", "aro", "--arousal-output", "--arousal-weight", "2"]
    assert main(argv) == 0
    data = json.loads((out / "aro.json").read_text())
    assert data["arousal_output"] is True
    assert data["training"]["config"]["train"]["model"]["arousal_output"] is True
    assert data["training"]["config"]["train"]["arousal_weight"] == 2.0
    clip = FIXTURES / "Actor_01" / "03-01-05-02-01-01-01.flac"
    proc = run_cli("--file", str(clip), "--fast", "--no-dashboard", "--jsonl", "-", "--model", str(out / "aro.json"))
    assert proc.returncode == 0, proc.stderr.decode()
    hops = [json.loads(line) for line in proc.stdout.decode().splitlines() if '"hop"' in line]
    read = [h["arousal"] for h in hops if h["smoothed"] is not None]
    assert read and all(0.0 <= a <= 1.0 for a in read)


def test_arousal_weight_is_checked() -> None:
    from emostream.errors import ConfigError
    from emostream.train.fit import TrainConfig

    with pytest.raises(ConfigError, match="--arousal-weight is 0"):
        TrainConfig(arousal_weight=0.0)
