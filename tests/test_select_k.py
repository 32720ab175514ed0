"""SelectKBest column selection (`--select-k`): fitted on training rows only, stored in the metadata,
applied by the runtime live and in `analyze`, and refused when the metadata disagrees with the features."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FIXTURES, fixture_clip, run_cli

from emostream.errors import ConfigError, ModelError
from emostream.frontend.features import FeatureConfig, summary_feature_names
from emostream.inference.metadata import EMOTIONS, ModelMetadata
from emostream.inference.model import EmotionModel

TRAIN_FEATURES = FeatureConfig(pitch=True, deltas=True)  # train's summary front-end (no embedding)
N_COLUMNS = len(summary_feature_names(TRAIN_FEATURES))  # 115
K = 12

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn (train)")
# A marker, not importorskip: importing TensorFlow at collection costs ~12 s even when slow tests are deselected.
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow (train extra)")


@needs_sklearn
def test_select_columns_keeps_the_informative_columns_sorted() -> None:
    from emostream.train.fit import select_columns

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4, dtype=np.int32), 50)
    x = rng.normal(size=(200, 10)).astype(np.float32)
    x[:, 7] += 3.0 * y  # the two columns that carry the class
    x[:, 2] -= 2.0 * y
    assert select_columns(x, y, 2) == (2, 7)
    assert select_columns(x, y, 0) is None
    assert select_columns(x, y, 10) is None  # all columns: no selection stored
    with pytest.raises(ConfigError, match=r"expected 0 \(all\) to 10"):
        select_columns(x, y, 11)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--model", "cnn", "--select-k", "20"], "the CNN reads MFCC frames"),
        (["--select-k", "20", "--calibration-prior", "20"], "calibrated training keeps all columns"),
        (["--select-k", "-3"], "--select-k is -3"),
    ],
)
def test_the_cli_refuses_a_selection_it_cannot_apply_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    from emostream.train.cli import main

    cache = tmp_path / "cache"
    argv = ["train", "--data", str(FIXTURES), "--out", str(tmp_path), "--cache", str(cache), *extra]
    assert main(argv) == ConfigError.exit_code
    assert fragment in capsys.readouterr().out
    assert not cache.exists()  # refused before feature extraction


def test_the_runtime_refuses_repeated_or_unordered_indices(tmp_path: Path) -> None:
    def load(selected: list[int]) -> ModelMetadata:
        data = _unit_metadata(tuple(sorted(set(selected)))).to_dict()
        data.update(selected_features=selected, input_shape=[len(selected)])
        data["normalization"] = {"mean": [0.0] * len(selected), "std": [1.0] * len(selected)}
        path = tmp_path / "unit.json"
        path.write_text(json.dumps(data))
        return ModelMetadata.load(path)

    assert load([3, 8, 40]).selected_features == (3, 8, 40)
    for bad in ([3, 3, 40], [40, 8, 3]):
        with pytest.raises(ModelError, match="repeat or are out of order"):
            load(bad)


def test_compare_prints_mean_std_and_paired_differences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emostream.train.compare import main

    def report(name: str, family: str, k: int, uas: list[float]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        folds = [{"fold": str(i + 1), "ua": ua, "wa": ua + 0.01} for i, ua in enumerate(uas)]
        config = {"train": {"family": family, "select_k": k}, "features": {"feature_set": "summary"}}
        (folder / "metrics_emobox.json").write_text(json.dumps({"folds": folds, "config": config}))
        return folder

    base = report("mlp_all", "mlp", 0, [0.50, 0.40, 0.60])
    other = report("mlp_k20", "mlp", 20, [0.52, 0.43, 0.63])
    assert main([str(base), str(other), "--baseline", str(base)]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].startswith("| mlp, all columns (`mlp_all`) | 50.0 ± 10.0 | 51.0 ± 10.0 | 50.0 / 40.0 / 60.0 |")
    assert rows[3].startswith("| mlp, K = 20 (`mlp_k20`) | 52.7 ± 10.0 |") and rows[3].endswith("| +2.7 ± 0.6 |")
    assert main([str(tmp_path / "missing")]) == 6


def _unit_metadata(selected: tuple[int, ...]) -> ModelMetadata:
    from emostream.frontend.vad import VadConfig

    width = len(selected)
    return ModelMetadata(
        name="unit",
        family="mlp",
        labels=EMOTIONS,
        feature_config=TRAIN_FEATURES,
        vad_config=VadConfig(),
        norm_mean=np.zeros(width, dtype=np.float32),
        norm_std=np.ones(width, dtype=np.float32),
        input_shape=(width,),
        selected_features=selected,
        tflite_file="unit.tflite",
        sha256="0" * 64,
    )


# --- a small model trained with --select-k on the fixture clips (TensorFlow; ~20 s) ---


@pytest.fixture(scope="module")
def selected_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`emostream train --model mlp --select-k 12` on the 16 fixture clips; the metadata path."""
    from emostream.train.cli import main

    root = tmp_path_factory.mktemp("select_k")
    argv = ["train", "--data", str(FIXTURES), "--song", "", "--model", "mlp", "--select-k", str(K), "--epochs", "2"]
    argv += ["--out", str(root / "out"), "--cache", str(root / "cache"), "--workers", "1", "--name", "sel"]
    assert main(argv) == 0
    return root / "out" / "sel.json"


@needs_tf
@pytest.mark.slow
def test_the_metadata_stores_the_selection_fitted_on_the_training_windows(selected_model: Path) -> None:
    from emostream.train.dataset import build_windows
    from emostream.train.fit import select_columns
    from emostream.train.ravdess import list_clips

    meta = EmotionModel.load(selected_model).metadata
    selected = meta.selected_features
    assert selected is not None and len(selected) == K and meta.input_shape == (K,)
    wset = build_windows(
        list_clips(FIXTURES), meta.feature_config, meta.vad_config, cache_dir=selected_model.parent.parent / "cache"
    )
    keep = wset.is_speech
    assert wset.features.shape[1] == N_COLUMNS
    assert select_columns(wset.features[keep], wset.window_labels[keep], K) == selected
    names = summary_feature_names(meta.feature_config)
    assert meta.feature_names == [names[i] for i in selected]


def _hops(stdout: bytes) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stdout.decode().splitlines()]
    return [r for r in records if r["type"] == "hop" and r.get("scores")]


@needs_tf
@pytest.mark.slow
def test_a_selected_model_runs_live_with_the_trained_selection(selected_model: Path) -> None:
    """Live hop scores equal the int8 model on training's own input preparation of the 115-column windows."""
    from emostream.audio.files import load_mono
    from emostream.frontend.windowing import WindowExtractor
    from emostream.inference.metadata import normalize_input
    from emostream.train.export import run_tflite

    clip = fixture_clip(actor=1, emotion=5)
    run = ("--file", str(clip), "--model", str(selected_model), "--no-dashboard", "--jsonl", "-")
    proc = run_cli(*run, "--labels", "all")  # the model's own eight scores
    assert proc.returncode == 0, proc.stderr.decode()
    hops = _hops(proc.stdout)
    assert hops and all(abs(sum(h["scores"].values()) - 1) < 1e-2 for h in hops)

    meta = EmotionModel.load(selected_model).metadata
    extractor = WindowExtractor(meta.feature_config, meta.vad_config, first_window_ms=1000.0)
    audio = load_mono(clip, 16000)
    windows = [w for i in range(0, audio.size, 800) for w in extractor.process(audio[i : i + 800])]
    by_end = {round(w.end_s, 3): w.features for w in windows + extractor.flush()}
    assert all(f.shape == (N_COLUMNS,) for f in by_end.values())
    matched = [(h, by_end[round(h["t_end"], 3)]) for h in hops if round(h["t_end"], 3) in by_end]
    assert len(matched) >= 3
    x = np.stack([f for _, f in matched])
    z = normalize_input(x, mean=meta.norm_mean, std=meta.norm_std, selected=meta.selected_features)
    expected = run_tflite(selected_model.with_suffix(".tflite").read_bytes(), z)
    live = np.array([[h["scores"][label] for label in EMOTIONS] for h, _ in matched])
    expected /= expected.sum(axis=1, keepdims=True)  # the runtime rescales int8 outputs to sum to 1
    np.testing.assert_allclose(live, expected, atol=2e-4)  # JSON rounds to 4 decimals
    # The selection matters: the first K columns instead of the stored ones give other scores.
    first_k = normalize_input(x, mean=meta.norm_mean, std=meta.norm_std, selected=tuple(range(K)))
    other = run_tflite(selected_model.with_suffix(".tflite").read_bytes(), first_k)
    assert np.abs(other - live).max() > 1e-2


@needs_tf
@pytest.mark.slow
def test_a_selected_model_runs_in_analyze(selected_model: Path) -> None:
    clip = fixture_clip(actor=2, emotion=5)
    proc = run_cli("analyze", "--jsonl", "--model", str(selected_model), str(clip))
    assert proc.returncode == 0, proc.stderr.decode()
    record = json.loads(proc.stdout.decode().splitlines()[0])
    assert record["emotion"] in EMOTIONS and abs(sum(record["scores"].values()) - 1) < 1e-3
    assert record["speech_seconds"] > 0


@needs_tf
@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ("drop_one", "input_shape"),
        ("out_of_range", "out of range"),
        ("unordered", "out of order"),
        ("no_selection", "input_shape"),
    ],
)
def test_the_runtime_refuses_a_selection_that_does_not_fit_the_features(
    selected_model: Path, change: str, fragment: str
) -> None:
    data = json.loads(selected_model.read_text(encoding="utf-8"))
    selected = list(data["selected_features"])
    if change == "drop_one":
        data["selected_features"] = selected[:-1]
    elif change == "out_of_range":
        data["selected_features"] = [*selected[:-1], N_COLUMNS]
    elif change == "unordered":
        data["selected_features"] = selected[::-1]
    else:
        data["selected_features"] = None
    bad = selected_model.with_name(f"bad_{change}.json")  # beside the .tflite its tflite_file names
    bad.write_text(json.dumps(data), encoding="utf-8")
    clip = fixture_clip(actor=1, emotion=5)
    for args in (("analyze", "--jsonl", "--model", str(bad), str(clip)), ("--file", str(clip), "--model", str(bad))):
        proc = run_cli(*args, "--no-dashboard") if args[0] == "--file" else run_cli(*args)
        stderr = proc.stderr.decode()
        assert proc.returncode == ModelError.exit_code, stderr
        assert fragment in stderr and str(bad) in stderr and "Traceback" not in stderr


@needs_tf
@pytest.mark.slow
def test_the_selection_of_a_split_is_fitted_on_its_training_clips_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_split hands SelectKBest exactly the training windows: no validation or test actor's rows."""
    import emostream.train.fit as fit_module
    from emostream.frontend.vad import VadConfig
    from emostream.train.dataset import build_windows
    from emostream.train.evaluate import run_split
    from emostream.train.fit import TrainConfig
    from emostream.train.models import ModelConfig
    from emostream.train.ravdess import list_clips

    wset = build_windows(list_clips(FIXTURES), TRAIN_FEATURES, VadConfig(), cache_dir=tmp_path, workers=1)
    actors = wset.actors
    val = np.zeros(len(wset.clips), dtype=bool)
    val[np.flatnonzero(actors == 1)[:2]] = True
    train, test = (actors == 1) & ~val, actors == 2
    seen: list[np.ndarray] = []
    real = fit_module.select_columns

    def spy(x: np.ndarray, y: np.ndarray, k: int) -> tuple[int, ...] | None:
        seen.append(x.copy())
        return real(x, y, k)

    monkeypatch.setattr(fit_module, "select_columns", spy)
    cfg = TrainConfig(family="mlp", epochs=2, batch_size=16, select_k=K, model=ModelConfig(width=16))
    result = run_split(wset, train, val, test, cfg, fold="t")
    rows = wset.windows_of(train, copies=True)
    rows = rows[wset.is_speech[rows]]
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], wset.features[rows])
    assert result.test_actors == [2] and "int8" in result.figures
