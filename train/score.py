"""Scoring a finished model (a shipped or exported ``NAME.json`` + ``.tflite``) on a corpus's windows.

Used for figures of a model that was trained once (the shipped models, a baseline) on
corpora it never heard: every clip is scored with the model's own normalisation and, when
the model calibrates, the runtime's speaker calibration after 0 s and ``seconds`` of the
same speaker's other speech (random order), as :func:`emostream.train.evaluate.run_calibrated_split`
scores a fold. Inputs are the model's columns of the cached windows (a model without the
speech embedding reads the first columns of fused windows: the summary statistics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError
from emostream.train.calibration import CalibrationSpec, SpeakerPool, make_calibrated
from emostream.train.dataset import WindowSet, clip_scores
from emostream.train.export import run_tflite

F32 = npt.NDArray[np.float32]


def load_model(path: Path) -> tuple[dict[str, Any], bytes]:
    """A model's metadata and int8 TFLite bytes from its JSON path."""
    meta = json.loads(path.read_text(encoding="utf-8"))
    return meta, (path.parent / f"{meta['name']}.tflite").read_bytes()


def score_clips(
    meta: dict[str, Any],
    model: bytes,
    wset: WindowSet,
    clips: npt.NDArray[np.intp],
    *,
    seconds: float,
    seed: int = 555,
) -> F32:
    """Clip probabilities (len(clips), n_labels) after ``seconds`` of calibration speech (0 = none)."""
    mean = np.asarray(meta["normalization"]["mean"], dtype=np.float32)
    std = np.asarray(meta["normalization"]["std"], dtype=np.float32)
    width = mean.size
    if wset.features.shape[1] < width:
        raise ConfigError(f"the windows have {wset.features.shape[1]} columns; model {meta['name']} reads {width}")
    x = wset.features[:, :width]
    calibration = meta.get("calibration")
    if calibration is None:
        idx = np.flatnonzero(np.isin(wset.clip_index, clips))
        z = ((x[idx] - mean) / std).astype(np.float32)
    else:
        spec = CalibrationSpec(
            prior_windows=float(calibration["prior_windows"]),
            horizon_windows=int(calibration["trained_with"]["horizon_windows"]),
            hop_s=float(meta["feature_config"]["window_hop_ms"]) / 1000.0,
        )
        pool = SpeakerPool(wset, x)
        rng = np.random.default_rng(seed)
        z, idx = make_calibrated(
            pool, clips, spec, rng, pop=(mean, std), reps=1, seconds=seconds, mode="random", all_windows=True
        )
    p = run_tflite(model, z)
    return clip_scores(p, wset.is_speech[idx], wset.clip_index[idx], len(wset.clips))[clips]
