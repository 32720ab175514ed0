"""Speaker calibration: normalising the model input with the statistics of the voice being heard.

A model trained on 24 actors reads a new voice through the population's statistics; the
same emotion in a deeper, louder or more monotonous voice lands elsewhere. Calibration
keeps running statistics of the raw model-input vectors over one channel's *speech*
windows and normalises each window with them instead of the population's:

    mean = (n0 * pop_mean + n * spk_mean) / (n0 + n)
    var  = (n0 * pop_var  + n * spk_var)  / (n0 + n)
    x'   = (x - mean) / sqrt(var)

``n`` counts the speech windows heard (capped by ``horizon_windows``: older windows fade
out exponentially, so the statistics follow the last minutes), ``n0`` is the prior
strength in windows. With no speech heard yet this is exactly the population
normalisation, so the first readings are no worse than without calibration. The model
must have been trained with inputs normalised the same way (its metadata says so and
gives ``n0``); the statistics of a window are updated *after* it is normalised, so a
window never normalises itself.

:class:`SpeakerStats` is the running estimate (Welford/West updates, float64);
:class:`CalibrationProfile` is a saved estimate for an enrolled speaker or recording
setup (``emostream calibrate``), refused for another model or front-end.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, InvalidSettingError

FloatArray = npt.NDArray[np.float32]
PROFILE_VERSION = 1
_MIN_VAR = 1e-8


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """[calibration]: per-channel speaker calibration (see the module docstring).

    ``enabled``: on for models trained for it (the model's metadata says); ``horizon_s``:
    seconds of speech the statistics follow (older speech fades out); ``prior_windows``:
    strength of the population prior in speech windows (None = the model's trained value);
    ``profile``: a saved speaker profile (``emostream calibrate``) to start each channel from.
    """

    enabled: bool = True
    horizon_s: float = 600.0
    prior_windows: float | None = None
    profile: str | None = None

    def __post_init__(self) -> None:
        if not 10.0 <= self.horizon_s <= 86400.0:
            raise InvalidSettingError("horizon_s", f"is {self.horizon_s}; expected 10 to 86400 s of speech")
        if self.prior_windows is not None and not 0.0 <= self.prior_windows <= 100000.0:
            raise InvalidSettingError("prior_windows", f"is {self.prior_windows}; expected 0 or more windows")


class SpeakerStats:
    """Running mean and variance of (dim,) vectors with an exponential horizon; float64 inside.

    Up to ``horizon`` updates the estimate is the exact sample mean/variance; after that
    each new vector has weight ``1 / horizon`` (the effective count stays at ``horizon``).
    """

    def __init__(self, dim: int, horizon: int) -> None:
        if dim <= 0 or horizon <= 0:
            raise ValueError(f"dim {dim} and horizon {horizon} must be positive")
        self.dim = dim
        self.horizon = horizon
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self.count = 0.0
        self.mean = np.zeros(self.dim, dtype=np.float64)
        self.var = np.zeros(self.dim, dtype=np.float64)

    def update(self, x: npt.ArrayLike) -> None:
        """Add one (dim,) vector."""
        v = np.asarray(x, dtype=np.float64).reshape(-1)
        if v.shape != (self.dim,):
            raise ValueError(f"vector of shape {v.shape}; expected ({self.dim},)")
        self.count = min(self.count + 1.0, float(self.horizon))
        w = 1.0 / self.count
        delta = v - self.mean
        self.mean += w * delta
        # West's weighted update: exact for w = 1/n, exponential forgetting once w = 1/horizon
        self.var = (1.0 - w) * (self.var + w * delta * delta)

    def merge(self, count: float, mean: npt.ArrayLike, var: npt.ArrayLike) -> None:
        """Start from a saved estimate (``count`` vectors with ``mean`` and ``var``)."""
        self.count = min(float(count), float(self.horizon))
        self.mean = np.asarray(mean, dtype=np.float64).reshape(self.dim).copy()
        self.var = np.asarray(var, dtype=np.float64).reshape(self.dim).copy()


def blended(
    stats: SpeakerStats, pop_mean: npt.ArrayLike, pop_std: npt.ArrayLike, prior_windows: float
) -> tuple[FloatArray, FloatArray]:
    """(mean, std) of the speaker estimate blended with the population's, float32, shape (dim,)."""
    return _Prior(pop_mean, pop_std, prior_windows).blend(stats)


class _Prior:
    """The population's side of :func:`blended`, computed once: its float64 mean and variance, times n0."""

    def __init__(self, pop_mean: npt.ArrayLike, pop_std: npt.ArrayLike, prior_windows: float) -> None:
        self.n0 = prior_windows
        self.mu_pop = np.asarray(pop_mean, dtype=np.float64)
        self.var_pop = np.square(np.asarray(pop_std, dtype=np.float64))
        self.weighted_mean = self.n0 * self.mu_pop
        self.weighted_var = self.n0 * self.var_pop

    def blend(self, stats: SpeakerStats) -> tuple[FloatArray, FloatArray]:
        """:func:`blended` of ``stats`` with this population: float32 (mean, std), shape (dim,)."""
        n, n0 = stats.count, self.n0
        if n <= 0:
            return self.mu_pop.astype(np.float32), np.sqrt(self.var_pop).astype(np.float32)
        mean = (self.weighted_mean + n * stats.mean) / (n0 + n)
        var = (self.weighted_var + n * stats.var) / (n0 + n)
        np.maximum(var, _MIN_VAR, out=var)
        return mean.astype(np.float32), np.sqrt(var, out=var).astype(np.float32)


class Calibrator:
    """One channel's calibration state: speaker statistics blended with the population's.

    ``pop_mean``/``pop_std``: the model's normalisation, shape (dim,); ``prior_windows``: n0 (both as
    given at construction: the population's side of the blend is computed once);
    ``horizon_windows``: how many speech windows the statistics follow; ``profile``: a saved
    starting estimate (kept across :meth:`reset`, which otherwise forgets the speaker).
    """

    def __init__(
        self,
        pop_mean: npt.ArrayLike,
        pop_std: npt.ArrayLike,
        *,
        prior_windows: float,
        horizon_windows: int,
        profile: CalibrationProfile | None = None,
    ) -> None:
        self.pop_mean = np.asarray(pop_mean, dtype=np.float32)
        self.pop_std = np.asarray(pop_std, dtype=np.float32)
        self.prior_windows = prior_windows
        self.profile = profile
        self.stats = SpeakerStats(self.pop_mean.size, horizon_windows)
        self._prior = _Prior(self.pop_mean, self.pop_std, prior_windows)
        self.reset()

    def reset(self) -> None:
        """A new speaker: back to the profile, or to no speech heard."""
        self.stats.reset()
        if self.profile is not None:
            self.stats.merge(self.profile.count, self.profile.mean, self.profile.var)

    @property
    def windows_heard(self) -> float:
        """Speech windows in the estimate (capped by the horizon)."""
        return self.stats.count

    def normalisation(self) -> tuple[FloatArray, FloatArray]:
        """(mean, std) to normalise the next speech window with, float32, shape (dim,)."""
        return self._prior.blend(self.stats)  # the population and prior_windows of construction

    def update(self, x: npt.ArrayLike) -> None:
        """Add one speech window's raw model input (dim,)."""
        self.stats.update(x)


def front_end_fingerprint(model_metadata: dict[str, Any]) -> str:
    """Hash of what makes two models' inputs comparable: the feature config and the input selection."""
    relevant = {k: model_metadata.get(k) for k in ("feature_config", "selected_features", "input_shape")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class CalibrationProfile:
    """Saved speaker statistics: ``count`` speech windows with ``mean``/``var`` of the raw model input.

    ``model`` and ``model_sha256`` name the model it was made with; ``front_end`` is the
    :func:`front_end_fingerprint` it needs. ``sources`` lists the files it was made from.
    """

    model: str
    model_sha256: str
    front_end: str
    count: float
    mean: tuple[float, ...]
    var: tuple[float, ...]
    speech_seconds: float
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "type": "emostream-calibration",
            "version": PROFILE_VERSION,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "front_end": self.front_end,
            "count": self.count,
            "speech_seconds": round(self.speech_seconds, 3),
            "sources": list(self.sources),
            "mean": list(self.mean),
            "var": list(self.var),
        }

    def save(self, path: Path) -> None:
        """Write as JSON (atomically: a temporary file renamed into place)."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise ConfigError(f"cannot write the calibration profile {path} ({exc}); check the folder") from exc

    @classmethod
    def load(cls, path: str | Path) -> CalibrationProfile:
        """Read a profile; ConfigError names what is wrong and how to make a good one."""
        file = Path(path)
        hint = "make one with `emostream calibrate FILES... --out PROFILE.json`"
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"calibration profile {file} does not exist; {hint}") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"calibration profile {file} is not readable JSON ({exc}); {hint}") from exc
        if not isinstance(data, dict) or data.get("type") != "emostream-calibration":
            raise ConfigError(f"{file} is not an emostream calibration profile; {hint}")
        if data.get("version") != PROFILE_VERSION:
            raise ConfigError(
                f"{file} is a version {data.get('version')!r} profile; this emostream reads "
                f"version {PROFILE_VERSION}; {hint}"
            )
        try:
            mean = tuple(float(v) for v in data["mean"])
            var = tuple(float(v) for v in data["var"])
            profile = cls(
                model=str(data["model"]),
                model_sha256=str(data["model_sha256"]),
                front_end=str(data["front_end"]),
                count=float(data["count"]),
                mean=mean,
                var=var,
                speech_seconds=float(data.get("speech_seconds", 0.0)),
                sources=tuple(str(s) for s in data.get("sources", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"calibration profile {file} is incomplete ({exc}); {hint}") from exc
        if len(mean) != len(var) or not all(np.isfinite(mean)) or not all(np.isfinite(var)) or min(var) < 0:
            raise ConfigError(f"calibration profile {file} holds invalid statistics; {hint}")
        return profile

    def check_fits(self, model: str, front_end: str, dim: int, where: str) -> None:
        """Refuse a profile made for another model's front-end (ConfigError naming both)."""
        if self.front_end != front_end or len(self.mean) != dim:
            raise ConfigError(
                f"{where} was made with model {self.model!r} (front-end {self.front_end}, {len(self.mean)} inputs); "
                f"model {model!r} has front-end {front_end} with {dim} inputs. Make a profile for this model: "
                f"`emostream calibrate FILES... --model {model} --out PROFILE.json`"
            )
