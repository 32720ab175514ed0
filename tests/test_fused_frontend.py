"""The fused front-end: summary statistics + pooled speech embeddings, streamed == whole signal.

Parity tolerance: the pooled-embedding columns are equal exactly (the log-mel is chunk-size
invariant and each grid embedding is computed once from the same mel block); the
handcrafted columns keep the tolerance of the plain front-end (rtol 1e-5, atol 1e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emostream.audio.files import load_mono
from emostream.errors import ConfigError, ModelError
from emostream.frontend.embedding import EMBEDDING_DIM, EmbeddingConfig, pool_embeddings, pooled_feature_names
from emostream.frontend.features import FRONTEND_VERSION, FeatureConfig, model_input, summary_feature_names
from emostream.frontend.vad import VadConfig
from emostream.frontend.windowing import Window, WindowExtractor, extract_windows
from emostream.inference.metadata import ModelMetadata, bundled_models_dir

SR = 16000
FIXTURES = Path(__file__).parent / "fixtures" / "ravdess" / "Actor_01"
PLAIN = FeatureConfig(pitch=True, deltas=True)
FUSED = FeatureConfig(pitch=True, deltas=True, embedding=EmbeddingConfig())
FUSED_V1 = FeatureConfig(pitch=True, deltas=True, embedding=EmbeddingConfig(), frontend_version=1)
N_PLAIN = len(summary_feature_names(PLAIN))  # 115
N_POOLED = 3 * EMBEDDING_DIM


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    """Two clips with a second of silence between them (speech and non-speech windows)."""
    angry = load_mono(FIXTURES / "03-01-05-02-01-01-01.flac", SR)
    happy = load_mono(FIXTURES / "03-01-03-02-01-01-01.flac", SR)
    return np.concatenate([angry, np.zeros(SR, dtype=np.float32), happy])


def streamed(extractor: WindowExtractor, signal: np.ndarray, seed: int, max_chunk: int = 6000) -> list[Window]:
    rng = np.random.default_rng(seed)
    out: list[Window] = []
    i = 0
    while i < signal.size:
        n = int(rng.integers(1, max_chunk))
        out += extractor.process(signal[i : i + n])
        i += n
    return out + extractor.flush()


def assert_same_windows(expected: list[Window], got: list[Window]) -> None:
    assert len(got) == len(expected) > 5
    for a, b in zip(expected, got, strict=True):
        assert (a.index, a.start_s, a.end_s, a.speech_ratio, a.is_speech) == (
            b.index,
            b.start_s,
            b.end_s,
            b.speech_ratio,
            b.is_speech,
        )
        assert a.features.shape == b.features.shape == (N_PLAIN + N_POOLED,)
        np.testing.assert_array_equal(a.features[N_PLAIN:], b.features[N_PLAIN:])
        np.testing.assert_allclose(a.features[:N_PLAIN], b.features[:N_PLAIN], rtol=1e-5, atol=1e-4)


def test_config_round_trips_the_embedding_as_a_nested_dict() -> None:
    cfg = FeatureConfig(embedding=EmbeddingConfig(stride_frames=25, pooling=("mean", "max")))
    data = cfg.to_dict()
    assert data["embedding"]["stride_frames"] == 25 and data["embedding"]["pooling"] == ["mean", "max"]
    assert FeatureConfig.from_dict(data) == cfg
    plain = FeatureConfig().to_dict()
    assert "embedding" not in plain  # plain configs serialise as before (model JSONs, cache keys)
    assert FeatureConfig.from_dict(plain) == FeatureConfig() == FeatureConfig.from_dict({**plain, "embedding": None})


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"feature_set": "frames", "n_mfcc": 40}, "summary statistics only"),
        ({"sample_rate_hz": 8000, "fmax_hz": 4000.0}, "16000 Hz"),
        ({"frame_hop_ms": 20.0}, "160-sample"),
    ],
)
def test_embedding_is_refused_where_it_cannot_line_up(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        FeatureConfig(embedding=EmbeddingConfig(), **kwargs)  # type: ignore[arg-type]


def test_bad_embedding_dicts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="stride_frames"):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), "embedding": {"stride_frames": 0}})
    with pytest.raises(ConfigError, match="expected a dict"):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), "embedding": 50})


def test_summary_names_end_with_the_pooled_embedding() -> None:
    names = summary_feature_names(FUSED)
    assert names[:N_PLAIN] == summary_feature_names(PLAIN)
    assert names[N_PLAIN:] == pooled_feature_names(EmbeddingConfig())
    assert len(names) == N_PLAIN + N_POOLED == 403


def test_model_input_needs_the_pooled_embedding_exactly_when_fused() -> None:
    frames = np.random.default_rng(0).normal(size=(191, 47)).astype(np.float32)
    with pytest.raises(ValueError, match="needs"):
        model_input(frames, None, FUSED)
    with pytest.raises(ValueError, match="no embedding"):
        model_input(frames, None, PLAIN, pooled_embedding=np.zeros(N_POOLED, np.float32))
    pooled = np.arange(N_POOLED, dtype=np.float32)
    fused = model_input(frames, None, FUSED, pooled_embedding=pooled)
    np.testing.assert_array_equal(fused[:N_PLAIN], model_input(frames, None, PLAIN))
    np.testing.assert_array_equal(fused[N_PLAIN:], pooled)


@pytest.mark.parametrize("first_window_ms", [None, 1000.0])
def test_streamed_fused_windows_equal_whole_signal_windows(signal: np.ndarray, first_window_ms: float | None) -> None:
    whole = WindowExtractor(FUSED, VadConfig(), first_window_ms=first_window_ms)
    expected = whole.process(signal) + whole.flush()
    if first_window_ms is None:
        assert_same_windows(extract_windows(signal, FUSED, VadConfig()), expected)
    assert any(w.features[N_PLAIN:].any() for w in expected if w.is_speech)
    stream = WindowExtractor(FUSED, VadConfig(), first_window_ms=first_window_ms)
    assert_same_windows(expected, streamed(stream, signal, seed=7))
    assert stream.embeddings_computed == whole.embeddings_computed > 0
    # Front-end version 1: the handcrafted part is the plain front-end's, untouched.
    v1 = WindowExtractor(FUSED_V1, VadConfig(), first_window_ms=first_window_ms)
    plain = WindowExtractor(PLAIN, VadConfig(), first_window_ms=first_window_ms)
    for a, b in zip(plain.process(signal) + plain.flush(), v1.process(signal) + v1.flush(), strict=True):
        np.testing.assert_array_equal(a.features, b.features[:N_PLAIN])


def test_version_2_mel_frames_are_the_embedders_own(signal: np.ndarray) -> None:
    """Version 2 makes the log-mel from the STFT frames' spectra: the frames agree with the embedder's own
    float64 mel front-end (version 1) to float32 rounding, so one spectrum per frame serves both."""
    v2 = WindowExtractor(FUSED, VadConfig())
    v1 = WindowExtractor(FUSED_V1, VadConfig())
    assert v2.process(signal[: 3 * SR]) and v1.process(signal[: 3 * SR])
    e2, e1 = v2.embedder, v1.embedder
    assert e2 is not None and e1 is not None
    start, stop = max(e2.mel_first, e1.mel_first), min(e2.mel_end, e1.mel_end)
    # mel frames are computed only where an embedding reads them: compare those version 1 computed
    computed = np.any(e1.mel(start, stop) != 0, axis=1)
    assert int(np.count_nonzero(computed)) >= 76
    np.testing.assert_allclose(e2.mel(start, stop)[computed], e1.mel(start, stop)[computed], rtol=0, atol=1e-4)


def test_front_end_versions_are_recorded_and_unknown_ones_refused() -> None:
    assert FeatureConfig().to_dict()["frontend_version"] == FRONTEND_VERSION == 2
    old = {k: v for k, v in FUSED.to_dict().items() if k != "frontend_version"}
    assert FeatureConfig.from_dict(old).frontend_version == 1  # made before the key existed
    assert FUSED.frame_offset_samples == 56 and FUSED_V1.frame_offset_samples == PLAIN.frame_offset_samples == 0
    with pytest.raises(ConfigError, match="frontend_version is 3; this runtime implements front-end versions 1, 2"):
        FeatureConfig.from_dict({**FUSED.to_dict(), "frontend_version": 3})


def test_stride_25_and_a_short_history_stay_equal(signal: np.ndarray) -> None:
    """A whole clip in one call keeps every frame its windows need, even past ``history_frames``."""
    cfg = FeatureConfig(pitch=True, deltas=True, embedding=EmbeddingConfig(stride_frames=25, history_frames=80))
    expected = extract_windows(signal, cfg, VadConfig())
    assert_same_windows(expected, streamed(WindowExtractor(cfg, VadConfig()), signal, seed=3, max_chunk=1500))


def test_non_speech_windows_compute_no_embedding(signal: np.ndarray) -> None:
    silence = WindowExtractor(FUSED, VadConfig())
    windows = silence.process(np.zeros(5 * SR, dtype=np.float32)) + silence.flush()
    assert windows and not any(w.is_speech for w in windows)
    assert silence.embedder is not None and silence.embeddings_computed == 0
    for w in windows:
        np.testing.assert_array_equal(w.features[N_PLAIN:], pool_embeddings(np.zeros((0, EMBEDDING_DIM))))
    # Mixed audio: only the embeddings of speech windows are computed, each once.
    mixed = WindowExtractor(FUSED, VadConfig())
    windows = mixed.process(signal) + mixed.flush()
    embedder = mixed.embedder
    assert embedder is not None
    grid: set[int] = set()  # every grid end of a speech window: an upper bound (speech gating keeps fewer)
    for w in windows:
        if w.is_speech:
            first = w.index * FUSED.window_hop_samples // 160
            grid.update(embedder.grid_ends(first, first + FUSED.window_samples // 160).tolist())
        else:
            assert not w.features[N_PLAIN:].any()
    assert 0 < mixed.embeddings_computed <= len(grid)


def test_metered_only_extractor_creates_no_embedder(signal: np.ndarray) -> None:
    extractor = WindowExtractor(FUSED, VadConfig(), first_window_ms=1000.0, compute_features=False)
    windows = extractor.process(signal) + extractor.flush()
    assert extractor.embedder is None and extractor.embeddings_computed == 0
    assert windows and all(w.features.size == 0 for w in windows)


def test_reset_starts_the_embedder_afresh(signal: np.ndarray) -> None:
    extractor = WindowExtractor(FUSED, VadConfig(), first_window_ms=1000.0)
    first = extractor.process(signal) + extractor.flush()
    extractor.process(np.random.default_rng(4).uniform(-0.3, 0.3, SR).astype(np.float32))
    extractor.reset()
    assert_same_windows(first, extractor.process(signal) + extractor.flush())


def test_a_model_made_for_another_front_end_version_is_refused_with_exit_5(tmp_path: Path) -> None:
    data = json.loads((bundled_models_dir() / "fast.json").read_text(encoding="utf-8"))
    data["feature_config"]["frontend_version"] = 3
    path = tmp_path / "future.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(
        ModelError, match="frontend_version is 3; this runtime implements front-end versions 1, 2"
    ) as err:
        ModelMetadata.load(path)
    assert err.value.exit_code == 5
    del data["feature_config"]["frontend_version"]  # made before the key existed: version 1, still run
    path.write_text(json.dumps(data), encoding="utf-8")
    assert ModelMetadata.load(path).feature_config.frontend_version == 1
