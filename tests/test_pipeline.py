"""ChannelPipeline: stream/batch parity with extract_windows and chunk-size invariance."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fixture_clip

from emostream.audio.files import load_mono
from emostream.engine.channels import ChannelPlan
from emostream.engine.pipeline import ChannelPipeline, level_dbfs
from emostream.engine.smoothing import SmoothingConfig
from emostream.engine.stats import ChannelStats
from emostream.frontend.windowing import extract_windows
from emostream.inference.model import EmotionModel


def clip() -> np.ndarray:
    return load_mono(fixture_clip(1, 5), 16000)


def stream(pipeline: ChannelPipeline, x: np.ndarray, seed: int | None) -> list:
    hops = []
    if seed is None:
        hops += pipeline.process(x)
    else:
        rng = np.random.default_rng(seed)
        i = 0
        while i < len(x):
            n = int(rng.integers(1, 6000))
            hops += pipeline.process(x[i : i + n])
            i += n
    return hops + pipeline.flush()


def make(model: EmotionModel, **kwargs: object) -> ChannelPipeline:
    return ChannelPipeline(model, model.metadata.vad_config, SmoothingConfig(), **kwargs)  # type: ignore[arg-type]


def test_streamed_hops_match_whole_signal_windows_and_batch_scores(model: EmotionModel) -> None:
    x = clip()
    hops = stream(make(model), x, seed=3)
    windows = extract_windows(x, model.metadata.feature_config, model.metadata.vad_config)
    assert [(h.t_start, h.t_end) for h in hops] == [(w.start_s, w.end_s) for w in windows]
    assert [h.speech_ratio for h in hops] == [w.speech_ratio for w in windows]
    speech = [w for w in windows if w.is_speech]
    assert speech, "the fixture clip has speech"
    batch = model.predict_batch(np.stack([w.features for w in speech]))
    streamed = np.array([[h.scores[label] for label in model.labels] for h in hops if h.is_speech])
    np.testing.assert_allclose(streamed, batch, atol=1e-6)
    first_speech = next(i for i, h in enumerate(hops) if h.is_speech)
    assert all(h.scores is None and h.emotion is None for h in hops[:first_speech])


def test_chunk_size_does_not_change_the_hop_records(model: EmotionModel) -> None:
    x = clip()
    records = []
    for seed in (None, 1, 2):
        hops = stream(make(model), x, seed)
        records.append([{k: v for k, v in h.to_dict().items() if k != "latency_ms"} for h in hops])
    assert records[0] == records[1] == records[2]
    assert any(r["emotion"] is not None for r in records[0])


def test_unanalysed_channel_is_metered_but_never_classified(model: EmotionModel) -> None:
    pipeline = make(model, channel=1, role="agent", analysed=False)
    hops = stream(pipeline, clip(), seed=None)
    assert hops and all(h.scores is None and h.emotion is None and h.channel == 1 and h.role == "agent" for h in hops)
    stats = ChannelStats(ChannelPlan(1, "agent", "agent (ch 1)", False), model.labels, pipeline.hop_s)
    for h in hops:
        stats.on_hop(h)
    view = stats.view(pipeline.level_db)
    assert view.analysed is False and view.speech_seconds > 0.5 and view.emotion is None
    assert stats.summary().emotion_seconds == {}


def test_statistics_view_summary_timeline_and_reset(model: EmotionModel) -> None:
    pipeline = make(model)
    hops = stream(pipeline, clip(), seed=None)
    stats = ChannelStats(ChannelPlan(0, "speaker", "speaker (ch 0)", True), model.labels, pipeline.hop_s, 2.0)
    for h in hops:
        stats.on_hop(h)
    view = stats.view(pipeline.level_db)
    assert len(view.timeline) == 4  # 2 s of timeline at a 0.5 s hop
    assert view.timeline[-1].t_end == hops[-1].t_end
    assert view.level_db < 0
    summary = stats.summary()
    labelled_speech = sum(h.speech_ratio for h in hops if h.emotion is not None and h.is_speech)
    assert sum(summary.emotion_seconds.values()) == pytest.approx(0.5 * labelled_speech)  # speech share per hop
    assert summary.speech_seconds == pytest.approx(0.5 * sum(h.speech_ratio for h in hops))
    peak = max((h for h in hops if h.is_speech and h.smoothed), key=lambda h: h.smoothed["angry"])
    assert stats.peaks["angry"].t_s == peak.t_end
    stats.reset()
    assert stats.view().timeline == () and stats.summary().speech_seconds == 0.0


def test_level_dbfs_of_known_signals() -> None:
    assert level_dbfs(np.zeros(100, np.float32)) == -120.0
    assert level_dbfs(np.full(100, 0.5, np.float32)) == pytest.approx(-6.0206, abs=1e-3)
    sine = np.sin(np.linspace(0, 200 * np.pi, 16000, endpoint=False)).astype(np.float32)
    assert level_dbfs(sine) == pytest.approx(-3.0103, abs=1e-3)
