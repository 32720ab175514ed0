"""Evaluation of what a reading means beyond its label: arousal UA and the "uncertain" rule.

*Arousal*: the runtime's arousal (:func:`emostream.engine.reading.arousal`, weights
:meth:`ReadingConfig.weights_for`: high = angry, happy, fearful, surprised 1; low =
neutral, calm, sad 0; disgust 0.5) of a clip's probabilities, or, for a model with its own
arousal output, the clip's mean of that output, thresholded at 0.5, against
the binary truth high/low. Disgust clips have no binary truth and are left out of the
arousal UA. UA = mean of the high and low recalls.

*Uncertain*: the runtime flags a window whose top probability is below
``min_top_probability``, whose (calibrated) normalised input has an RMS z-score above
``max_input_rms_z``, or whose first ``population_columns`` raw inputs z-scored with the
population's statistics have an RMS above ``max_population_rms_z`` (a voice unlike any
training speaker). :func:`choose_uncertainty` picks both on the validation actors'
windows (rule in its docstring); :func:`uncertain_figures` reports, on a test set, the
share of uncertain speech windows and the window accuracy when not uncertain. Window
probabilities stand in for the smoothed ones (the evaluation has no smoother).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.engine.reading import ReadingConfig, arousal

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
HIGH: frozenset[str] = frozenset({"angry", "happy", "fearful", "surprised"})
LOW: frozenset[str] = frozenset({"neutral", "calm", "sad"})
MAX_UNCERTAIN_SHARE = 0.30
THRESHOLDS: tuple[float, ...] = tuple(round(0.2 + 0.025 * i, 3) for i in range(25))  # 0.2 .. 0.8
RMS_Z_QUANTILE = 0.99
AROUSAL_NOTE = (
    "arousal UA: the runtime's arousal (ReadingConfig().weights_for(labels): angry, happy, fearful, surprised 1; "
    "neutral, calm, sad 0; disgust 0.5) of each clip's probabilities, >= 0.5 = high, against high/low truth; "
    "mean of the two recalls; disgust clips excluded (no binary truth)"
)
UNCERTAIN_RULE = (
    "min_top_probability: on the validation speakers' speech windows (as heard and through G.711 when the run has "
    "the G.711 set), the threshold in 0.2..0.8 (step 0.025) with the "
    f"highest accuracy when not uncertain among those leaving at most {MAX_UNCERTAIN_SHARE:.0%} of the windows "
    f"uncertain (lowest such threshold on ties); max_input_rms_z: the {RMS_Z_QUANTILE:.0%} quantile of the "
    "validation windows' input RMS z-score; max_population_rms_z: the same quantile of the RMS z-score of their "
    "handcrafted summary columns (population_columns) z-scored with the population statistics"
)


def arousal_truth(labels: Sequence[str]) -> F32:
    """Per label 1.0 (:data:`HIGH`), 0.0 (:data:`LOW`) or NaN (neither, e.g. disgust), shape (n_labels,)."""
    return np.array([1.0 if label in HIGH else 0.0 if label in LOW else np.nan for label in labels], dtype=np.float32)


def label_probs(outputs: F32, n_labels: int) -> F32:
    """The labels' probabilities of model outputs (n, n_labels [+ 1 arousal column]): the first ``n_labels`` columns."""
    return outputs[:, :n_labels]


def clip_arousal(outputs: F32, labels: Sequence[str], cfg: ReadingConfig | None = None) -> npt.NDArray[np.float64]:
    """Arousal in [0, 1] of each row of model outputs (n, n_labels) or (n, n_labels + 1), shape (n,).

    With an arousal column (a model with its own arousal output) that column; otherwise the
    runtime's weighted sum of the probabilities (:func:`emostream.engine.reading.arousal`).
    """
    if outputs.shape[1] == len(labels) + 1:
        return np.clip(np.asarray(outputs[:, -1], dtype=np.float64), 0.0, 1.0)
    weights = (cfg or ReadingConfig()).weights_for(labels)
    return np.array([arousal(p, weights) for p in outputs], dtype=np.float64)


def arousal_ua(probs: F32, y: I32, labels: Sequence[str], cfg: ReadingConfig | None = None) -> float:
    """Binary arousal UA of clip outputs ``probs`` against class indices ``y`` (n,).

    ``probs`` (n, n_labels), or (n, n_labels + 1) for a model with its own arousal output
    (:func:`clip_arousal`). Clips of a label in neither :data:`HIGH` nor :data:`LOW`
    (disgust) are excluded. NaN when a side has no clip.
    """
    high_truth = np.array([labels[int(c)] in HIGH for c in y])
    keep = np.array([labels[int(c)] in HIGH or labels[int(c)] in LOW for c in y])
    predicted_high = clip_arousal(probs, labels, cfg) >= 0.5
    recalls = []
    for side in (True, False):
        mask = keep & (high_truth == side)
        if not mask.any():
            return float("nan")
        recalls.append(float(np.mean(predicted_high[mask] == side)))
    return float(np.mean(recalls))


def rms_z(normalised: F32) -> F32:
    """RMS z-score of each normalised input row (n, dim) -> (n,) (the runtime's input_rms_z)."""
    z = np.asarray(normalised, dtype=np.float64)
    return np.sqrt(np.mean(z * z, axis=1)).astype(np.float32)


def choose_uncertainty(probs: F32, y: I32, normalised: F32, population_z: F32 | None = None) -> dict[str, Any]:
    """Thresholds from validation windows: probabilities (n, n_labels), classes (n,), normalised inputs (n, dim).

    ``probs`` holds only the labels' columns (:func:`label_probs` of a model with an arousal output).

    ``population_z``: the windows' population-normalised columns that the population rule
    looks at, (n, population_columns); None = no population rule. Returns
    ``min_top_probability``, ``max_input_rms_z``, ``max_population_rms_z`` and the validation
    figures at the chosen thresholds. See :data:`UNCERTAIN_RULE`.
    """
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    max_rms = float(np.quantile(rms_z(normalised), RMS_Z_QUANTILE)) if len(probs) else None
    out_of_range = rms_z(normalised) > max_rms if max_rms is not None else np.zeros(len(probs), dtype=bool)
    max_pop = None
    if population_z is not None and len(probs):
        max_pop = float(np.quantile(rms_z(population_z), RMS_Z_QUANTILE))
        out_of_range |= rms_z(population_z) > max_pop
    best_t, best_acc = 0.0, -1.0
    for t in THRESHOLDS:
        uncertain = (top < t) | out_of_range
        if np.mean(uncertain) > MAX_UNCERTAIN_SHARE or uncertain.all():
            continue
        acc = float(np.mean(correct[~uncertain]))
        if acc > best_acc + 1e-12:
            best_t, best_acc = t, acc
    figures = uncertain_figures(
        probs, y, normalised, best_t, max_rms, population_z=population_z, max_population_rms_z=max_pop
    )
    return {
        "min_top_probability": best_t,
        "max_input_rms_z": max_rms,
        "max_population_rms_z": max_pop,
        "validation": figures,
    }


def uncertain_figures(
    probs: F32,
    y: I32,
    normalised: F32,
    min_top_probability: float,
    max_input_rms_z: float | None,
    *,
    population_z: F32 | None = None,
    max_population_rms_z: float | None = None,
) -> dict[str, float]:
    """Share of uncertain windows, accuracy when not uncertain and overall, for (n, n_labels) window probabilities."""
    if len(probs) == 0:
        return {"uncertain_share": float("nan"), "accuracy_certain": float("nan"), "accuracy_all": float("nan")}
    uncertain = probs.max(axis=1) < min_top_probability
    if max_input_rms_z is not None:
        uncertain |= rms_z(normalised) > max_input_rms_z
    if max_population_rms_z is not None and population_z is not None:
        uncertain |= rms_z(population_z) > max_population_rms_z
    correct = probs.argmax(axis=1) == y
    return {
        "uncertain_share": float(np.mean(uncertain)),
        "accuracy_certain": float(np.mean(correct[~uncertain])) if (~uncertain).any() else float("nan"),
        "accuracy_all": float(np.mean(correct)),
        "windows": len(probs),
    }
