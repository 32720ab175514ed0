"""Training options of the fused front-end: --embedding-stride, and window caches keyed on the whole config."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostream.errors import ConfigError
from emostream.frontend.embedding import EmbeddingConfig
from emostream.frontend.features import FeatureConfig, summary_feature_names
from emostream.frontend.vad import VadConfig
from emostream.train.augment import AugmentConfig
from emostream.train.cli import _spec, build_parser
from emostream.train.dataset import cache_key
from emostream.train.ravdess import list_clips
from emostream.train.run import feature_config_for

FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"


def spec_features(tmp_path: Path, *extra: str) -> FeatureConfig:
    args = build_parser().parse_args(["evaluate", "--data", str(tmp_path), "--out", "R", *extra])
    features: FeatureConfig = _spec(args).features
    return features


def test_embedding_stride_is_off_by_default_and_sets_the_embedding(tmp_path: Path) -> None:
    assert spec_features(tmp_path).embedding is None
    assert spec_features(tmp_path, "--embedding-stride", "0").embedding is None
    fused = spec_features(tmp_path, "--embedding-stride", "25", "--model", "mlp")
    assert fused.embedding == EmbeddingConfig(stride_frames=25)
    assert len(summary_feature_names(fused)) == 115 + 288
    legacy = spec_features(tmp_path, "--embedding-stride", "50", "--legacy-features")
    assert legacy.embedding == EmbeddingConfig() and len(summary_feature_names(legacy)) == 90 + 288


def test_the_float_embedding_is_the_default_and_int8_must_be_asked_for_by_name(tmp_path: Path) -> None:
    """Issue 19 item 13: models train on the float embedding; the old --embedding-int8 is refused, not ignored."""
    fused = spec_features(tmp_path, "--embedding-stride", "25")
    assert fused.embedding is not None and fused.embedding.variant == "float" and not fused.embedding.int8
    int8 = spec_features(tmp_path, "--embedding-stride", "25", "--embedding-variant", "int8")
    assert int8.embedding == EmbeddingConfig(stride_frames=25, int8=True)
    with pytest.raises(ConfigError, match=r"--embedding-int8 was removed.*--embedding-variant int8"):
        spec_features(tmp_path, "--embedding-stride", "25", "--embedding-int8")
    with pytest.raises(ConfigError, match="needs --embedding-stride"):
        spec_features(tmp_path, "--embedding-variant", "int8")
    with pytest.raises(SystemExit):
        spec_features(tmp_path, "--embedding-stride", "25", "--embedding-variant", "int4")


def test_embedding_stride_is_refused_for_the_cnn_and_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model resnet_mlp or mlp"):
        spec_features(tmp_path, "--embedding-stride", "50", "--model", "cnn")
    with pytest.raises(ConfigError, match="embedding-stride"):
        feature_config_for("resnet_mlp", embedding_stride_frames=-1)
    with pytest.raises(ConfigError, match="stride_frames"):
        feature_config_for("resnet_mlp", embedding_stride_frames=5000)


def test_window_cache_keys_on_the_whole_feature_config() -> None:
    clips = list_clips(FIXTURES)
    plain = feature_config_for("resnet_mlp")
    keys = {
        cache_key(clips, cfg, VadConfig(), AugmentConfig(), "wideband")
        for cfg in (
            plain,
            feature_config_for("resnet_mlp", embedding_stride_frames=50),
            feature_config_for("resnet_mlp", embedding_stride_frames=25),
            FeatureConfig(pitch=True, deltas=True, embedding=EmbeddingConfig(pooling=("mean", "std"))),
            FeatureConfig(pitch=True, deltas=True, embedding=EmbeddingConfig(embedding_model_sha256="ab" * 32)),
            # the embedding file: float and int8 windows never share a cache, nor two int8 files
            feature_config_for("resnet_mlp", embedding_stride_frames=25, embedding_variant="int8"),
            FeatureConfig(
                pitch=True,
                deltas=True,
                embedding=EmbeddingConfig(stride_frames=25, int8=True, embedding_model_int8_sha256="cd" * 32),
            ),
        )
    }
    assert len(keys) == 7
    assert "embedding" not in plain.to_dict()  # plain configs keep the keys of caches made before the embedding


def test_window_cache_keys_on_the_embedding_file_on_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The key holds the digests of the files the extraction will read, not only those the config expects."""
    from emostream.frontend.embedding import speech_embedding_dir
    from emostream.train import dataset

    clips = list_clips(FIXTURES)
    cfg = feature_config_for("resnet_mlp", embedding_stride_frames=25)
    before = cache_key(clips, cfg, VadConfig(), AugmentConfig(), "wideband")
    for item in speech_embedding_dir().iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    monkeypatch.setattr(dataset, "speech_embedding_dir", lambda: tmp_path)
    assert cache_key(clips, cfg, VadConfig(), AugmentConfig(), "wideband") == before
    (tmp_path / "embedding_model.tflite").write_bytes(b"another build")
    assert cache_key(clips, cfg, VadConfig(), AugmentConfig(), "wideband") != before


def test_voice_layer_means_option(tmp_path: Path) -> None:
    """v8: --voice-layer-means adds the LSTM layers' time means after the voice embedding (LSTM only)."""
    fused = spec_features(tmp_path, "--voice-encoder", "--voice-layer-means", "2,3")
    assert fused.voice is not None and fused.voice.layer_means == (2, 3)
    assert len(summary_feature_names(fused)) == 115 + 256 * 3
    plain = spec_features(tmp_path, "--voice-encoder")
    assert plain.voice is not None and plain.voice.layer_means == ()
    with pytest.raises(ConfigError, match="needs --voice-encoder"):
        spec_features(tmp_path, "--voice-layer-means", "2")
    with pytest.raises(ConfigError, match="expected comma-separated"):
        spec_features(tmp_path, "--voice-encoder", "--voice-layer-means", "two")
    with pytest.raises(ConfigError, match="layer_means"):
        spec_features(tmp_path, "--voice-encoder", "--voice-layer-means", "4")
