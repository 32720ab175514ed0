"""The model contract: the metadata JSON beside every shipped model, and where models live.

Every model is a ``NAME.tflite`` with a ``NAME.json`` beside it (:class:`ModelMetadata`):
labels, the :class:`FeatureConfig` and :class:`VadConfig` it was trained with, the
feature normalisation, quantisation, training data and evaluation figures. The runtime
builds its front-end from that file and refuses a model it cannot honour. A model whose
feature config has a speech embedding (a fused input) records the sha256 of the two
vendored embedding files in that config; :meth:`ModelMetadata.load` checks the installed
files against them.
:func:`normalize_input` is the one input preparation (column selection + normalisation)
used by the runtime and by training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, ModelError
from emostream.frontend.embedding import EmbeddingConfig, check_model_files
from emostream.frontend.features import FeatureConfig, FloatArray, frame_feature_names, summary_feature_names
from emostream.frontend.vad import VadConfig
from emostream.frontend.voice import check_voice_files
from emostream.frontend.whisper import check_whisper_files

SCHEMA_VERSION = 1
"""Version of the metadata JSON layout this runtime reads and writes."""

EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
"""The RAVDESS emotion labels, in the class-index order the shipped models and training use."""

DEFAULT_MODEL = "accurate"
"""Name of the shipped model used when none is given."""

MODELS_PACKAGE = "emostream.models"
"""Package holding the shipped ``NAME.tflite`` + ``NAME.json`` pairs."""


def select_columns(features: npt.ArrayLike, selected: tuple[int, ...] | None) -> FloatArray:
    """The ``selected`` columns (last axis) of raw window features as float32; all of them when None."""
    x = np.asarray(features, dtype=np.float32)
    return x if selected is None else x[..., list(selected)]


def normalize_input(
    features: npt.ArrayLike,
    *,
    mean: FloatArray,
    std: FloatArray,
    selected: tuple[int, ...] | None,
) -> FloatArray:
    """Model input from raw window features: keep the ``selected`` columns (last axis), then (x - mean) / std.

    ``features`` has shape (..., n_columns) (summary) or (..., frames, channels) (per-frame);
    ``mean``/``std`` have one float32 entry per kept column. Returns float32, same leading shape.
    """
    return ((select_columns(features, selected) - mean) / std).astype(np.float32, copy=False)


@dataclass(frozen=True, kw_only=True)
class ModelMetadata:
    """The JSON beside a shipped model. ``input_shape`` excludes the batch axis."""

    name: str
    family: str
    labels: tuple[str, ...]
    feature_config: FeatureConfig
    vad_config: VadConfig
    norm_mean: FloatArray
    norm_std: FloatArray
    input_shape: tuple[int, ...]
    selected_features: tuple[int, ...] | None
    tflite_file: str
    sha256: str
    quantization: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    commit: str = "unknown"
    # speaker calibration the model was trained with ({"prior_windows": n0, ...}); None = none
    calibration: dict[str, Any] | None = None
    # how probabilities become arousal and "uncertain" (emostream.engine.reading.ReadingConfig); None = defaults
    reading: dict[str, Any] | None = None
    # the model has its own arousal output: one more output column after the labels' probabilities,
    # a sigmoid (0 calm .. 1 agitated) read as the arousal instead of reading.arousal_weights
    arousal_output: bool = False

    @property
    def n_outputs(self) -> int:
        """Width of the model's output: one probability per label, plus the arousal column if it has one."""
        return len(self.labels) + (1 if self.arousal_output else 0)

    def prepare(self, features: npt.ArrayLike) -> FloatArray:
        """Select and normalise raw window features for this model (:func:`normalize_input`)."""
        return normalize_input(features, mean=self.norm_mean, std=self.norm_std, selected=self.selected_features)

    @property
    def feature_names(self) -> list[str]:
        """Names of the model's input columns (summary) or per-frame channels (frames)."""
        cfg = self.feature_config
        names = summary_feature_names(cfg) if cfg.feature_set == "summary" else frame_feature_names(cfg)
        if self.selected_features is not None:
            names = [names[i] for i in self.selected_features]
        return names

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "family": self.family,
            "labels": list(self.labels),
            "feature_config": self.feature_config.to_dict(),
            "vad_config": self.vad_config.to_dict(),
            "normalization": {"mean": self.norm_mean.tolist(), "std": self.norm_std.tolist()},
            "input_shape": list(self.input_shape),
            "selected_features": None if self.selected_features is None else list(self.selected_features),
            "feature_names": self.feature_names,
            "tflite_file": self.tflite_file,
            "sha256": self.sha256,
            "quantization": self.quantization,
            "training": self.training,
            "metrics": self.metrics,
            "calibration": self.calibration,
            "reading": self.reading,
            "arousal_output": self.arousal_output,
            "commit": self.commit,
        }

    def save(self, path: Path) -> None:
        """Write as indented JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ModelMetadata:
        """Read and validate a metadata file; :class:`ModelError` names what is wrong.

        A fused model's speech-embedding files are checked here too: a file whose sha256
        differs from the one in ``feature_config.embedding`` is refused, naming the file,
        both digests and the fix. So is a ``feature_config.embedding`` that differs from the one
        the head was trained with (``training.config.features.embedding``, written by
        ``emostream train``): e.g. a JSON edited to run the float embedding file under a head
        trained on the int8 one.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelError(f"model metadata {path} does not exist; pass a .json made by `emostream train`") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model metadata {path} is not readable JSON ({exc}); re-export the model") from exc
        try:
            meta = cls._from_dict(data)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelError(f"model metadata {path} does not fit this runtime: {exc}") from exc
        embedding = meta.feature_config.embedding
        if embedding is not None:
            check_model_files(embedding, context=f"model {path} (feature_config.embedding)")
        if meta.feature_config.voice is not None:
            check_voice_files(meta.feature_config.voice, context=f"model {path} (feature_config.voice)")
        if meta.feature_config.whisper is not None:
            check_whisper_files(meta.feature_config.whisper, context=f"model {path} (feature_config.whisper)")
        _check_trained_embedding(path, embedding, data.get("training"))
        return meta

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> ModelMetadata:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"schema_version is {version!r}, this runtime reads {SCHEMA_VERSION}")
        feature_cfg = FeatureConfig.from_dict(data["feature_config"])
        selected = data.get("selected_features")
        meta = cls(
            name=str(data["name"]),
            family=str(data["family"]),
            labels=tuple(str(x) for x in data["labels"]),
            feature_config=feature_cfg,
            vad_config=VadConfig.from_dict(data["vad_config"]),
            norm_mean=np.asarray(data["normalization"]["mean"], dtype=np.float32),
            norm_std=np.asarray(data["normalization"]["std"], dtype=np.float32),
            input_shape=tuple(int(x) for x in data["input_shape"]),
            selected_features=None if selected is None else tuple(int(i) for i in selected),
            tflite_file=str(data["tflite_file"]),
            sha256=str(data["sha256"]),
            quantization=dict(data.get("quantization", {})),
            training=dict(data.get("training", {})),
            metrics=dict(data.get("metrics", {})),
            commit=str(data.get("commit", "unknown")),
            calibration=_optional_section(data, "calibration", ("prior_windows",)),
            reading=_optional_section(data, "reading", ()),
            arousal_output=_flag(data, "arousal_output"),
        )
        meta.check()
        return meta

    def check(self) -> None:
        """Refuse metadata whose parts disagree; raises ValueError naming the mismatch."""
        cfg = self.feature_config
        if cfg.feature_set == "summary":
            n_columns = len(summary_feature_names(cfg))
            width = n_columns if self.selected_features is None else len(self.selected_features)
            expected: tuple[int, ...] = (width,)
            if self.selected_features is not None and not all(0 <= i < n_columns for i in self.selected_features):
                raise ValueError(f"selected_features index out of range 0..{n_columns - 1}")
            selected = self.selected_features
            if selected is not None and list(selected) != sorted(set(selected)):
                raise ValueError("selected_features repeat or are out of order; training writes increasing indices")
        else:
            expected = (cfg.frames_per_window, len(frame_feature_names(cfg)))
        if self.input_shape != expected:
            raise ValueError(f"input_shape {self.input_shape} but the feature config gives {expected}")
        if self.norm_mean.shape != (expected[-1],) or self.norm_std.shape != (expected[-1],):
            raise ValueError(f"normalization has {self.norm_mean.shape[0]} entries, expected {expected[-1]}")
        if not np.all(self.norm_std > 0):
            raise ValueError("normalization std has zero or negative entries")
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError(f"labels {self.labels} are empty or repeat")


def bundled_models_dir() -> Path:
    """Folder of the shipped models: the installed ``emostream.models`` package, or models/ of a checkout."""
    try:
        return Path(str(resources.files(MODELS_PACKAGE)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "models"


def resolve_model(name_or_path: str | Path) -> Path:
    """Metadata path for a shipped model name (``resnet_mlp``) or a path to a .json or .tflite."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".json", ".tflite"):
        path = candidate.with_suffix(".json")
        if not path.is_file():
            raise ModelError(f"model {candidate}: no metadata file {path}; a model needs its .json beside it")
        return path
    path = bundled_models_dir() / f"{name_or_path}.json"
    if not path.is_file():
        shipped = sorted(p.stem for p in bundled_models_dir().glob("*.json"))
        if len(candidate.parts) > 1 or candidate.exists():  # a path was given, not a name
            raise ModelError(
                f"model {candidate}: not a model file (its suffix is {candidate.suffix or 'none'}); expected the "
                f"path of a model's .json (or .tflite) file, or a shipped model name: {shipped}"
            )
        raise ModelError(f"no shipped model named {name_or_path!r}; shipped models: {shipped}, or pass a path")
    return path


def _flag(data: dict[str, Any], key: str) -> bool:
    """A true/false field (missing = false); ValueError for anything else."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} is {value!r}; expected true or false")
    return value


def _optional_section(data: dict[str, Any], key: str, required: tuple[str, ...]) -> dict[str, Any] | None:
    """``data[key]`` as a dict (None when absent or null); ValueError when it is not a table or lacks ``required``."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{key} is {value!r}; expected a table of settings or null")
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"{key} lacks {missing}")
    return dict(value)


def _check_trained_embedding(path: Path, embedding: EmbeddingConfig | None, training: object) -> None:
    """Refuse (:class:`ModelError`) a feature_config.embedding unlike the training record's, when there is one.

    ``training``: the metadata's ``training`` section; only ``training.config.features`` is read
    (models made by ``emostream train``; others have no record and pass).
    """
    features = training.get("config", {}).get("features") if isinstance(training, dict) else None
    if not isinstance(features, dict):
        return
    recorded = features.get("embedding")
    try:
        trained = None if recorded is None else EmbeddingConfig.from_dict(recorded)
    except ConfigError as exc:
        raise ModelError(f"model metadata {path}: training.config.features.embedding is unreadable ({exc})") from exc
    if trained == embedding:
        return
    runs = "no speech embedding" if embedding is None else f"the {embedding.variant} embedding ({embedding.to_dict()})"
    learned = "no speech embedding" if trained is None else f"the {trained.variant} embedding ({trained.to_dict()})"
    raise ModelError(
        f"model {path}: feature_config.embedding runs {runs}, but its head was trained on {learned} "
        "(training.config.features.embedding); the head would read inputs it never learned: restore the "
        "model's JSON or retrain it with the embedding you want (emostream train --embedding-variant)"
    )
