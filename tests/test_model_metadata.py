"""Model metadata validation: the runtime refuses models whose parts disagree."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from emostream.errors import ModelError
from emostream.frontend.embedding import EmbeddingConfig, speech_embedding_dir
from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.inference.metadata import EMOTIONS, ModelMetadata, normalize_input, resolve_model
from emostream.inference.model import EmotionModel
from emostream.inference.tflite import TfliteRunner, dequantize, interpreter_class, quantize
from emostream.train.fit import Fitted


def metadata(**changes: object) -> ModelMetadata:
    base = ModelMetadata(
        name="unit",
        family="mlp",
        labels=EMOTIONS,
        feature_config=FeatureConfig(),
        vad_config=VadConfig(),
        norm_mean=np.zeros(90, dtype=np.float32),
        norm_std=np.ones(90, dtype=np.float32),
        input_shape=(90,),
        selected_features=None,
        tflite_file="unit.tflite",
        sha256="0" * 64,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def write(tmp_path: Path, meta: ModelMetadata, **overrides: object) -> Path:
    data = meta.to_dict()
    data.update(overrides)
    path = tmp_path / "unit.json"
    path.write_text(json.dumps(data))
    return path


def test_round_trip(tmp_path: Path) -> None:
    meta = metadata(selected_features=(0, 5, 7), input_shape=(3,), norm_mean=np.zeros(3), norm_std=np.ones(3))
    loaded = ModelMetadata.load(write(tmp_path, meta))
    assert loaded.selected_features == (0, 5, 7)
    assert loaded.feature_names == ["mfcc_00_mean", "mfcc_05_mean", "mfcc_07_mean"]
    assert loaded.feature_config == FeatureConfig()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"input_shape": [91]}, "input_shape"),
        ({"schema_version": 99}, "schema_version"),
        ({"normalization": {"mean": [0.0] * 90, "std": [0.0] * 90}}, "std"),
        ({"feature_config": {**FeatureConfig().to_dict(), "window_ms": 2005.0}}, "window_ms"),
        ({"feature_config": {**FeatureConfig().to_dict(), "hop_length": 256}}, "unknown keys"),
        ({"labels": ["a", "a"]}, "labels"),
        ({"selected_features": [0, 200]}, "out of range"),
    ],
)
def test_inconsistent_metadata_is_refused(tmp_path: Path, overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ModelError, match=fragment):
        ModelMetadata.load(write(tmp_path, metadata(), **overrides))


def test_frames_models_need_a_frames_shaped_input(tmp_path: Path) -> None:
    cfg = FeatureConfig(feature_set="frames", n_mfcc=40)
    good = metadata(
        feature_config=cfg, input_shape=(198, 40), norm_mean=np.zeros(40, np.float32), norm_std=np.ones(40, np.float32)
    )
    assert ModelMetadata.load(write(tmp_path, good)).input_shape == (198, 40)
    with pytest.raises(ModelError, match="input_shape"):
        ModelMetadata.load(write(tmp_path, dataclasses.replace(good, input_shape=(100, 40))))


def fused_metadata(embedding: EmbeddingConfig) -> ModelMetadata:
    cfg = FeatureConfig(pitch=True, deltas=True, embedding=embedding)
    width = 115 + embedding.pooled_dim
    return metadata(
        feature_config=cfg,
        input_shape=(width,),
        norm_mean=np.zeros(width, np.float32),
        norm_std=np.ones(width, np.float32),
    )


def test_fused_models_take_the_wider_input_and_record_the_embedding_files(tmp_path: Path) -> None:
    meta = fused_metadata(EmbeddingConfig(stride_frames=25))
    data = meta.to_dict()
    emb = data["feature_config"]["embedding"]
    assert emb["mel_model_sha256"] == EmbeddingConfig().mel_model_sha256
    assert emb["embedding_model_sha256"] == EmbeddingConfig().embedding_model_sha256
    loaded = ModelMetadata.load(write(tmp_path, meta))
    assert loaded.input_shape == (403,) and loaded.feature_config == meta.feature_config
    assert loaded.feature_names[-1] == "emb_max_95" and len(loaded.feature_names) == 403
    with pytest.raises(ModelError, match="input_shape"):
        ModelMetadata.load(write(tmp_path, meta, input_shape=[115]))
    selected = dataclasses.replace(
        meta, selected_features=(0, 400), input_shape=(2,), norm_mean=np.zeros(2), norm_std=np.ones(2)
    )
    assert ModelMetadata.load(write(tmp_path, selected)).feature_names == ["mfcc_00_mean", "emb_max_93"]


def test_a_fused_model_whose_embedding_file_differs_is_refused_at_load(tmp_path: Path) -> None:
    meta = fused_metadata(EmbeddingConfig(embedding_model_sha256="ab" * 32))
    path = write(tmp_path, meta)
    with pytest.raises(ModelError) as info:
        ModelMetadata.load(path)
    message = str(info.value)
    found = EmbeddingConfig().embedding_model_sha256
    assert str(speech_embedding_dir() / "embedding_model.tflite") in message
    assert "ab" * 32 in message and found in message and str(path) in message
    assert "restore it" in message and "README" in message
    assert info.value.exit_code == 5
    with pytest.raises(ModelError, match="embedding_model_sha256"):
        EmotionModel.load(path)


def test_unreadable_metadata_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="not readable JSON"):
        ModelMetadata.load(bad)
    with pytest.raises(ModelError, match="does not exist"):
        ModelMetadata.load(tmp_path / "missing.json")


def test_unknown_model_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ModelError, match="shipped models"):
        resolve_model("no_such_model")


def test_a_model_file_that_does_not_match_its_checksum_is_refused(tmp_path: Path) -> None:
    meta = metadata()
    write(tmp_path, meta)
    (tmp_path / "unit.tflite").write_bytes(b"TFL3 not really a model")
    with pytest.raises(ModelError, match="do not belong together"):
        EmotionModel.load(tmp_path / "unit.json")


def test_the_interpreter_comes_from_ai_edge_litert() -> None:
    _, package = interpreter_class()
    assert package == "ai-edge-litert"


def test_normalize_input_selects_then_normalises_as_float32() -> None:
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    mean = np.array([1.0, 2.0], dtype=np.float32)
    std = np.array([2.0, 4.0], dtype=np.float32)
    y = normalize_input(x, mean=mean, std=std, selected=(1, 3))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, (x[:, [1, 3]] - mean) / std)


def test_the_model_and_training_prepare_inputs_with_the_same_function() -> None:
    model = EmotionModel.load()
    meta = model.metadata
    fitted = Fitted(None, meta.norm_mean, meta.norm_std, meta.selected_features, 0, 0, {})
    shape = meta.input_shape if meta.selected_features is None else (max(meta.selected_features) + 1,)
    x = np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)
    np.testing.assert_array_equal(fitted.prepare(x), model.prepare(x))


def test_int8_quantisation_round_trips_within_half_a_step() -> None:
    detail = {"dtype": np.int8, "quantization": (0.05, -3)}
    x = np.linspace(-6.0, 6.0, 101, dtype=np.float32)
    q = quantize(x, detail)
    assert q.dtype == np.int8
    np.testing.assert_allclose(dequantize(q, detail), x, atol=0.025 + 1e-6)
    assert quantize(np.array([1e6, -1e6], dtype=np.float32), detail).tolist() == [127, -128]


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point"), [(np.int8, 0.0569638796, -13), (np.uint8, 0.02, 128), (np.int16, 0.001, 0)]
)
def test_quantize_is_the_plain_rounding_and_clipping_bit_for_bit(dtype: type, scale: float, zero_point: int) -> None:
    detail = {"dtype": dtype, "quantization": (scale, zero_point)}
    info = np.iinfo(dtype)
    rng = np.random.default_rng(11)
    for size in (0.01, 1.0, 10.0, 1000.0):
        x = (rng.normal(size=(3, 115)) * size).astype(np.float32)
        x[0, :4] = np.array([0.5, -0.5, 1.5, 2.5], dtype=np.float32) * np.float32(scale)  # halves: to even
        plain = np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
        np.testing.assert_array_equal(quantize(x, detail), plain)
        assert quantize(x, detail).dtype == dtype


def test_the_runner_resizes_the_batch_and_refuses_a_wrong_shape() -> None:
    model = EmotionModel.load()
    runner = TfliteRunner(model.path.read_bytes())
    x = np.zeros((4, *runner.input_shape), dtype=np.float32)
    assert runner.run(x).shape == (4, len(model.labels))
    assert runner.run(x[:1]).shape == (1, len(model.labels))
    with pytest.raises(ModelError, match="takes"):
        runner.run(np.zeros((1, runner.input_shape[0] + 1), dtype=np.float32))


def test_a_head_is_refused_with_another_embedding_than_it_was_trained_on(tmp_path: Path) -> None:
    """Issue 19 item 13: a JSON flipped to the float embedding under an int8-trained head is refused, and back."""
    int8 = EmbeddingConfig(stride_frames=25, int8=True)
    meta = fused_metadata(int8)
    record = {"config": {"features": meta.feature_config.to_dict()}}
    assert ModelMetadata.load(write(tmp_path, meta, training=record)).feature_config.embedding == int8
    flipped = fused_metadata(EmbeddingConfig(stride_frames=25))
    with pytest.raises(ModelError, match=r"runs the float embedding .* trained on the int8 embedding") as info:
        ModelMetadata.load(write(tmp_path, flipped, training=record))
    assert info.value.exit_code == 5 and "--embedding-variant" in str(info.value)
    with pytest.raises(ModelError, match="runs no speech embedding"):
        ModelMetadata.load(write(tmp_path, metadata(), training=record))
    assert ModelMetadata.load(write(tmp_path, flipped, training={"epochs": 3})).feature_config.embedding is not None


def test_the_shipped_models_run_the_embedding_their_heads_were_trained_on() -> None:
    for name in ("accurate", "fast"):
        path = resolve_model(name)
        data = json.loads(path.read_text(encoding="utf-8"))
        trained = data["training"]["config"]["features"].get("embedding")
        assert trained == data["feature_config"].get("embedding"), name
        ModelMetadata.load(path)
