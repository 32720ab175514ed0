"""Issue 9, item 1: `analyze` and calibration stream files in blocks (bounded memory, same results)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip

from emostream.apps import analyze as analyze_module
from emostream.apps.analyze import analyze_file
from emostream.apps.calibrate import pooled_statistics
from emostream.audio.files import MonoStream, load_mono, resample
from emostream.config import Config
from emostream.engine.calibration import SpeakerStats
from emostream.engine.labels import LabelsConfig
from emostream.engine.plan import make_plan
from emostream.frontend.windowing import extract_windows
from emostream.inference.model import EmotionModel


def whole_file_scores(path: Path, model: EmotionModel) -> np.ndarray:
    """What analyze computed before streaming: the whole signal, every window at once."""
    meta = model.metadata
    windows = extract_windows(load_mono(path, meta.feature_config.sample_rate_hz), meta.feature_config, meta.vad_config)
    return model.predict_batch(np.stack([w.features for w in windows if w.is_speech])).mean(axis=0)


@pytest.fixture(scope="module")
def stereo_44k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x = resample(
        np.concatenate([load_mono(fixture_clip(2, 4), 16000), load_mono(fixture_clip(1, 5), 16000)]), 16000, 44100
    )
    path = tmp_path_factory.mktemp("analyze") / "stereo44k.wav"
    sf.write(path, np.stack([x, 0.5 * x], axis=1), 44100, subtype="FLOAT")
    return path


def test_the_block_stream_equals_the_whole_signal(stereo_44k: Path) -> None:
    whole = load_mono(stereo_44k, 16000)
    for block_s in (0.37, 5.0):
        streamed = np.concatenate(list(MonoStream(stereo_44k, 16000, block_s=block_s)))
        assert streamed.shape == whole.shape
        np.testing.assert_allclose(streamed, whole, atol=1e-6)


@pytest.mark.parametrize("clip", ["fixture", "stereo_44k"])
def test_streamed_analysis_equals_the_whole_file(
    clip: str, model: EmotionModel, stereo_44k: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fixture_clip(1, 6) if clip == "fixture" else stereo_44k
    monkeypatch.setattr(analyze_module, "BATCH_WINDOWS", 3)  # several model calls per file
    monkeypatch.setattr("emostream.audio.files.STREAM_BLOCK_S", 0.3)
    result = analyze_file(path, make_plan(Config(labels=LabelsConfig(show="all")), model))
    assert result.scores is not None
    np.testing.assert_allclose(list(result.scores.values()), whole_file_scores(path, model), atol=1e-5)


def test_pooled_calibration_statistics_equal_the_whole_files(model: EmotionModel, stereo_44k: Path) -> None:
    plan = make_plan(Config(), model)
    if not plan.calibrated:
        pytest.skip("the test model has no calibration")
    paths = [fixture_clip(1, 5), stereo_44k]
    stats, _ = pooled_statistics(paths, plan)
    expected = SpeakerStats(model.metadata.norm_mean.size, 10**9)
    timing = plan.file_timing
    for path in paths:
        for w in extract_windows(load_mono(path, timing.sample_rate_hz), timing.features, timing.vad):
            if w.is_speech:
                expected.update(model.select(w.features))
    assert stats.count == expected.count
    np.testing.assert_allclose(stats.mean, expected.mean, rtol=1e-5, atol=1e-5)


MEASURE = textwrap.dedent(
    """
    import sys
    from emostream.apps.analyze import analyze_file
    from emostream.config import Config
    from emostream.engine.plan import make_plan
    from emostream.inference.model import EmotionModel
    result = analyze_file(sys.argv[1], make_plan(Config(), EmotionModel.load(sys.argv[2])))
    assert result.error is None
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(int(hwm.split()[1]) // 1024)
    """
)


def peak_rss_mb(path: Path, model_arg: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), model_arg], capture_output=True, text=True, timeout=900, check=True
    )
    return int(proc.stdout.strip())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_analyze_memory_does_not_grow_with_the_file_length(tmp_path: Path, model_arg: str) -> None:
    """Peak RSS (VmHWM) of analysing a 2 min and a 30 min file: both far under 150 MB, about equal."""
    speech = load_mono(fixture_clip(1, 5), 16000)
    rng = np.random.default_rng(0)
    files = {}
    for minutes in (2, 30):
        path = tmp_path / f"{minutes}min.wav"
        with sf.SoundFile(path, "w", samplerate=16000, channels=2, subtype="PCM_16") as f:
            for _ in range(minutes * 60 * 16000 // speech.size):
                block = speech + rng.normal(0, 0.01, speech.size).astype(np.float32)
                f.write(np.stack([block, 0.5 * block], axis=1))
        files[minutes] = path
    short, long = peak_rss_mb(files[2], model_arg), peak_rss_mb(files[30], model_arg)
    assert long <= 150, f"{long} MB for 30 min"
    assert long - short <= 15, f"{short} MB for 2 min, {long} MB for 30 min"
