"""Speaker calibration: known statistics, shrinkage at cold start, reset, profiles, analyze --calibrate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_clip, run_cli

from emostream.config import Config, config_from_dict
from emostream.engine.calibration import CalibrationProfile, Calibrator, SpeakerStats, blended
from emostream.engine.plan import make_plan
from emostream.engine.reading import input_rms_z
from emostream.errors import ConfigError
from emostream.inference.metadata import bundled_models_dir
from emostream.inference.model import EmotionModel


def calibrated_copy(tmp_path: Path, name: str = "resnet_mlp", prior: float = 4.0) -> Path:
    """The shipped model's files with a calibration section in its JSON (a model trained for calibration)."""
    src = bundled_models_dir()
    meta = json.loads((src / f"{name}.json").read_text())
    meta["calibration"] = {"prior_windows": prior}
    shutil.copy(src / meta["tflite_file"], tmp_path / meta["tflite_file"])
    path = tmp_path / f"{name}_cal.json"
    path.write_text(json.dumps(meta))
    return path


def test_running_statistics_are_exact_then_forget_exponentially() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 4))
    stats = SpeakerStats(4, horizon=100)
    for row in x:
        stats.update(row)
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.var, x.var(axis=0), rtol=1e-12)
    short = SpeakerStats(1, horizon=10)
    for _ in range(10):
        short.update([0.0])
    for _ in range(200):
        short.update([5.0])
    assert short.count == 10 and short.mean[0] == pytest.approx(5.0, abs=1e-6)


def test_cold_start_is_the_population_and_the_prior_shrinks_the_speaker() -> None:
    pop_mean, pop_std = np.array([0.0, 10.0]), np.array([1.0, 2.0])
    cal = Calibrator(pop_mean, pop_std, prior_windows=4.0, horizon_windows=1000)
    mean, std = cal.normalisation()
    np.testing.assert_array_equal(mean, pop_mean.astype(np.float32))
    np.testing.assert_array_equal(std, pop_std.astype(np.float32))
    for _ in range(4):  # n = n0: halfway between population and speaker
        cal.update([2.0, 14.0])
    mean, std = cal.normalisation()
    np.testing.assert_allclose(mean, [1.0, 12.0])
    np.testing.assert_allclose(std, np.sqrt([0.5, 2.0]))  # speaker variance 0: half the population's
    cal.reset()
    np.testing.assert_array_equal(cal.normalisation()[0], pop_mean.astype(np.float32))
    assert cal.windows_heard == 0


def test_blended_with_no_prior_is_the_speaker_alone() -> None:
    stats = SpeakerStats(1, 10)
    for v in (1.0, 3.0):
        stats.update([v])
    mean, std = blended(stats, [0.0], [1.0], prior_windows=0.0)
    assert mean[0] == pytest.approx(2.0) and std[0] == pytest.approx(1.0)


def test_pipeline_calibrates_only_models_trained_for_it(tmp_path: Path) -> None:
    plain = make_plan(Config(), EmotionModel.load("resnet_mlp"))  # v2: trained without calibration
    assert not plain.calibrated and plain.calibrator() is None
    cal_model = EmotionModel.load(calibrated_copy(tmp_path))
    plan = make_plan(Config(), cal_model)
    assert plan.calibrated and plan.prior_windows == 4.0
    off = make_plan(config_from_dict({"calibration": {"enabled": False}}, "x.toml"), cal_model)
    assert not off.calibrated


def test_profile_round_trip_and_refusal_of_another_front_end(tmp_path: Path) -> None:
    out = tmp_path / "me.json"
    path = calibrated_copy(tmp_path)
    clips = [str(fixture_clip(1, e)) for e in (1, 3, 5)]
    proc = run_cli("calibrate", *clips, "--out", str(out), "--model", str(path))
    assert proc.returncode == 0, proc.stderr.decode()
    profile = CalibrationProfile.load(out)
    assert profile.count > 5 and len(profile.mean) == 115 and profile.sources == tuple(clips)
    assert CalibrationProfile.load(out) == profile
    cnn = calibrated_copy(tmp_path, "cnn")
    with pytest.raises(ConfigError, match="was made with model 'resnet_mlp'"):
        profile.check_fits("cnn", "other-front-end", 42, str(out))
    refused = run_cli("--file", clips[0], "--fast", "--no-dashboard", "--model", str(cnn), "--calibration", str(out))
    assert refused.returncode == 2
    assert b"not trained for speaker calibration" in refused.stderr or b"was made with model" in refused.stderr
    live = run_cli(
        "--file", clips[0], "--fast", "--no-dashboard", "--jsonl", "-", "--model", str(path), "--calibration", str(out)
    )
    assert live.returncode == 0, live.stderr.decode()
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "something else"}')
    with pytest.raises(ConfigError, match="not an emostream calibration profile"):
        CalibrationProfile.load(bad)


def test_analyze_calibrate_pools_the_files_then_scores_each(tmp_path: Path) -> None:
    path = calibrated_copy(tmp_path)
    clips = [str(fixture_clip(2, e)) for e in (1, 2, 5, 6)]
    plain = run_cli("analyze", "--jsonl", "--model", str(path), *clips)
    pooled = run_cli("analyze", "--jsonl", "--calibrate", "--model", str(path), *clips)
    assert plain.returncode == 0 and pooled.returncode == 0, pooled.stderr.decode()
    a = [json.loads(line) for line in plain.stdout.decode().splitlines()]
    b = [json.loads(line) for line in pooled.stdout.decode().splitlines()]
    assert [r["path"] for r in b] == clips
    assert all(r["scores"] and 0.0 <= r["arousal"] <= 1.0 for r in b)
    assert any(abs(x["scores"][k] - y["scores"][k]) > 1e-3 for x, y in zip(a, b, strict=True) for k in x["scores"])
    not_trained = run_cli("analyze", "--calibrate", "--model", "resnet_mlp", clips[0])
    assert not_trained.returncode == 2 and b"not trained for speaker calibration" in not_trained.stderr


def test_uncertain_rules_known_answers() -> None:
    from emostream.engine.reading import ReadingConfig, arousal, is_uncertain

    cfg = ReadingConfig(min_top_probability=0.6, max_input_rms_z=1.5, max_population_rms_z=1.7, population_columns=3)
    assert not is_uncertain(0.7, 1.0, cfg, 1.0)
    assert is_uncertain(0.5, 1.0, cfg, 1.0)  # weak top probability
    assert is_uncertain(0.9, 2.0, cfg, 1.0)  # far from the (calibrated) training distribution
    assert is_uncertain(0.9, 1.0, cfg, 3.0)  # a voice unlike any training speaker
    assert ReadingConfig.from_metadata(cfg.to_dict()) == cfg
    weights = cfg.weights_for(("neutral", "angry", "disgust"))
    assert arousal([0.0, 1.0, 0.0], weights) == 1.0 and arousal([1.0, 0.0, 0.0], weights) == 0.0
    assert arousal([0.0, 0.0, 1.0], weights) == 0.5


def test_a_synthetic_voice_reads_uncertain_and_fires_no_alert(tmp_path: Path) -> None:
    """espeak-ng's flat machine voice is far from every training speaker: never a confident reading."""
    clip = Path(__file__).parent / "fixtures" / "synthetic" / "espeak_en_calm.flac"
    for extra in ((), ("--calibrate",)):
        proc = run_cli("analyze", "--jsonl", *extra, str(clip))
        assert proc.returncode == 0, proc.stderr.decode()
        assert json.loads(proc.stdout.decode())["uncertain"] is True
    cfg = tmp_path / "alerts.toml"
    cfg.write_text('[[alerts]]\nname = "agitated"\non = "arousal"\nthreshold = 0.5\nmin_duration_s = 0.5\n')
    live = run_cli("--file", str(clip), "--fast", "--no-dashboard", "--jsonl", "-", "--config", str(cfg))
    assert live.returncode == 0, live.stderr.decode()
    records = [json.loads(line) for line in live.stdout.decode().splitlines()]
    speech = [r for r in records if r["type"] == "hop" and r["scores"]]
    assert speech and all(r["uncertain"] for r in speech)
    assert not [r for r in records if r["type"] == "alert"]


def test_input_rms_z_is_the_root_of_numpys_mean_square_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    for n in (1, 2, 7, 115, 400):
        for scale in (0.1, 1.0, 40.0):
            z = rng.normal(size=n) * scale
            assert input_rms_z(z) == math.sqrt(float(np.mean(z * z)))
    assert input_rms_z(np.zeros(0)) == 0.0
