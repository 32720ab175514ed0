"""What a reading means beyond its label: arousal and an honest "uncertain".

*Arousal* (activation, 0 calm .. 1 agitated) is a weighted sum of the class probabilities:
high-arousal emotions (angry, happy, fearful, surprised) weigh 1, low-arousal ones
(neutral, calm, sad) 0, and disgust, which listeners place in between, 0.5 (a model's
metadata may give other weights). It is computed from each speech window's probabilities over
every label the model scores (whatever ``[labels]`` shows) and smoothed as the probabilities
are, so it moves as steadily as the shown label. A model with its own arousal output
(``arousal_output`` in its metadata: a sigmoid trained on high/low arousal on every corpus)
is read from that output instead, smoothed the same way; the weights are then unused.

A reading is *uncertain* when the evidence is weak: the top probability of the latest
speech window is below ``min_top_probability`` (chosen on validation actors when the model
was trained), or the window's model input lies far outside the training distribution:
the root mean square of its (calibrated) z-scores above ``max_input_rms_z``, or that of
its first ``population_columns`` inputs z-scored with the *population's* statistics above
``max_population_rms_z`` (the voice itself is unlike any training speaker; calibration
would otherwise normalise such a voice into range). The flag of the latest speech window
holds through the following pauses. Uncertain hops are flagged in every
output, shown as such on the dashboard, and alert rules never fire on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_AROUSAL: dict[str, float] = {
    "neutral": 0.0,
    "calm": 0.0,
    "sad": 0.0,
    "disgust": 0.5,
    "happy": 1.0,
    "angry": 1.0,
    "fearful": 1.0,
    "surprised": 1.0,
}


@dataclass(frozen=True, kw_only=True)
class ReadingConfig:
    """How hop probabilities become arousal and the uncertain flag (see the module docstring).

    ``arousal_weights``: label -> weight in [0, 1] (labels not listed weigh 0.5);
    ``min_top_probability``: a speech window whose top probability is below it is uncertain (0 = never);
    ``max_input_rms_z``: a normalised input whose RMS exceeds it is uncertain (None = no check);
    ``max_population_rms_z``: the same on the first ``population_columns`` inputs (None = all)
    z-scored with the population's statistics (None = no check).
    """

    arousal_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_AROUSAL))
    min_top_probability: float = 0.0
    max_input_rms_z: float | None = None
    max_population_rms_z: float | None = None
    population_columns: int | None = None

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any] | None) -> ReadingConfig:
        """From a model metadata's ``reading`` section (None or missing keys: the defaults)."""
        if not data:
            return cls()
        weights = data.get("arousal_weights")
        rms = data.get("max_input_rms_z")
        pop = data.get("max_population_rms_z")
        columns = data.get("population_columns")
        return cls(
            arousal_weights=dict(DEFAULT_AROUSAL)
            if weights is None
            else {str(k): float(v) for k, v in weights.items()},
            min_top_probability=float(data.get("min_top_probability", 0.0)),
            max_input_rms_z=None if rms is None else float(rms),
            max_population_rms_z=None if pop is None else float(pop),
            population_columns=None if columns is None else int(columns),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, as stored in model metadata."""
        return {
            "arousal_weights": dict(self.arousal_weights),
            "min_top_probability": self.min_top_probability,
            "max_input_rms_z": self.max_input_rms_z,
            "max_population_rms_z": self.max_population_rms_z,
            "population_columns": self.population_columns,
        }

    def weights_for(self, labels: Sequence[str]) -> npt.NDArray[np.float64]:
        """Arousal weight of each label, in ``labels`` order, shape (n_labels,)."""
        return np.array([float(self.arousal_weights.get(label, 0.5)) for label in labels], dtype=np.float64)


def arousal(probabilities: npt.ArrayLike, weights: npt.NDArray[np.float64]) -> float:
    """Arousal in [0, 1] of one probability vector (n_labels,) with per-label ``weights``."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    total = float(p.sum())
    if total <= 0:
        return 0.5
    return min(1.0, max(0.0, float(p @ weights) / total))


def input_rms_z(normalised: npt.ArrayLike) -> float:
    """Root mean square of a normalised model input (its z-scores); ~1 inside the training distribution."""
    z = np.asarray(normalised, dtype=np.float64).reshape(-1)
    # np.mean's own sum and division (add.reduce, then / n), without its Python wrapper layers: the same bits
    return math.sqrt(float(np.add.reduce(z * z)) / z.size) if z.size else 0.0


def is_uncertain(
    top_probability: float | None, rms_z: float | None, cfg: ReadingConfig, population_rms_z: float | None = None
) -> bool:
    """Whether a window with this top probability and these input RMS z-scores is too weak to trust."""
    if top_probability is not None and top_probability < cfg.min_top_probability:
        return True
    pop_limit = cfg.max_population_rms_z
    if pop_limit is not None and population_rms_z is not None and population_rms_z > pop_limit:
        return True
    return cfg.max_input_rms_z is not None and rms_z is not None and rms_z > cfg.max_input_rms_z
