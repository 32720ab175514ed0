"""Whole-file analysis (``emostream analyze``): one emotion per file.

A file is mixed to mono, brought to the model's rate and cut into the windows training
used (the plan's ``file_timing``: the streaming windows without the first-reading
lead-in, :func:`emostream.frontend.windowing.extract_windows`); its scores are the mean of the
model's probabilities over its speech windows. A file without speech gets emotion None
rather than a guess. Unreadable, empty or too-short files get a per-file error and do
not stop the other files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.audio.files import read_audio, resample, to_mono
from emostream.engine.plan import SessionPlan
from emostream.engine.reading import arousal, is_uncertain
from emostream.errors import AudioInputError
from emostream.frontend.features import FloatArray
from emostream.frontend.windowing import extract_windows

MIN_DURATION_S = 0.5


@dataclass(frozen=True)
class FileResult:
    """Analysis of one file; ``error`` set (and the rest empty) when it could not be analysed."""

    path: str
    emotion: str | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    speech_seconds: float = 0.0
    duration_s: float = 0.0
    error: str | None = None
    arousal: float | None = None
    uncertain: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record of ``emostream analyze --jsonl``."""
        record: dict[str, Any] = {
            "path": self.path,
            "emotion": self.emotion,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "scores": None if self.scores is None else {k: round(v, 4) for k, v in self.scores.items()},
            "arousal": None if self.arousal is None else round(self.arousal, 4),
            "uncertain": self.uncertain,
            "speech_seconds": round(self.speech_seconds, 3),
            "duration_s": round(self.duration_s, 3),
        }
        if self.error is not None:
            record["error"] = self.error
        return record


def analyze_file(
    path: str | Path, plan: SessionPlan, normalisation: tuple[FloatArray, FloatArray] | None = None
) -> FileResult:
    """Analyse one file with ``plan``'s model and settings; AudioInputError for unreadable, empty or too-short audio.

    ``normalisation``: (mean, std) of a speaker calibration to normalise the model input
    with (see :mod:`emostream.apps.calibrate`); None = the model's population statistics.
    """
    model = plan.model
    fcfg = plan.file_timing.features
    samples, rate = read_audio(path)
    duration = samples.shape[0] / rate
    if duration < MIN_DURATION_S:
        raise AudioInputError(f"{path}: {duration:.2f} s of audio is too short; at least {MIN_DURATION_S} s is needed")
    mono = resample(to_mono(samples), rate, fcfg.sample_rate_hz)
    windows = extract_windows(mono, fcfg, plan.file_timing.vad)
    hop_s = plan.file_timing.hop_s
    speech = [w for w in windows if w.is_speech]
    speech_seconds = min(duration, sum(hop_s * w.speech_ratio for w in windows))
    if not speech:
        return FileResult(str(path), speech_seconds=speech_seconds, duration_s=duration)
    inputs = np.stack([w.features for w in speech])
    if normalisation is None:
        probs = model.predict_batch(inputs).mean(axis=0)
    else:
        mean, std = normalisation
        probs = model.predict_normalised(((model.select(inputs) - mean) / std).astype(np.float32)).mean(axis=0)
    top = int(np.argmax(probs))
    weights = plan.reading.weights_for(model.labels)
    return FileResult(
        str(path),
        emotion=model.labels[top],
        confidence=float(probs[top]),
        scores=dict(zip(model.labels, (float(p) for p in probs), strict=True)),
        arousal=arousal(probs, weights),
        uncertain=is_uncertain(float(probs[top]), None, plan.reading),
        speech_seconds=speech_seconds,
        duration_s=duration,
    )


def analyze_files(
    paths: list[str], plan: SessionPlan, normalisation: tuple[FloatArray, FloatArray] | None = None
) -> list[FileResult]:
    """Analyse every file (with an optional speaker normalisation); a file's AudioInputError becomes its ``error``."""
    results = []
    for path in paths:
        try:
            results.append(analyze_file(path, plan, normalisation))
        except AudioInputError as exc:
            results.append(FileResult(str(path), error=str(exc)))
    return results
