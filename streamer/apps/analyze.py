"""Whole-file analysis (``emostream analyze``): one emotion per file.

A file is read in blocks (bounded memory), mixed to mono, brought to the model's rate and cut into the windows training
used (the plan's ``file_timing``: the streaming windows without the first-reading
lead-in, :func:`emostream.frontend.windowing.extract_windows`); its scores are the mean of the
model's probabilities over its speech windows. A file without speech gets emotion None
rather than a guess. Unreadable, empty or too-short files get a per-file error and do
not stop the other files; a truncated file is analysed as far as it goes, with a warning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.audio.files import MIN_DURATION_S, MonoStream, audio_files_in, check_duration, suffix_list
from emostream.engine.plan import SessionPlan
from emostream.engine.reading import arousal, input_rms_z, is_uncertain
from emostream.errors import AudioInputError
from emostream.frontend.features import FloatArray
from emostream.frontend.windowing import Window, WindowExtractor

__all__ = ["MIN_DURATION_S", "FileResult", "analyze_file", "analyze_files", "expand_paths", "stream_windows"]
BATCH_WINDOWS = 256  # speech windows per model call


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
    warning: str | None = None

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
        if self.warning is not None:
            record["warning"] = self.warning
        return record


class _ScoreSum:
    """Running sum of the model's probabilities over speech windows, predicted in batches (bounded memory)."""

    def __init__(self, plan: SessionPlan, normalisation: tuple[FloatArray, FloatArray] | None) -> None:
        self.model = plan.model
        self.hop_s = plan.file_timing.hop_s
        self.normalisation = normalisation
        self.reading = plan.reading
        self.total: FloatArray | None = None
        self.arousal_total = 0.0  # sum of the model's own arousal output (models that have one)
        self.count = 0
        self.out_of_range = 0  # speech windows whose input is far from the training distribution
        self.speech_seconds = 0.0
        self._pending: list[FloatArray] = []

    def add(self, windows: list[Window]) -> None:
        for w in windows:
            self.speech_seconds += self.hop_s * w.speech_ratio
            if w.is_speech:
                self._pending.append(w.features)
        if len(self._pending) >= BATCH_WINDOWS:
            self.predict()

    def predict(self) -> None:
        if not self._pending:
            return
        inputs = self.model.select(np.stack(self._pending))
        self._pending = []
        meta = self.model.metadata
        mean, std = (meta.norm_mean, meta.norm_std) if self.normalisation is None else self.normalisation
        normalised = ((inputs - mean) / std).astype(np.float32)
        probs, own_arousal = self.model.predict_outputs(normalised)
        if own_arousal is not None:
            self.arousal_total += float(own_arousal.sum(dtype=np.float64))
        self.out_of_range += self._count_out_of_range(inputs, normalised)
        batch_sum = probs.sum(axis=0, dtype=np.float64)
        self.total = batch_sum if self.total is None else self.total + batch_sum
        self.count += probs.shape[0]

    def _count_out_of_range(self, inputs: FloatArray, normalised: FloatArray) -> int:
        """Windows the reading's distance rules call uncertain (:mod:`emostream.engine.reading`)."""
        meta, reading = self.model.metadata, self.reading
        n = reading.population_columns or inputs.shape[-1]
        population = (inputs[:, :n] - meta.norm_mean[:n]) / meta.norm_std[:n]
        return sum(
            is_uncertain(None, input_rms_z(z), reading, input_rms_z(pop))
            for z, pop in zip(normalised, population, strict=True)
        )


def stream_windows(stream: MonoStream, plan: SessionPlan) -> Iterator[list[Window]]:
    """The file-analysis windows of ``stream`` (the plan's ``file_timing``), a list per block read."""
    timing = plan.file_timing
    extractor = WindowExtractor(timing.features, timing.vad)
    for block in stream:
        yield extractor.process(block)
    yield extractor.flush()


def analyze_file(
    path: str | Path, plan: SessionPlan, normalisation: tuple[FloatArray, FloatArray] | None = None
) -> FileResult:
    """Analyse one file with ``plan``'s model and settings; AudioInputError for unreadable, empty or too-short audio.

    The file is streamed in blocks (memory does not grow with its length); the result
    equals that of the whole signal. ``normalisation``: (mean, std) of a speaker
    calibration to normalise the model input with (see :mod:`emostream.apps.calibrate`);
    None = the model's population statistics. A truncated file is analysed as far as it
    goes and its result carries a ``warning``.
    """
    model = plan.model
    with MonoStream(path, plan.file_timing.sample_rate_hz) as stream:
        check_duration(path, stream.header_duration_s)
        scores = _ScoreSum(plan, normalisation)
        for windows in stream_windows(stream, plan):
            scores.add(windows)
        scores.predict()
    duration = stream.duration_s
    check_duration(path, duration)
    speech_seconds = min(duration, scores.speech_seconds)
    if scores.total is None or scores.count == 0:
        return FileResult(str(path), speech_seconds=speech_seconds, duration_s=duration, warning=stream.warning)
    model_probs = scores.total / scores.count
    probs = plan.grouping.apply(model_probs)  # over the shown labels ([labels])
    top = int(np.argmax(probs))
    labels = plan.labels
    weights = plan.reading.weights_for(model.labels)  # arousal: of the model's own probabilities, as live
    own = model.metadata.arousal_output
    return FileResult(
        str(path),
        emotion=labels[top],
        confidence=float(probs[top]),
        scores=dict(zip(labels, (float(p) for p in probs), strict=True)),
        arousal=scores.arousal_total / scores.count if own else arousal(model_probs, weights),
        # weak evidence overall (the model's own probabilities), or most speech windows unlike the training data
        uncertain=is_uncertain(float(model_probs.max()), None, plan.reading) or 2 * scores.out_of_range > scores.count,
        speech_seconds=speech_seconds,
        duration_s=duration,
        warning=stream.warning,
    )


def expand_paths(paths: Sequence[str | Path]) -> list[str]:
    """Files as given, folders replaced by the audio files under them (sorted; the suffixes of ``calls``).

    A folder without audio files stays in the list; :func:`analyze_files` reports it.
    """
    expanded: list[str] = []
    for path in paths:
        found = audio_files_in(path) if Path(path).is_dir() else []
        expanded += [str(p) for p in found] or [str(path)]
    return expanded


def analyze_files(
    paths: Sequence[str | Path], plan: SessionPlan, normalisation: tuple[FloatArray, FloatArray] | None = None
) -> list[FileResult]:
    """Analyse every file (with an optional speaker normalisation); a file's AudioInputError becomes its ``error``."""
    results = []
    for path in paths:
        if Path(path).is_dir():
            message = (
                f"{path}: a folder without audio files (looked for {suffix_list()}); give files or a folder of them"
            )
            results.append(FileResult(str(path), error=message))
            continue
        try:
            results.append(analyze_file(path, plan, normalisation))
        except AudioInputError as exc:
            results.append(FileResult(str(path), error=str(exc)))
    return results
