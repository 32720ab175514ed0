"""Figures of the leave-one-corpus-out protocol (``loco``): 4-class UA and arousal UA per held-out corpus.

*4-class UA*: the clips labelled angry, happy, sad, neutral or calm (calm counts as neutral);
the prediction is the most probable of neutral (+ calm), happy, sad and angry; UA = mean of
the four recalls. *Arousal UA*: :func:`emostream.train.reading.arousal_ua` (high: angry,
happy, fearful, surprised; low: neutral, calm, sad). *Corpus UA*: the UA over the labels
the held-out corpus has, the prediction restricted to those labels.

Each is computed for the variants a calibrated split scores (:func:`run_calibrated_split`):
``int8_0s`` (raw: no speech of the test speaker heard), ``int8`` (calibrated with 60 s of the
speaker's other speech), ``g711_0s`` / ``g711`` (the same after a G.711 round trip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.engine.labels import FOLD, FOUR
from emostream.inference.metadata import EMOTIONS
from emostream.train.reading import arousal_ua

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
MERGED: dict[str, str] = FOLD  # the runtime's [labels] fold: calm read as neutral
VARIANTS: dict[str, str] = {"": "int8_0s", "_calibrated": "int8", "_g711": "g711_0s", "_g711_calibrated": "g711"}
"""Report key suffix -> split variant (raw, calibrated, and both through G.711)."""


def four_class(probs: F32, y: I32, labels: Sequence[str] = EMOTIONS) -> tuple[I32, I32]:
    """(truth, prediction) as indices into :data:`FOUR` for the clips of those labels (calm -> neutral)."""
    names = [MERGED.get(labels[int(c)], labels[int(c)]) for c in y]
    keep = np.array([n in FOUR for n in names], dtype=bool)
    truth = np.array([FOUR.index(n) for n, k in zip(names, keep, strict=True) if k], dtype=np.int32)
    cols = [[labels.index(lab) for lab in labels if MERGED.get(lab, lab) == f] for f in FOUR]
    scores = np.stack([probs[keep][:, c].sum(axis=1) for c in cols], axis=1)
    return truth, np.argmax(scores, axis=1).astype(np.int32)


def unweighted_recall(truth: I32, pred: I32, n: int) -> float:
    """Mean recall over the classes present in ``truth`` (NaN when empty)."""
    recalls = [float(np.mean(pred[truth == c] == c)) for c in range(n) if np.any(truth == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


def ua4(probs: F32, y: I32) -> float:
    """4-class UA (angry, happy, sad, neutral; calm counts as neutral) of clip probabilities (n, 8)."""
    truth, pred = four_class(probs, y)
    return unweighted_recall(truth, pred, len(FOUR))


def corpus_ua(probs: F32, y: I32, mask: Sequence[bool]) -> float:
    """UA over the labels a corpus has (``mask`` per EMOTIONS), the prediction restricted to them."""
    keep = np.asarray(mask, dtype=bool)
    masked = np.where(keep[None, :], probs[:, : len(EMOTIONS)], -1.0)  # an arousal column after the labels is not one
    return unweighted_recall(y.astype(np.int32), np.argmax(masked, axis=1).astype(np.int32), len(EMOTIONS))


def corpus_figures(probs: dict[str, F32], y: I32, mask: Sequence[bool]) -> dict[str, float]:
    """All figures of one held-out corpus: ``ua4``, ``arousal_ua``, ``corpus_ua`` for each variant suffix."""
    out: dict[str, float] = {}
    for suffix, variant in VARIANTS.items():
        if variant not in probs:
            continue
        p = probs[variant]
        out[f"ua4{suffix}"] = ua4(p, y)
        out[f"arousal_ua{suffix}"] = arousal_ua(p, y, EMOTIONS)
        out[f"corpus_ua{suffix}"] = corpus_ua(p, y, mask)
    return out


def mean_figures(per_corpus: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Mean over held-out corpora of each figure every corpus has."""
    keys = [k for k in per_corpus[0] if all(k in c for c in per_corpus)] if per_corpus else []
    return {k: float(np.mean([c[k] for c in per_corpus])) for k in keys}
