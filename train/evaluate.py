"""Evaluation protocols at clip level: ``random`` (stratified 80/20) and ``emobox`` (6 actor-independent folds).

Each split trains on the training clips' windows (with their augmented copies),
stops early on a validation part of the *training* clips/actors, exports int8 and
scores the untouched test clips (mean of their speech windows' probabilities) with
the float Keras model and the int8 TFLite model. The EmoBox loop can also score the
test clips after a G.711 telephone round trip (``emobox_g711``) and with per-speaker
normalisation (``emobox_speaker_adaptive``).

:func:`run_calibrated_split` is the speaker-calibrated variant: training inputs normalised
with statistics simulated from each clip's speaker's other clips
(:mod:`emostream.train.calibration`), test clips scored after 0 .. 120 s of their speaker's
other speech (the runtime's calibration), with arousal and uncertainty figures.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.engine.reading import ReadingConfig
from emostream.errors import DatasetError
from emostream.frontend.features import FeatureConfig, summary_feature_names
from emostream.frontend.vad import VadConfig
from emostream.inference.metadata import EMOTIONS
from emostream.train.calibration import CalibrationSpec, SpeakerPool, make_calibrated, population
from emostream.train.dataset import WindowSet, clip_scores
from emostream.train.export import representative_sample, run_tflite, to_tflite, write_model
from emostream.train.fit import Fitted, TrainConfig, fit
from emostream.train.reading import arousal_ua, choose_uncertainty, label_probs, uncertain_figures

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
    """One male and one female training actor held out for early stopping (RAVDESS: odd actors are male)."""
    rng = np.random.default_rng(seed)
    males = [a for a in train_actors if a % 2]
    females = [a for a in train_actors if a % 2 == 0]
    return sorted([int(rng.choice(males)), int(rng.choice(females))])


def validation_speakers(wset: WindowSet, candidates: Bool, seed: int) -> list[int]:
    """Speakers (``Clip.actor``) held out for early stopping and for choosing "uncertain".

    From every corpus among the ``candidates`` clips: one male and one female speaker, and
    one more of each per 30 speakers beyond the first 30 (ASED's 65: 2 + 2), drawn with the
    same seed per corpus (with RAVDESS alone: exactly :func:`_validation_actors`'s choice).
    """
    chosen: list[int] = []
    idx = np.flatnonzero(candidates)
    for corpus in dict.fromkeys(wset.clips[i].corpus for i in idx):
        mine = [wset.clips[i] for i in idx if wset.clips[i].corpus == corpus]
        if corpus == "ravdess":
            chosen += _validation_actors(sorted({c.actor for c in mine}), seed)
            continue
        rng = np.random.default_rng(seed)
        speakers = sorted({c.actor for c in mine})
        per_gender = 1 + max(0, len(speakers) - 30) // 30
        for gender in ("male", "female"):
            pool = sorted({c.actor for c in mine if c.gender == gender})
            if pool:
                chosen += [int(a) for a in rng.choice(pool, size=min(per_gender, len(pool)), replace=False)]
    return sorted(chosen)


def training_extras(wset: WindowSet, windows: npt.NDArray[np.intp]) -> dict[str, Any]:
    """What :func:`fit` needs beside inputs and labels for ``windows``: label masks, corpora and speakers."""
    clips = wset.clip_index[windows]
    return {
        "label_mask": wset.label_masks[clips],
        "groups": wset.corpora[clips],
        "speakers": wset.actors[clips],
    }


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
    fitted = fit(
        x_all[tr],
        y_win[tr],
        N_LABELS,
        cfg,
        validation=(x_all[va], y_win[va]),
        on_epoch=on_epoch,
        validation_mask=wset.label_masks[wset.clip_index[va]],
        **training_extras(wset, tr),
    )
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
        preds[name] = np.argmax(label_probs(probs[name], N_LABELS), axis=1)
    if g711 is not None:
        te_g = g711.windows_of(test_clips, copies=False)
        p_g = run_tflite(int8, fitted.prepare(g711.features[te_g]))
        p_g_clips = clip_scores(p_g, g711.is_speech[te_g], g711.clip_index[te_g], len(wset.clips))[test_idx]
        preds["g711"] = np.argmax(label_probs(p_g_clips, N_LABELS), axis=1)
    figures = {name: metrics(y_true, pred) for name, pred in preds.items()}
    va_all = wset.windows_of(val_clips, copies=False)
    val_idx = np.flatnonzero(val_clips)
    p_val = clip_scores(fitted.predict(x_all[va_all]), speech[va_all], wset.clip_index[va_all], len(wset.clips))
    figures["validation"] = metrics(wset.labels[val_idx], np.argmax(label_probs(p_val[val_idx], N_LABELS), axis=1))
    extra: dict[str, Any] = {}
    if x_all.ndim == 2:
        z_va, z_te = fitted.prepare(x_all[va]), fitted.prepare(x_all[te])
        chosen = choose_uncertainty(label_probs(run_tflite(int8, z_va), N_LABELS), y_win[va], z_va)
        te_speech = speech[te]
        extra["arousal"] = {"int8": arousal_ua(probs["int8"], y_true, EMOTIONS)}
        extra["uncertain"] = {
            "chosen": chosen,
            "int8": uncertain_figures(
                label_probs(p_int8[te_speech], N_LABELS),
                y_win[te][te_speech],
                z_te[te_speech],
                chosen["min_top_probability"],
                chosen["max_input_rms_z"],
            ),
        }
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
        agreement=_agreement(p_float, p_int8),
        mean_abs_dp=_mean_abs_dp(p_float, p_int8),
        epochs=fitted.epochs_run,
        best_epoch=fitted.best_epoch,
        extra=extra,
    )


def _agreement(p_float: npt.NDArray[np.float32], p_int8: npt.NDArray[np.float32]) -> float:
    """Share of windows whose top label is the same in float and int8 (labels' columns only)."""
    a, b = label_probs(p_float, N_LABELS), label_probs(p_int8, N_LABELS)
    return float(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))


def _mean_abs_dp(p_float: npt.NDArray[np.float32], p_int8: npt.NDArray[np.float32]) -> float:
    """Mean |float - int8| over the labels' probabilities (an arousal column is left out)."""
    return float(np.mean(np.abs(label_probs(p_float, N_LABELS) - label_probs(p_int8, N_LABELS))))


def _seconds_name(seconds: float) -> str:
    return f"int8_{seconds:g}s"


def run_calibrated_split(
    wset: WindowSet,
    train_clips: Bool,
    val_clips: Bool,
    test_clips: Bool,
    cfg: TrainConfig,
    *,
    calib: CalibrationSpec,
    fold: str,
    g711: WindowSet | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    export_dir: Path | None = None,
    feature_cfg: FeatureConfig | None = None,
    vad_cfg: VadConfig | None = None,
) -> SplitResult:
    """Speaker-calibrated train / early-stop / test of one split (see the module docstring).

    Training windows (speech, augmented copies included) are normalised with ``calib.reps``
    simulated calibrations each; validation clips with ``calib.eval_seconds`` of their
    speaker's other speech in random order. Variants in ``figures`` (clip level): ``int8``
    and ``float`` after ``calib.eval_seconds``; ``int8_<T>s`` for each curve amount T
    (``int8_0s`` = no calibration: the population normalisation); ``one_emotion_<T>s``
    (``calib.eval_seconds`` of clips of one random emotion); ``g711`` / ``g711_0s`` when
    ``g711`` windows are given (calibrated from the speaker's other G.711 clips);
    ``validation``. ``extra`` holds arousal UA per variant and the uncertainty figures.
    """
    pool = SpeakerPool(wset)
    y_win = wset.window_labels
    tr = wset.windows_of(train_clips, copies=True)
    tr = tr[wset.is_speech[tr]]
    pop = population(wset.features[tr])
    fold_key = zlib.crc32(fold.encode("utf-8"))
    rng = np.random.default_rng([cfg.seed, fold_key])
    copies = tuple(range(int(wset.copy.max()) + 1)) if len(wset.copy) else (0,)
    train_idx, val_idx, test_idx = (np.flatnonzero(m) for m in (train_clips, val_clips, test_clips))
    z_tr, i_tr = make_calibrated(pool, train_idx, calib, rng, pop=pop, copies=copies)
    z_va, i_va = make_calibrated(pool, val_idx, calib, rng, pop=pop, reps=1, seconds=calib.eval_seconds, mode="random")
    fitted = fit(
        z_tr,
        y_win[i_tr],
        N_LABELS,
        cfg,
        validation=(z_va, y_win[i_va]),
        on_epoch=on_epoch,
        population=pop,
        validation_mask=wset.label_masks[wset.clip_index[i_va]],
        **training_extras(wset, i_tr),
    )
    int8 = to_tflite(fitted.model, representative_sample(z_tr, 500, cfg.seed))
    # uncertainty thresholds on the validation speakers' speech windows (int8, calibrated as in the headline),
    # as heard and through G.711 (the model reads phone calls too)
    n_pop = population_columns(feature_cfg, wset.features.shape[1])
    gpool = SpeakerPool(g711) if g711 is not None else None
    z_un, y_un, pop_z = uncertainty_windows(
        wset, gpool, val_idx, calib, z_va=z_va, i_va=i_va, pop=pop, n_pop=n_pop, seed=[cfg.seed, 712, fold_key]
    )
    chosen = choose_uncertainty(label_probs(run_tflite(int8, z_un), N_LABELS), y_un, z_un, pop_z)
    chosen["population_columns"] = n_pop
    scored = _score_calibrated(
        pool, test_idx, calib, pop=pop, seed=[cfg.seed, 555, fold_key], int8=int8, fitted=fitted, chosen=chosen
    )
    if g711 is not None and gpool is not None:
        for name, seconds in (("g711", calib.eval_seconds), ("g711_0s", 0.0)):
            g_rng = np.random.default_rng([cfg.seed, 711, fold_key])
            z_g, i_g = make_calibrated(
                gpool, test_idx, calib, g_rng, pop=pop, reps=1, seconds=seconds, mode="random", all_windows=True
            )
            scored.probs[name] = _clip_probs(run_tflite(int8, z_g), i_g, g711, test_idx)
    y_true = wset.labels[test_idx]
    preds = {name: np.argmax(label_probs(p, N_LABELS), axis=1) for name, p in scored.probs.items()}
    figures = {name: metrics(y_true, pred) for name, pred in preds.items()}
    z_vall, i_vall = make_calibrated(
        pool,
        val_idx,
        calib,
        np.random.default_rng([cfg.seed, 77]),
        pop=pop,
        reps=1,
        seconds=calib.eval_seconds,
        mode="random",
        all_windows=True,
    )
    p_val = _clip_probs(fitted.predict_normalised(z_vall), i_vall, wset, val_idx)
    figures["validation"] = metrics(wset.labels[val_idx], np.argmax(label_probs(p_val, N_LABELS), axis=1))
    arousal = {name: arousal_ua(p, y_true, EMOTIONS) for name, p in scored.probs.items() if name != "float"}
    actors = sorted({int(a) for a in wset.actors[test_idx]})
    if export_dir is not None and feature_cfg is not None and vad_cfg is not None:
        reading = reading_config(chosen)
        _export_fold(
            export_dir=export_dir,
            fold=fold,
            cfg=cfg,
            fitted=fitted,
            feature_cfg=feature_cfg,
            vad_cfg=vad_cfg,
            x_train=z_tr,
            test_actors=actors,
            figures=figures,
            calibration=calib.metadata(),
            reading=reading.to_dict(),
        )
    return SplitResult(
        fold=fold,
        test_actors=actors,
        figures=figures,
        test_clips=test_idx,
        predictions=preds,
        agreement=scored.agreement,
        mean_abs_dp=scored.mean_abs_dp,
        epochs=fitted.epochs_run,
        best_epoch=fitted.best_epoch,
        extra={
            "arousal": arousal,
            "uncertain": scored.uncertain,
            "training_windows": len(z_tr),
            "probs": scored.probs,
            "validation_actors": sorted({int(a) for a in wset.actors[val_idx]}),
        },
    )


def population_columns(feature_cfg: FeatureConfig | None, width: int) -> int:
    """Columns the population distance rule looks at: the handcrafted summary statistics, which come first
    (all of ``width`` if unknown). Not the embeddings: the voice encoder's layer means read espeak-ng's
    machine voice as typical and hid how far its statistics lie from every training voice (v8). Nor the
    Whisper part (until 2026-12-05 its 768 columns were counted, so a model with it looked at the statistics
    and the first 768 embedding columns: `accurate` v10's ``population_columns`` 883)."""
    if feature_cfg is None or feature_cfg.feature_set != "summary":
        return width
    return len(summary_feature_names(dataclasses.replace(feature_cfg, embedding=None, voice=None, whisper=None)))


def _population_z(
    x: npt.NDArray[np.float32], pop: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]], n: int
) -> npt.NDArray[np.float32]:
    """Raw inputs' first ``n`` columns z-scored with the population statistics, (len(x), n)."""
    return ((x[:, :n] - pop[0][:n]) / pop[1][:n]).astype(np.float32)


def uncertainty_windows(
    wset: WindowSet,
    g711_pool: SpeakerPool | None,
    val_idx: npt.NDArray[np.intp],
    calib: CalibrationSpec,
    *,
    z_va: npt.NDArray[np.float32],
    i_va: npt.NDArray[np.intp],
    pop: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    n_pop: int,
    seed: list[int],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The windows :func:`choose_uncertainty` picks the thresholds on: (normalised inputs, classes, population z).

    The validation clips' calibrated speech windows ``z_va`` (window indices ``i_va`` into ``wset``),
    then, with the G.711 set's pool ``g711_pool``, the same clips' G.711 windows, calibrated from the
    speaker's other G.711 speech as the headline's G.711 variant is.
    """
    z, y, pop_z = z_va, wset.window_labels[i_va], _population_z(wset.features[i_va], pop, n_pop)
    if g711_pool is None:
        return z, y, pop_z
    g711 = g711_pool.wset
    rng = np.random.default_rng(seed)
    z_ph, i_ph = make_calibrated(
        g711_pool, val_idx, calib, rng, pop=pop, reps=1, seconds=calib.eval_seconds, mode="random"
    )
    return (
        np.concatenate([z, z_ph]),
        np.concatenate([y, g711.window_labels[i_ph]]),
        np.concatenate([pop_z, _population_z(g711.features[i_ph], pop, n_pop)]),
    )


def reading_config(chosen: dict[str, Any]) -> ReadingConfig:
    """The metadata's reading rules from :func:`choose_uncertainty`'s choice (+ ``population_columns``)."""
    return ReadingConfig(
        min_top_probability=float(chosen["min_top_probability"]),
        max_input_rms_z=chosen.get("max_input_rms_z"),
        max_population_rms_z=chosen.get("max_population_rms_z"),
        population_columns=chosen.get("population_columns") if chosen.get("max_population_rms_z") else None,
    )


def _clip_probs(
    p: npt.NDArray[np.float32], windows: npt.NDArray[np.intp], on: WindowSet, clips: npt.NDArray[np.intp]
) -> npt.NDArray[np.float32]:
    """Clip probabilities of ``clips`` from the window probabilities ``p`` of ``on``'s ``windows``."""
    return clip_scores(p, on.is_speech[windows], on.clip_index[windows], len(on.clips))[clips]


@dataclass
class _Scored:
    probs: dict[str, npt.NDArray[np.float32]]
    uncertain: dict[str, Any]
    agreement: float
    mean_abs_dp: float


def _score_calibrated(
    pool: SpeakerPool,
    test_idx: npt.NDArray[np.intp],
    calib: CalibrationSpec,
    *,
    pop: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    seed: list[int],
    int8: bytes,
    fitted: Fitted,
    chosen: dict[str, Any],
) -> _Scored:
    """Test clips after each amount of calibration speech (int8; float too for the headline amount)."""
    conditions: list[tuple[str, float, str]] = [(_seconds_name(s), s, "random") for s in calib.curve_seconds]
    if calib.eval_seconds not in calib.curve_seconds:
        conditions.append((_seconds_name(calib.eval_seconds), calib.eval_seconds, "random"))
    conditions.append((f"one_emotion_{calib.eval_seconds:g}s", calib.eval_seconds, "one"))
    out = _Scored({}, {"chosen": chosen}, float("nan"), float("nan"))
    y_win = pool.wset.window_labels
    speech = pool.wset.is_speech
    for name, seconds, mode in conditions:
        rng = np.random.default_rng(seed)  # the same draws for every amount: the curve differs only by the amount
        z, idx = make_calibrated(
            pool, test_idx, calib, rng, pop=pop, reps=1, seconds=seconds, mode=mode, all_windows=True
        )
        p8 = run_tflite(int8, z)
        out.probs[name] = _clip_probs(p8, idx, pool.wset, test_idx)
        sp = speech[idx]
        out.uncertain[name] = uncertain_figures(
            label_probs(p8[sp], N_LABELS),
            y_win[idx][sp],
            z[sp],
            chosen["min_top_probability"],
            chosen["max_input_rms_z"],
            population_z=_population_z(pool.x[idx[sp]], pop, chosen["population_columns"]),
            max_population_rms_z=chosen["max_population_rms_z"],
        )
        if seconds == calib.eval_seconds and mode == "random":
            out.probs["int8"] = out.probs[name]
            out.uncertain["int8"] = out.uncertain[name]
            pf = fitted.predict_normalised(z)
            out.probs["float"] = _clip_probs(pf, idx, pool.wset, test_idx)
            out.agreement = _agreement(pf, p8)
            out.mean_abs_dp = _mean_abs_dp(pf, p8)
    return out


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
    calibration: dict[str, Any] | None = None,
    reading: dict[str, Any] | None = None,
) -> None:
    """Write one fold's int8 model (``x_train``: raw windows, or calibrated inputs when ``calibration`` is given)."""
    training = {
        "dataset": "see the run's report config (corpora)",
        "protocol": "emobox or loco",
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
        representative_normalised=calibration is not None,
        calibration=calibration,
        reading=reading,
    )


def speech_clips(wset: WindowSet) -> Bool:
    """Mask of the speech clips (vocal channel 01), shape (n_clips,)."""
    return np.array([c.vocal_channel == 1 for c in wset.clips], dtype=bool)


def random_split(wset: WindowSet, seed: int = 42, subset: Bool | None = None) -> tuple[Bool, Bool, Bool]:
    """Stratified 80/20 clip split (seed fixed); 10 % of the training clips (stratified) kept for early stopping.

    ``subset``: only these clips take part (default all). Strata are emotion × vocal channel,
    so speech and song keep their shares on both sides.
    """
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    idx = np.flatnonzero(np.ones(len(wset.clips), dtype=bool) if subset is None else subset)
    strata = np.array([c.label * 10 + c.vocal_channel for c in wset.clips])[idx]
    train_idx, test_idx, strata_train, _ = train_test_split(
        idx, strata, test_size=0.2, stratify=strata, random_state=seed
    )
    fit_idx, val_idx = train_test_split(train_idx, test_size=0.1, stratify=strata_train, random_state=seed)
    masks = []
    for chosen in (fit_idx, val_idx, test_idx):
        mask = np.zeros(len(wset.clips), dtype=bool)
        mask[chosen] = True
        masks.append(mask)
    return masks[0], masks[1], masks[2]


def ravdess_random_split(wset: WindowSet, seed: int = 42, *, speech_only: bool) -> tuple[Bool, Bool, Bool]:
    """The earlier projects' protocol on RAVDESS: a stratified 80/20 split of its clips (speech only, or
    speech + song), validation from its training part; the clips of other corpora all join training.

    So ``random`` and ``random_speech_song`` test RAVDESS clips only, whatever ``--corpus`` adds.
    """
    ravdess = np.array([c.corpus == "ravdess" for c in wset.clips], dtype=bool)
    if not ravdess.any():
        raise DatasetError("the random protocols split RAVDESS clips; none is among the data given (--data)")
    subset = ravdess & speech_clips(wset) if speech_only else ravdess
    train, val, test = random_split(wset, seed=seed, subset=subset)
    return train | ~ravdess, val, test


def emobox_split(wset: WindowSet, test_actors: tuple[int, ...], seed: int) -> tuple[Bool, Bool, Bool]:
    """Train / validation / test clip masks for one fold; validation actors come from the training actors.

    Split by actor over speech and song alike (an actor's song never trains a model tested
    on that actor's speech); validation and test keep speech clips only (EmoBox is speech),
    training keeps the training actors' song clips when there are any.
    """
    actors = wset.actors
    speech = speech_clips(wset)
    test = np.isin(actors, test_actors)
    val = np.isin(actors, validation_speakers(wset, ~test & speech, seed))
    return ~test & ~val, val & speech, test & speech


def loco_split(wset: WindowSet, test_corpus: str, seed: int) -> tuple[Bool, Bool, Bool]:
    """Leave one corpus out: test on every speech clip of ``test_corpus``, train on the other corpora.

    RAVDESS song clips belong to RAVDESS's actors, so they leave with RAVDESS. Validation
    speakers (:func:`validation_speakers`) come from the training corpora.
    """
    corpus = np.array([c.corpus for c in wset.clips])
    speech = speech_clips(wset)
    test = corpus == test_corpus
    if not test.any():
        raise DatasetError(f"leave-one-corpus-out: no clip of {test_corpus!r} among the corpora given")
    if test.all():
        raise DatasetError(f"leave-one-corpus-out: only {test_corpus!r} given; add the other corpora (--corpus)")
    val = np.isin(wset.actors, validation_speakers(wset, ~test & speech, seed))
    return ~test & ~val, val & speech & ~test, test & speech


def summarise(results: list[SplitResult], variant: str) -> dict[str, Any]:
    """Mean, fold-to-fold std (sample, n - 1; 0 for one split) and per-fold figures of a variant ("float", "int8")."""
    folds = [
        {"fold": r.fold, "test_actors": r.test_actors, **r.figures[variant]} for r in results if variant in r.figures
    ]
    keys = ("ua", "wa", "macro_f1")
    mean = {k: float(np.mean([f[k] for f in folds])) for k in keys}
    std = {
        k: float(np.asarray([f[k] for f in folds], dtype=np.float64).std(ddof=1)) if len(folds) > 1 else 0.0
        for k in keys
    }
    return {"mean": mean, "std": std, "folds": folds}


def confusion(results: list[SplitResult], y_all: npt.NDArray[np.int32], variant: str) -> npt.NDArray[np.int64]:
    """Confusion matrix (true rows × predicted columns) pooled over the splits' test clips."""
    matrix = np.zeros((N_LABELS, N_LABELS), dtype=np.int64)
    for r in results:
        if variant in r.predictions:
            np.add.at(matrix, (y_all[r.test_clips], r.predictions[variant]), 1)
    return matrix
