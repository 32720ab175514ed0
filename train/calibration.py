"""Calibration-aware training: speaker statistics simulated the way the runtime builds them.

At run time (:mod:`emostream.engine.calibration`) each speech window's raw model input is
normalised with :func:`~emostream.engine.calibration.blended` statistics of the speech
windows heard *before* it on that channel, blended with the population's (weight ``n0``
speech windows), and only then added to the channel's :class:`SpeakerStats`. A model
trained on population-normalised inputs would see differently scaled inputs once the
runtime calibrates, so training normalises every training clip the same way, with
statistics *simulated* from the same speaker's **other** clips:

* the amount of speech heard is drawn from :attr:`CalibrationSpec.seconds` (0 s = the
  population normalisation of a cold start ... ``inf`` = every other clip);
* the order follows a mode: ``random`` (the other clips in random order), ``skew``
  (emotions weighted by a Dirichlet(0.3) draw: mostly one or two emotions) or ``one``
  (clips of one random emotion only: a caller who is angry the whole call);
* each clip gets :attr:`CalibrationSpec.reps` independent draws (replicates);
* the statistics are a fresh runtime :class:`SpeakerStats` fed the drawn windows in order,
  blended by the runtime's own :func:`blended`, so the formula is literally the runtime's.

A speaker is one (actor, vocal channel, augmentation copy) group: speech clips are
calibrated with the actor's other speech clips, song clips with their other song clips,
and the k-th augmented copy of a clip with the k-th copies of the other clips. A clip's
own windows and other actors' windows are never used (:meth:`SpeakerPool.draw`).

Evaluation uses the same code with a fixed amount and mode (e.g. 60 s, random order),
scoring every window of the clip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.engine.calibration import CalibrationConfig, SpeakerStats, blended
from emostream.errors import ConfigError
from emostream.train.dataset import WindowSet

F32 = npt.NDArray[np.float32]
Index = npt.NDArray[np.intp]
MODES: tuple[str, ...] = ("random", "skew", "one")
TRAINING_SECONDS: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, math.inf)
TRAINING_MODES: tuple[str, ...] = ("random", "random", "skew", "one")
CURVE_SECONDS: tuple[float, ...] = (0.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True, kw_only=True)
class CalibrationSpec:
    """How training simulates speaker calibration (see the module docstring).

    ``prior_windows``: n0, the population prior's weight in speech windows (> 0; the
    runtime reads it from the model metadata). ``reps``: simulated calibrations per
    training clip. ``seconds``: amounts of speech drawn from, in seconds (``inf`` = all
    the speaker's other clips); ``modes``: orders drawn from (repeat a mode to weight it).
    ``hop_s``: seconds of speech per speech window (the window hop). ``horizon_windows``:
    the runtime's horizon (default ``[calibration] horizon_s`` / hop). ``eval_seconds``:
    speech heard in the headline calibrated evaluation; ``curve_seconds``: the curve's amounts.
    """

    prior_windows: float
    reps: int = 3
    seconds: tuple[float, ...] = TRAINING_SECONDS
    modes: tuple[str, ...] = TRAINING_MODES
    hop_s: float = 0.5
    horizon_windows: int = 0
    eval_seconds: float = 60.0
    curve_seconds: tuple[float, ...] = CURVE_SECONDS

    def __post_init__(self) -> None:
        if not 0.0 < self.prior_windows <= 100000.0:
            raise ConfigError(f"--calibration-prior is {self.prior_windows}; expected 1 to 100000 speech windows")
        if not 1 <= self.reps <= 100:
            raise ConfigError(f"--calibration-reps is {self.reps}; expected 1 to 100 simulated calibrations per clip")
        if not self.seconds or any(s < 0 for s in self.seconds):
            raise ConfigError(f"calibration seconds {self.seconds}: expected amounts >= 0 (inf = all)")
        unknown = [m for m in self.modes if m not in MODES]
        if not self.modes or unknown:
            raise ConfigError(f"calibration modes {self.modes}: expected some of {MODES}")
        if self.hop_s <= 0:
            raise ConfigError(f"calibration hop_s is {self.hop_s}; expected the window hop in seconds (> 0)")
        if self.horizon_windows <= 0:
            horizon = max(1, round(CalibrationConfig().horizon_s / self.hop_s))
            object.__setattr__(self, "horizon_windows", horizon)

    def windows_for(self, seconds: float) -> int | None:
        """Speech windows heard in ``seconds`` of speech (None = unlimited)."""
        return None if math.isinf(seconds) else round(seconds / self.hop_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``inf`` as the string "all")."""
        return {
            "prior_windows": self.prior_windows,
            "reps": self.reps,
            "seconds": [_seconds_json(s) for s in self.seconds],
            "modes": list(self.modes),
            "hop_s": self.hop_s,
            "horizon_windows": self.horizon_windows,
            "eval_seconds": self.eval_seconds,
            "curve_seconds": [_seconds_json(s) for s in self.curve_seconds],
        }

    def metadata(self) -> dict[str, Any]:
        """The model metadata's ``calibration`` section (its presence tells the runtime to calibrate)."""
        return {
            "prior_windows": self.prior_windows,
            "statistics": "raw model input of the channel's speech windows (SpeakerStats), blended with "
            "normalization.mean/std by emostream.engine.calibration.blended",
            "trained_with": {
                "simulation": "statistics of the same speaker's other clips (same vocal channel)",
                "reps_per_clip": self.reps,
                "seconds": [_seconds_json(s) for s in self.seconds],
                "modes": list(self.modes),
                "horizon_windows": self.horizon_windows,
            },
        }


def _seconds_json(s: float) -> float | str:
    return "all" if math.isinf(s) else s


def population(x: F32) -> tuple[F32, F32]:
    """(mean, std) per column of raw training windows (n, dim): the model's metadata normalisation.

    The same formula as :func:`emostream.train.fit.normalisation` (float64 moments, std
    floored at 1e-6); what the runtime normalises with before hearing any speech.
    """
    from emostream.train.fit import normalisation  # noqa: PLC0415

    return normalisation(x)


class SpeakerPool:
    """Which speech windows each speaker has, for drawing calibration statistics.

    ``wset``: all windows (with augmented copies); ``features``: their raw model inputs
    (n_windows, dim), default ``wset.features``. Clips are grouped by (actor, vocal
    channel); windows by (clip, copy). Only speech windows are ever drawn (the runtime
    updates its statistics on speech windows only).
    """

    def __init__(self, wset: WindowSet, features: F32 | None = None) -> None:
        x = wset.features if features is None else features
        if x.ndim != 2:
            raise ConfigError(f"speaker calibration needs summary inputs (n, dim); got windows of shape {x.shape[1:]}")
        self.wset = wset
        self.x = x
        self.labels = wset.labels
        order = np.lexsort((np.arange(len(wset.clip_index)), wset.copy, wset.clip_index))
        self._speech: dict[tuple[int, int], Index] = {}
        self._all: dict[tuple[int, int], Index] = {}
        keys = np.stack([wset.clip_index[order], wset.copy[order]], axis=1)
        bounds = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
        for chunk in np.split(order, bounds):
            if chunk.size:
                key = (int(wset.clip_index[chunk[0]]), int(wset.copy[chunk[0]]))
                self._all[key] = chunk
                self._speech[key] = chunk[wset.is_speech[chunk]]
        self._group: dict[tuple[int, int], list[int]] = {}
        for i, clip in enumerate(wset.clips):
            self._group.setdefault((clip.actor, clip.vocal_channel), []).append(i)

    def speech_windows(self, clip: int, copy: int = 0) -> Index:
        """Indices of a clip's speech windows, in time order."""
        return self._speech.get((clip, copy), np.zeros(0, dtype=np.intp))

    def windows(self, clip: int, copy: int = 0) -> Index:
        """Indices of all of a clip's windows, in time order."""
        return self._all.get((clip, copy), np.zeros(0, dtype=np.intp))

    def others(self, clip: int) -> list[int]:
        """The same speaker's other clips (same actor and vocal channel), sorted; never ``clip`` itself."""
        c = self.wset.clips[clip]
        return [o for o in self._group[(c.actor, c.vocal_channel)] if o != clip]

    def draw(self, clip: int, copy: int, seconds: float, rng: np.random.Generator, *, mode: str, hop_s: float) -> Index:
        """Speech windows heard from the speaker's other clips before ``clip``, in hearing order.

        Clips are taken whole, in an order given by ``mode`` (see the module docstring),
        until ``seconds`` of speech (``seconds / hop_s`` windows; ``inf`` = all) are heard;
        the last clip is cut. Windows of copy ``copy`` of the other clips.
        """
        if mode not in MODES:
            raise ConfigError(f"calibration mode {mode!r}; expected one of {MODES}")
        others = self.others(clip)
        need = None if math.isinf(seconds) else round(seconds / hop_s)
        if need == 0 or not others:
            return np.zeros(0, dtype=np.intp)
        if mode == "random":
            order = [others[i] for i in rng.permutation(len(others))]
        else:
            labels = self.labels[others]
            emotions = np.unique(labels)
            if mode == "skew":
                weights = rng.dirichlet(np.full(len(emotions), 0.3))
            else:
                weights = np.zeros(len(emotions))
                weights[rng.integers(len(emotions))] = 1.0
            p = weights[np.searchsorted(emotions, labels)] + 1e-12
            p /= p.sum()
            n = int(np.sum(p > 1e-9))
            order = [int(o) for o in rng.choice(others, size=n, replace=False, p=p)]
        got: list[Index] = []
        heard = 0
        for other in order:
            if need is not None and heard >= need:
                break
            w = self.speech_windows(other, copy)
            if need is not None:
                w = w[: need - heard]
            got.append(w)
            heard += len(w)
        return np.concatenate(got) if got else np.zeros(0, dtype=np.intp)

    def stats(self, heard: Index, horizon_windows: int) -> SpeakerStats:
        """The runtime's :class:`SpeakerStats` after hearing ``heard`` windows in order."""
        stats = SpeakerStats(self.x.shape[1], horizon_windows)
        for i in heard:
            stats.update(self.x[i])
        return stats

    def normalise(
        self, windows: Index, heard: Index, pop: tuple[F32, F32], *, prior_windows: float, horizon_windows: int
    ) -> F32:
        """``windows``' raw inputs normalised with :func:`blended` statistics of ``heard``; (len(windows), dim).

        ``pop``: the population (mean, std), shape (dim,) each.
        """
        mean, std = blended(self.stats(heard, horizon_windows), pop[0], pop[1], prior_windows)
        return ((self.x[windows] - mean) / std).astype(np.float32)


def make_calibrated(
    pool: SpeakerPool,
    clips: Sequence[int] | Index,
    spec: CalibrationSpec,
    rng: np.random.Generator,
    *,
    pop: tuple[F32, F32],
    reps: int | None = None,
    seconds: float | None = None,
    mode: str | None = None,
    copies: Sequence[int] = (0,),
    all_windows: bool = False,
) -> tuple[F32, Index]:
    """Calibrated inputs of ``clips``: each replicate with its own simulated statistics.

    Training (``seconds``/``mode`` None): per clip, copy and replicate an amount drawn from
    ``spec.seconds`` and a mode from ``spec.modes``. Evaluation: fixed ``seconds`` and
    ``mode``. ``all_windows``: every window of the clip (for scoring), else speech windows
    only (for training). Returns (normalised inputs (n, dim) float32, their window indices (n,)).
    """
    xs: list[F32] = []
    idx: list[Index] = []
    for clip in clips:
        for copy in copies:
            windows = pool.windows(int(clip), copy) if all_windows else pool.speech_windows(int(clip), copy)
            if windows.size == 0:
                continue
            for _ in range(spec.reps if reps is None else reps):
                secs = float(rng.choice(spec.seconds)) if seconds is None else seconds
                how = spec.modes[int(rng.integers(len(spec.modes)))] if mode is None else mode
                heard = pool.draw(int(clip), copy, secs, rng, mode=how, hop_s=spec.hop_s)
                xs.append(
                    pool.normalise(
                        windows, heard, pop, prior_windows=spec.prior_windows, horizon_windows=spec.horizon_windows
                    )
                )
                idx.append(windows)
    if not xs:
        return np.zeros((0, pool.x.shape[1]), dtype=np.float32), np.zeros(0, dtype=np.intp)
    return np.concatenate(xs), np.concatenate(idx)
