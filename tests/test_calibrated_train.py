"""Calibration-aware training: simulated speaker statistics, song data, a calibrated export through the runtime."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from emostream.engine.calibration import SpeakerStats, blended
from emostream.errors import ConfigError, DatasetError
from emostream.train.calibration import CalibrationSpec, SpeakerPool, make_calibrated, population
from emostream.train.dataset import WindowSet, concat_windows
from emostream.train.evaluate import (
    emobox_split,
    population_columns,
    random_split,
    reading_config,
    uncertainty_windows,
)
from emostream.train.ravdess import list_clips, list_song_clips, load_folds, parse_filename
from emostream.train.reading import arousal_ua, choose_uncertainty, uncertain_figures
from emostream.train.run import feature_config_for

FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"
REPO = Path(__file__).resolve().parent.parent
HAS_TF = importlib.util.find_spec("tensorflow") is not None


def synthetic_set(copies: int = 1, dim: int = 5, seed: int = 0, takes: int = 1) -> WindowSet:
    """Speech of actors 1-6 (7 emotions) and song of actors 1-4 (5 emotions), ``takes`` (<= 4) clips of each.

    3-6 windows per clip and copy.
    """
    rng = np.random.default_rng(seed)
    clips = [
        parse_filename(f"Actor_{a:02d}/03-{vc:02d}-{e:02d}-02-{1 + t // 2:02d}-{1 + t % 2:02d}-{a:02d}.flac")
        for t in range(takes)
        for vc, actors, emotions in ((1, (1, 2, 3, 4, 5, 6), range(2, 9)), (2, (1, 2, 3, 4), range(2, 7)))
        for a in actors
        for e in emotions
    ]
    feats, speech, index, copy = [], [], [], []
    for i, clip in enumerate(clips):
        for k in range(copies + 1):
            n = int(rng.integers(3, 7))
            # each speaker (actor, vocal channel) has its own offset, so a wrong speaker would show
            feats.append(rng.normal(10 * clip.actor + 100 * clip.vocal_channel, 1.0, (n, dim)).astype(np.float32))
            speech.append(np.arange(n) > 0)  # the first window of every clip is not speech
            index.append(np.full(n, i, dtype=np.int32))
            copy.append(np.full(n, k, dtype=np.int32))
    return WindowSet(clips, np.concatenate(feats), np.concatenate(speech), np.concatenate(index), np.concatenate(copy))


@pytest.mark.parametrize("mode", ["random", "skew", "one"])
def test_simulation_draws_only_the_same_speakers_other_clips(mode: str) -> None:
    wset = synthetic_set(copies=1)
    pool = SpeakerPool(wset)
    rng = np.random.default_rng(1)
    for clip_i, clip in enumerate(wset.clips):
        for copy in (0, 1):
            for seconds in (0.0, 1.0, 5.0, math.inf):
                heard = pool.draw(clip_i, copy, seconds, rng, mode=mode, hop_s=0.5)
                if seconds == 0:
                    assert heard.size == 0
                    continue
                limit = None if math.isinf(seconds) else round(seconds / 0.5)
                assert limit is None or heard.size <= limit
                assert np.all(wset.clip_index[heard] != clip_i)  # never the clip itself
                assert np.all(wset.copy[heard] == copy) and np.all(wset.is_speech[heard])
                for other in {int(c) for c in wset.clip_index[heard]}:  # never another speaker or vocal channel
                    assert wset.clips[other].actor == clip.actor
                    assert wset.clips[other].vocal_channel == clip.vocal_channel
                if mode == "one":
                    assert len({wset.clips[int(c)].label for c in wset.clip_index[heard]}) <= 1
                if mode == "random" and math.isinf(seconds):
                    expected = sum(pool.speech_windows(o, copy).size for o in pool.others(clip_i))
                    assert heard.size == expected  # "all" = every speech window of the other clips


def test_normalised_training_inputs_equal_blended_statistics_of_the_drawn_windows() -> None:
    wset = synthetic_set(copies=0)
    pool = SpeakerPool(wset)
    pop = population(wset.features[wset.is_speech])
    spec = CalibrationSpec(prior_windows=4.0, reps=2, hop_s=0.5)
    clips = np.array([0, 5, 9, 30])
    z, idx = make_calibrated(pool, clips, spec, np.random.default_rng(3), pop=pop)
    # replay the same draws by hand: the runtime's SpeakerStats + blended, then (x - mean) / std
    rng = np.random.default_rng(3)
    rows = []
    for clip in clips:
        windows = pool.speech_windows(int(clip))
        for _ in range(spec.reps):
            secs = float(rng.choice(spec.seconds))
            mode = spec.modes[int(rng.integers(len(spec.modes)))]
            heard = pool.draw(int(clip), 0, secs, rng, mode=mode, hop_s=0.5)
            stats = SpeakerStats(wset.features.shape[1], spec.horizon_windows)
            for i in heard:
                stats.update(wset.features[i])
            mean, std = blended(stats, pop[0], pop[1], 4.0)
            rows.append((wset.features[windows] - mean) / std)
            if heard.size:  # and the closed form of the module docstring of emostream.engine.calibration
                x = wset.features[heard].astype(np.float64)
                n = len(x)
                m = (4.0 * pop[0] + n * x.mean(0)) / (4.0 + n)
                v = (4.0 * pop[1].astype(np.float64) ** 2 + n * x.var(0)) / (4.0 + n)
                np.testing.assert_allclose(mean, m, rtol=1e-5)
                np.testing.assert_allclose(std, np.sqrt(v), rtol=1e-5)
            else:
                np.testing.assert_array_equal(mean, pop[0])
    np.testing.assert_allclose(z, np.concatenate(rows), rtol=1e-6, atol=1e-6)
    assert np.all(wset.is_speech[idx]) and len(idx) == len(z)
    assert spec.horizon_windows == 1200  # the runtime's default horizon (600 s) at a 0.5 s hop


def test_calibration_spec_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match="calibration-prior"):
        CalibrationSpec(prior_windows=0.0)
    with pytest.raises(ConfigError, match="calibration-reps"):
        CalibrationSpec(prior_windows=20.0, reps=0)
    with pytest.raises(ConfigError, match="modes"):
        CalibrationSpec(prior_windows=20.0, modes=("angry",))
    meta = CalibrationSpec(prior_windows=20.0).metadata()
    assert meta["prior_windows"] == 20.0 and meta["trained_with"]["seconds"][-1] == "all"


def make_song_folder(tmp_path: Path) -> Path:
    """Song clips for actors 1 and 2 (fixture speech audio under song names, emotions 1-6)."""
    song = tmp_path / "song"
    for clip in list_clips(FIXTURES):
        if clip.emotion_code <= 6:
            dest = song / f"Actor_{clip.actor:02d}" / clip.path.name.replace("03-01-", "03-02-", 1)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip.path, dest)
    return song


def test_song_loader_and_splits_keep_an_actors_speech_and_song_together(tmp_path: Path) -> None:
    song_dir = make_song_folder(tmp_path)
    song = list_song_clips(song_dir)
    assert len(song) == 12 and {c.vocal_channel for c in song} == {2}
    with pytest.raises(DatasetError, match="vocal channel 01 in a song folder"):
        list_song_clips(FIXTURES)
    with pytest.raises(DatasetError, match="does not exist"):
        list_song_clips(tmp_path / "missing")
    bad = song_dir / "Actor_01" / "03-02-07-02-01-01-01.flac"
    shutil.copy(next(iter(song)).path, bad)
    with pytest.raises(DatasetError, match="disgust in a song folder"):
        list_song_clips(song_dir)
    bad.unlink()

    wset = synthetic_set()
    for seed in range(6):
        tr, va, te = emobox_split(wset, (1,), seed)
        test_actors = {wset.clips[i].actor for i in np.flatnonzero(te)}
        assert test_actors == {1}
        assert all(wset.clips[i].vocal_channel == 1 for i in np.flatnonzero(te | va))  # EmoBox tests speech only
        for i in np.flatnonzero(tr):
            assert wset.clips[i].actor not in test_actors | {wset.clips[j].actor for j in np.flatnonzero(va)}
        assert any(wset.clips[i].vocal_channel == 2 for i in np.flatnonzero(tr))  # training keeps the song
    tr, va, te = random_split(synthetic_set(takes=4), seed=42)
    assert not np.any((tr & va) | (tr & te) | (va & te)) and np.all(tr | va | te)
    assert {synthetic_set(takes=4).clips[i].vocal_channel for i in np.flatnonzero(te)} == {1, 2}
    both = concat_windows([synthetic_set(seed=1), synthetic_set(seed=2)])
    assert len(both.clips) == 2 * len(wset.clips) and both.clip_index.max() == len(both.clips) - 1


def test_arousal_ua_and_uncertainty_rule() -> None:
    labels = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    probs = np.eye(8, dtype=np.float32)
    y = np.arange(8, dtype=np.int32)
    assert arousal_ua(probs, y, labels) == 1.0  # disgust (0.5 weight) is left out
    flipped = probs[[4, 4, 0, 4, 0, 0, 6, 0]]  # every clip read at the wrong arousal
    assert arousal_ua(flipped, y, labels) == 0.0
    rng = np.random.default_rng(0)
    n = 400
    y_win = rng.integers(0, 8, n).astype(np.int32)
    confident = rng.random(n) < 0.6
    p = np.full((n, 8), 0.1, dtype=np.float32)
    p[np.arange(n), y_win] = np.where(confident, 0.9, 0.1)  # confident windows are right, the others a tie
    p[~confident, (y_win[~confident] + 1) % 8] = 0.3
    z = rng.normal(size=(n, 4)).astype(np.float32)
    chosen = choose_uncertainty(p, y_win, z)
    assert chosen["validation"]["uncertain_share"] <= 0.30 + 1e-9
    figs = uncertain_figures(p, y_win, z, 0.5, None)
    assert figs["uncertain_share"] == pytest.approx(np.mean(~confident))
    assert figs["accuracy_certain"] == 1.0
    # the population rule: a voice far from every training speaker is uncertain even when the model is confident
    pop_z = rng.normal(size=(n, 3)).astype(np.float32)
    with_pop = choose_uncertainty(p, y_win, z, pop_z)
    limit = with_pop["max_population_rms_z"]
    assert limit is not None and 1.0 < limit < 3.0
    far = np.full((1, 3), 10.0, dtype=np.float32)
    one = p[confident][:1]
    kwargs = {"population_z": far, "max_population_rms_z": limit}
    assert uncertain_figures(one, y_win[confident][:1], z[:1], 0.0, None, **kwargs)["uncertain_share"] == 1.0
    reading = reading_config({**with_pop, "population_columns": 3})
    assert reading.max_population_rms_z == limit and reading.population_columns == 3
    assert population_columns(feature_config_for("resnet_mlp", embedding_stride_frames=50), 403) == 115
    voice = feature_config_for("resnet_mlp", voice=True, voice_layer_means=(2, 3))
    assert population_columns(voice, 883) == 115  # the statistics only, not the voice encoder's columns
    both = feature_config_for("resnet_mlp", voice=True, voice_layer_means=(2, 3), whisper_layers=(1,))
    assert population_columns(both, 1651) == 115  # nor the Whisper part's


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TF, reason="needs TensorFlow (train extra)")
def test_uncertainty_is_chosen_on_validation_windows_as_heard_and_through_g711() -> None:
    wset = synthetic_set(copies=0, seed=1)
    phone = synthetic_set(copies=0, seed=2)  # the same clips, other windows: their "G.711" round trip
    pool = SpeakerPool(wset)
    pop = population(wset.features[wset.is_speech])
    spec = CalibrationSpec(prior_windows=4.0, reps=1, hop_s=0.5)
    val = np.array([0, 5, 9])
    z_va, i_va = make_calibrated(
        pool, val, spec, np.random.default_rng(0), pop=pop, reps=1, seconds=60.0, mode="random"
    )
    args = {"z_va": z_va, "i_va": i_va, "pop": pop, "n_pop": 3, "seed": [1]}
    z, y, pop_z = uncertainty_windows(wset, None, val, spec, **args)
    assert z is z_va and len(y) == len(pop_z) == len(z_va)
    z, y, pop_z = uncertainty_windows(wset, SpeakerPool(phone), val, spec, **args)
    phone_speech = int(sum(phone.is_speech[phone.clip_index == c].sum() for c in val))
    assert len(z) == len(y) == len(pop_z) == len(z_va) + phone_speech
    np.testing.assert_array_equal(z[: len(z_va)], z_va)
    np.testing.assert_array_equal(
        y[len(z_va) :], np.repeat(phone.labels[val], [phone.is_speech[phone.clip_index == c].sum() for c in val])
    )
    np.testing.assert_allclose(
        pop_z[len(z_va) :, 0],
        ((phone.features[phone.is_speech & np.isin(phone.clip_index, val)][:, 0] - pop[0][0]) / pop[1][0]),
        rtol=1e-6,
    )


def test_calibrated_model_exports_its_sections_and_runs_calibrated_in_the_runtime(tmp_path: Path) -> None:
    from conftest import run_cli

    from emostream.config import Config
    from emostream.engine.plan import make_plan
    from emostream.inference.model import EmotionModel
    from emostream.train.cli import main

    out = tmp_path / "out"
    argv = ["train", "--data", str(FIXTURES), "--song", str(make_song_folder(tmp_path)), "--model", "mlp"]
    argv += ["--calibration-prior", "5", "--calibration-reps", "2", "--epochs", "2", "--out", str(out)]
    argv += ["--cache", str(tmp_path / "cache"), "--workers", "1", "--name", "cal", "--min-top-probability", "0.3"]
    argv += ["--max-population-rms-z", "1.7"]
    assert main(argv) == 0
    data = json.loads((out / "cal.json").read_text())
    assert data["calibration"]["prior_windows"] == 5.0
    assert data["reading"]["min_top_probability"] == 0.3 and "arousal_weights" in data["reading"]
    assert data["reading"]["max_population_rms_z"] == 1.7 and data["reading"]["population_columns"] == 115
    assert data["training"]["clips_song"] == 12 and data["training"]["clips_speech"] == 16
    assert data["metrics"]["int8_vs_float_training_windows"]["top1_agreement"] > 0.8
    model = EmotionModel.load(out / "cal.json")
    plan = make_plan(Config(), model)
    assert plan.calibrated and plan.prior_windows == 5.0
    # the TFLite model takes normalised input: at cold start the runtime's path is predict_normalised(prepare(x))
    x = np.stack([model.metadata.norm_mean, model.metadata.norm_mean + model.metadata.norm_std])
    np.testing.assert_allclose(model.predict_batch(x), model.predict_normalised(model.prepare(x)))
    clip = FIXTURES / "Actor_01" / "03-01-05-02-01-01-01.flac"
    proc = run_cli("--file", str(clip), "--fast", "--no-dashboard", "--jsonl", "-", "--model", str(out / "cal.json"))
    assert proc.returncode == 0, proc.stderr.decode()
    hops = [json.loads(line) for line in proc.stdout.decode().splitlines() if '"hop"' in line]
    scored = [h for h in hops if h["scores"] is not None]
    assert scored and all("uncertain" in h and "arousal" in h for h in hops)


def full_song_dir() -> Path | None:
    env = os.environ.get("EMOSTREAM_RAVDESS_SONG")
    path = Path(env) if env else REPO.parent / "shared" / "datasets" / "ravdess-song-16k"
    return path if (path / "Actor_01").is_dir() else None


@pytest.mark.full_data
@pytest.mark.slow
def test_full_song_set_and_emobox_folds_keep_actors_together() -> None:
    song_dir = full_song_dir()
    speech_env = os.environ.get("EMOSTREAM_RAVDESS")
    speech_dir = Path(speech_env) if speech_env else REPO.parent / "shared" / "datasets" / "ravdess-speech-16k"
    if song_dir is None or not (speech_dir / "folds.json").is_file():
        pytest.skip("full RAVDESS speech + song sets not found (set EMOSTREAM_RAVDESS and EMOSTREAM_RAVDESS_SONG)")
    song = list_song_clips(song_dir)
    assert len(song) == 1012 and 18 not in {c.actor for c in song}
    assert {c.emotion for c in song} == {"neutral", "calm", "happy", "sad", "angry", "fearful"}
    clips = list_clips(speech_dir) + song
    wset = WindowSet(
        clips,
        np.zeros((len(clips), 1), np.float32),
        np.ones(len(clips), bool),
        np.arange(len(clips), dtype=np.int32),
        np.zeros(len(clips), np.int32),
    )
    for k, actors in load_folds(speech_dir / "folds.json").items():
        tr, va, te = emobox_split(wset, actors, 42 + k)
        assert sum(te) == 240 and {clips[i].vocal_channel for i in np.flatnonzero(te | va)} == {1}
        held_out = {clips[i].actor for i in np.flatnonzero(te | va)}
        assert not {clips[i].actor for i in np.flatnonzero(tr)} & held_out
