"""Shipped-model metadata and the TFLite runtime (no TensorFlow needed).

Every model is a ``NAME.tflite`` with a ``NAME.json`` beside it (:class:`ModelMetadata`):
labels, the :class:`FeatureConfig` and :class:`VadConfig` it was trained with, the
feature normalisation, quantisation, training data and evaluation figures. The runtime
builds its front-end from that file and refuses a model it cannot honour.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, ModelError
from emostream.frontend.features import FeatureConfig, FloatArray, frame_feature_names, summary_feature_names
from emostream.frontend.vad import VadConfig

SCHEMA_VERSION = 1
EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
DEFAULT_MODEL = "resnet_mlp"
MODELS_PACKAGE = "emostream.models"


class _Interpreter(Protocol):
    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def resize_tensor_input(self, index: int, shape: list[int]) -> None: ...
    def set_tensor(self, index: int, value: npt.NDArray[Any]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> npt.NDArray[Any]: ...


def interpreter_class() -> tuple[type[Any], str]:
    """The TFLite interpreter class and its package: ai-edge-litert, else tflite-runtime, else TensorFlow."""
    for module_name, package in (
        ("ai_edge_litert.interpreter", "ai-edge-litert"),
        ("tflite_runtime.interpreter", "tflite-runtime"),
        ("tensorflow.lite", "tensorflow"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        return module.Interpreter, package
    raise ModelError(
        "no TFLite interpreter is installed; expected ai-edge-litert (or tflite-runtime). "
        "Install it with `pip install ai-edge-litert`"
    )


@dataclass(frozen=True)
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
            "commit": self.commit,
        }

    def save(self, path: Path) -> None:
        """Write as indented JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ModelMetadata:
        """Read and validate a metadata file; :class:`ModelError` names what is wrong."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelError(f"model metadata {path} does not exist; pass a .json made by `emostream train`") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model metadata {path} is not readable JSON ({exc}); re-export the model") from exc
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelError(f"model metadata {path} does not fit this runtime: {exc}") from exc

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
    """Folder of the shipped models: the installed ``emostream_models`` package, or models/ of a checkout."""
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
        raise ModelError(f"no shipped model named {name_or_path!r}; shipped models: {shipped}, or pass a path")
    return path


class EmotionModel:
    """A loaded TFLite emotion model: normalise, quantise, invoke, dequantise.

    ``predict(x)`` takes one window's model input (see :func:`emostream.frontend.features.model_input`)
    and returns class probabilities, shape (n_labels,), float32, in ``metadata.labels`` order.
    """

    def __init__(self, metadata: ModelMetadata, tflite_path: Path, num_threads: int = 1) -> None:
        self.metadata = metadata
        self.path = tflite_path
        content = _read_model_bytes(tflite_path)
        digest = hashlib.sha256(content).hexdigest()
        if digest != metadata.sha256:
            raise ModelError(
                f"{tflite_path} has sha256 {digest[:12]}…, its metadata expects {metadata.sha256[:12]}…; "
                "the model and its .json do not belong together: re-export or reinstall"
            )
        cls, self.backend = interpreter_class()
        try:
            with _native_stderr_silenced():
                self._interp: _Interpreter = cls(model_content=content, num_threads=num_threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{tflite_path} is not a loadable TFLite model ({exc}); re-export it") from exc
        self._input = self._interp.get_input_details()[0]
        self._output = self._interp.get_output_details()[0]
        self._check_tensors()
        self._batch = 1

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_MODEL, num_threads: int = 1) -> EmotionModel:
        """Load a shipped model by name or a model by path."""
        meta_path = resolve_model(name_or_path)
        metadata = ModelMetadata.load(meta_path)
        return cls(metadata, meta_path.parent / metadata.tflite_file, num_threads=num_threads)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    def _check_tensors(self) -> None:
        shape = tuple(int(x) for x in self._input["shape"][1:])
        if shape != self.metadata.input_shape:
            raise ModelError(
                f"{self.path} takes input {shape}, its metadata says {self.metadata.input_shape}; re-export the model"
            )
        n_out = int(self._output["shape"][-1])
        if n_out != len(self.metadata.labels):
            raise ModelError(f"{self.path} has {n_out} outputs but {len(self.metadata.labels)} labels")

    def prepare(self, features: FloatArray) -> FloatArray:
        """Select and normalise model inputs; shape (..., *input_shape), float32."""
        x = np.asarray(features, dtype=np.float32)
        if self.metadata.selected_features is not None:
            x = x[..., list(self.metadata.selected_features)]
        return (x - self.metadata.norm_mean) / self.metadata.norm_std

    def predict(self, features: FloatArray) -> FloatArray:
        """Class probabilities for one window's features, shape (n_labels,)."""
        return self.predict_batch(np.asarray(features, dtype=np.float32)[None])[0]

    def predict_batch(self, features: FloatArray) -> FloatArray:
        """Class probabilities for a batch of windows, shape (n, n_labels), float32."""
        x = self.prepare(features)
        if x.shape[1:] != self.metadata.input_shape:
            raise ModelError(
                f"features of shape {x.shape[1:]} given, model {self.metadata.name} takes {self.metadata.input_shape}"
            )
        self._ensure_batch(x.shape[0])
        self._interp.set_tensor(self._input["index"], _quantize(x, self._input))
        self._interp.invoke()
        probs = _dequantize(self._interp.get_tensor(self._output["index"]), self._output)
        probs = np.clip(probs, 0.0, None)
        return (probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)

    def _ensure_batch(self, batch: int) -> None:
        if batch != self._batch:
            self._interp.resize_tensor_input(self._input["index"], [batch, *self.metadata.input_shape])
            self._interp.allocate_tensors()
            self._input = self._interp.get_input_details()[0]
            self._output = self._interp.get_output_details()[0]
            self._batch = batch


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence the interpreter's native start-up banner ("Created TensorFlow Lite XNNPACK delegate…").

    The banner is written by C++ straight to file descriptor 2, where it would break the dashboard;
    Python exceptions are unaffected.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _read_model_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {path} ({exc}); reinstall emostream or re-export the model") from exc


def _quantize(x: FloatArray, detail: dict[str, Any]) -> npt.NDArray[Any]:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(y: npt.NDArray[Any], detail: dict[str, Any]) -> FloatArray:
    if np.dtype(detail["dtype"]) == np.float32:
        return y.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
