"""Evaluation protocols at clip level: ``random`` (stratified 80/20) and ``emobox`` (6 actor-independent folds).

Each split trains on the training clips' windows (with their augmented copies),
stops early on a validation part of the *training* clips/actors, exports int8 and
scores the untouched test clips (mean of their speech windows' probabilities) with
the float Keras model and the int8 TFLite model. The EmoBox loop can also score the
test clips after a G.711 telephone round trip (``emobox_g711``) and with per-speaker
normalisation (``emobox_speaker_adaptive``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.inference.metadata import EMOTIONS
from emostream.train.dataset import WindowSet, clip_scores
from emostream.train.export import representative_sample, run_tflite, to_tflite, write_model
from emostream.train.fit import Fitted, TrainConfig, fit

N_LABELS = len(EMOTIONS)
Bool = npt.NDArray[np.bool_]


def metrics(y_true: npt.NDArray[np.int32], y_pred: npt.NDArray[np.int64]) -> dict[str, float]:
    """UA (unweighted average recall), WA (accuracy) and macro-F1 over the 8 classes, as fractions."""
    recalls, f1s = [], []
    for c in range(N_LABELS):
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        support, predicted = float(np.sum(y_true == c)), float(np.sum(y_pred == c))
        if support:
            recalls.append(tp / support)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        if support or predicted:
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {"ua": float(np.mean(recalls)), "wa": float(np.mean(y_true == y_pred)), "macro_f1": float(np.mean(f1s))}


@dataclass
class SplitResult:
    """One train/test split: figures per variant ("float", "int8", "g711", "speaker_adaptive") and clip predictions."""

    fold: str
    test_actors: list[int]
    figures: dict[str, dict[str, float]]
    test_clips: npt.NDArray[np.intp]
    predictions: dict[str, npt.NDArray[np.int64]]
    agreement: float
    mean_abs_dp: float
    epochs: int
    best_epoch: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _validation_actors(train_actors: list[int], seed: int) -> list[int]:
    """One male and one female training actor held out for early stopping."""
    rng = np.random.default_rng(seed)
    males = [a for a in train_actors if a % 2]
    females = [a for a in train_actors if a % 2 == 0]
    return sorted([int(rng.choice(males)), int(rng.choice(females))])


def speaker_normalise(wset: WindowSet) -> npt.NDArray[np.float32]:
    """Features z-scored per actor with statistics of that actor's own (unaugmented) windows, per last-axis column."""
    out = np.empty_like(wset.features)
    actors = wset.actors[wset.clip_index]
    axes = tuple(range(wset.features.ndim - 1))
    for actor in np.unique(actors):
        rows = actors == actor
        own = wset.features[rows & (wset.copy == 0)]
        mean, std = own.mean(axis=axes), np.maximum(own.std(axis=axes), 1e-6)
        out[rows] = (wset.features[rows] - mean) / std
    return out


def run_split(
    wset: WindowSet,
    train_clips: Bool,
    val_clips: Bool,
    test_clips: Bool,
    cfg: TrainConfig,
    *,
    fold: str,
    g711: WindowSet | None = None,
    features: npt.NDArray[np.float32] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    export_dir: Path | None = None,
    feature_cfg: FeatureConfig | None = None,
    vad_cfg: VadConfig | None = None,
) -> SplitResult:
    """Train on ``train_clips`` (speech windows, augmented copies included), early-stop on ``val_clips``, test."""
    x_all = wset.features if features is None else features
    speech = wset.is_speech
    tr = wset.windows_of(train_clips, copies=True)
    tr = tr[speech[tr]]
    va = wset.windows_of(val_clips, copies=False)
    va = va[speech[va]]
    y_win = wset.window_labels
    fitted = fit(x_all[tr], y_win[tr], N_LABELS, cfg, validation=(x_all[va], y_win[va]), on_epoch=on_epoch)
    te = wset.windows_of(test_clips, copies=False)
    test_idx = np.flatnonzero(test_clips)
    rep = representative_sample(x_all[tr], 500, cfg.seed)
    int8 = to_tflite(fitted.model, fitted.prepare(rep))
    y_true = wset.labels[test_idx]
    p_float = fitted.predict(x_all[te])
    p_int8 = run_tflite(int8, fitted.prepare(x_all[te]))
    preds: dict[str, npt.NDArray[np.int64]] = {}
    probs = {}
    for name, p in (("float", p_float), ("int8", p_int8)):
        probs[name] = clip_scores(p, speech[te], wset.clip_index[te], len(wset.clips))[test_idx]
        preds[name] = np.argmax(probs[name], axis=1)
    if g711 is not None:
        te_g = g711.windows_of(test_clips, copies=False)
        p_g = run_tflite(int8, fitted.prepare(g711.features[te_g]))
        preds["g711"] = np.argmax(
            clip_scores(p_g, g711.is_speech[te_g], g711.clip_index[te_g], len(wset.clips))[test_idx], axis=1
        )
    figures = {name: metrics(y_true, pred) for name, pred in preds.items()}
    va_all = wset.windows_of(val_clips, copies=False)
    val_idx = np.flatnonzero(val_clips)
    p_val = clip_scores(fitted.predict(x_all[va_all]), speech[va_all], wset.clip_index[va_all], len(wset.clips))
    figures["validation"] = metrics(wset.labels[val_idx], np.argmax(p_val[val_idx], axis=1))
    actors = sorted({int(a) for a in wset.actors[test_idx]})
    if export_dir is not None and feature_cfg is not None and vad_cfg is not None:
        _export_fold(
            export_dir=export_dir,
            fold=fold,
            cfg=cfg,
            fitted=fitted,
            feature_cfg=feature_cfg,
            vad_cfg=vad_cfg,
            x_train=x_all[tr],
            test_actors=actors,
            figures=figures,
        )
    return SplitResult(
        fold=fold,
        test_actors=actors,
        figures=figures,
        test_clips=test_idx,
        predictions=preds,
        agreement=float(np.mean(np.argmax(p_float, 1) == np.argmax(p_int8, 1))),
        mean_abs_dp=float(np.mean(np.abs(p_float - p_int8))),
        epochs=fitted.epochs_run,
        best_epoch=fitted.best_epoch,
    )


def _export_fold(
    *,
    export_dir: Path,
    fold: str,
    cfg: TrainConfig,
    fitted: Fitted,
    feature_cfg: FeatureConfig,
    vad_cfg: VadConfig,
    x_train: npt.NDArray[np.float32],
    test_actors: list[int],
    figures: dict[str, dict[str, float]],
) -> None:
    training = {
        "dataset": "RAVDESS speech",
        "license": "CC BY-NC-SA 4.0",
        "protocol": "emobox",
        "fold": fold,
        "test_actors": test_actors,
        "config": cfg.to_dict(),
    }
    rep = representative_sample(x_train, 500, cfg.seed)
    write_model(
        export_dir / f"fold_{fold}",
        name=cfg.family,
        family=cfg.family,
        fitted=fitted,
        feature_cfg=feature_cfg,
        vad_cfg=vad_cfg,
        representative=rep,
        training=training,
        metrics={"fold": figures},
    )


def random_split(wset: WindowSet, seed: int = 42) -> tuple[Bool, Bool, Bool]:
    """Stratified 80/20 clip split (seed fixed); 10 % of the training clips (stratified) kept for early stopping."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    idx = np.arange(len(wset.clips))
    labels = wset.labels
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=labels, random_state=seed)
    fit_idx, val_idx = train_test_split(train_idx, test_size=0.1, stratify=labels[train_idx], random_state=seed)
    masks = []
    for chosen in (fit_idx, val_idx, test_idx):
        mask = np.zeros(len(idx), dtype=bool)
        mask[chosen] = True
        masks.append(mask)
    return masks[0], masks[1], masks[2]


def emobox_split(wset: WindowSet, test_actors: tuple[int, ...], seed: int) -> tuple[Bool, Bool, Bool]:
    """Train / validation / test clip masks for one fold; validation actors come from the training actors."""
    actors = wset.actors
    test = np.isin(actors, test_actors)
    train_actors = sorted({int(a) for a in actors[~test]})
    val = np.isin(actors, _validation_actors(train_actors, seed))
    return ~test & ~val, val, test


def summarise(results: list[SplitResult], variant: str) -> dict[str, Any]:
    """Mean and per-fold figures of one variant ("float", "int8", "g711")."""
    folds = [
        {"fold": r.fold, "test_actors": r.test_actors, **r.figures[variant]} for r in results if variant in r.figures
    ]
    keys = ("ua", "wa", "macro_f1")
    mean = {k: float(np.mean([f[k] for f in folds])) for k in keys}
    return {"mean": mean, "folds": folds}


def confusion(results: list[SplitResult], y_all: npt.NDArray[np.int32], variant: str) -> npt.NDArray[np.int64]:
    """Confusion matrix (true rows × predicted columns) pooled over the splits' test clips."""
    matrix = np.zeros((N_LABELS, N_LABELS), dtype=np.int64)
    for r in results:
        if variant in r.predictions:
            np.add.at(matrix, (y_all[r.test_clips], r.predictions[variant]), 1)
    return matrix
