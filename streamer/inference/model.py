"""The emotion model: a shipped (or exported) TFLite classifier and its metadata.

:class:`EmotionModel` loads ``NAME.json`` + ``NAME.tflite`` (:mod:`emostream.inference.metadata`),
checks they belong together, and turns raw window features into class probabilities through
the shared TFLite boundary (:mod:`emostream.inference.tflite`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from emostream.errors import ModelError
from emostream.frontend.features import FloatArray
from emostream.inference.metadata import DEFAULT_MODEL, ModelMetadata, resolve_model, select_columns
from emostream.inference.tflite import TfliteRunner, check_sha256, read_model_bytes


def split_outputs(raw: FloatArray, n_labels: int) -> tuple[FloatArray, FloatArray | None]:
    """A model's raw output rows (n, n_labels) or (n, n_labels + 1) as (probabilities, arousal or None).

    The probabilities are clipped at 0 and renormalised to sum to 1 (int8 rounding); the
    arousal column, when there is one, is clipped to [0, 1]. float32.
    """
    probs = np.maximum(raw[:, :n_labels], 0.0)  # np.clip(raw, 0.0, None) is this maximum
    probs /= np.maximum(np.add.reduce(probs, axis=1, keepdims=True), 1e-9)
    arousal = None
    if raw.shape[1] > n_labels:
        arousal = np.clip(raw[:, n_labels], 0.0, 1.0).astype(np.float32)
    return probs.astype(np.float32, copy=False), arousal


class EmotionModel:
    """A loaded TFLite emotion model: normalise, quantise, invoke, dequantise.

    ``predict(x)`` takes one window's model input (see :func:`emostream.frontend.features.model_input`)
    and returns class probabilities, shape (n_labels,), float32, in ``metadata.labels`` order.
    """

    def __init__(self, metadata: ModelMetadata, tflite_path: Path, num_threads: int = 1) -> None:
        self.metadata = metadata
        self.path = tflite_path
        content = read_model_bytes(tflite_path)
        check_sha256(content, metadata.sha256, source=str(tflite_path))
        self._runner = TfliteRunner(content, num_threads=num_threads, source=str(tflite_path))
        self._lock = threading.Lock()  # one interpreter: sessions in several threads (emostream serve) take turns
        self.backend = self._runner.backend
        self._check_tensors()

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_MODEL, num_threads: int = 1) -> EmotionModel:
        """Load a shipped model by name or a model by path."""
        meta_path = resolve_model(name_or_path)
        metadata = ModelMetadata.load(meta_path)
        return cls(metadata, meta_path.parent / metadata.tflite_file, num_threads=num_threads)

    @property
    def labels(self) -> tuple[str, ...]:
        """Class labels, in the order of the probabilities."""
        return self.metadata.labels

    def _check_tensors(self) -> None:
        shape = self._runner.input_shape
        if shape != self.metadata.input_shape:
            raise ModelError(
                f"{self.path} takes input {shape}, its metadata says {self.metadata.input_shape}; re-export the model"
            )
        n_out = self._runner.output_shape[-1]
        expected = self.metadata.n_outputs
        if n_out != expected:
            head = " and an arousal output" if self.metadata.arousal_output else ""
            raise ModelError(
                f"{self.path} has {n_out} outputs but its metadata gives {len(self.metadata.labels)} labels{head} "
                f"({expected}); re-export the model"
            )

    def prepare(self, features: npt.ArrayLike) -> FloatArray:
        """Select and normalise model inputs; shape (..., *input_shape), float32."""
        return self.metadata.prepare(features)

    def predict(self, features: FloatArray) -> FloatArray:
        """Class probabilities for one window's features, shape (n_labels,)."""
        return self.predict_batch(np.asarray(features, dtype=np.float32)[None])[0]

    def select(self, features: npt.ArrayLike) -> FloatArray:
        """The model's input columns of raw window features (before normalisation), float32."""
        return select_columns(features, self.metadata.selected_features)

    def predict_normalised(self, x: FloatArray) -> FloatArray:
        """Class probabilities for already selected and normalised inputs, shape (n, *input_shape) -> (n, n_labels)."""
        return self.predict_outputs(x)[0]

    def predict_outputs(self, x: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        """Class probabilities (n, n_labels) and, if the model has its own arousal output, arousal (n,) in [0, 1].

        ``x``: already selected and normalised inputs, (n, *input_shape). The arousal is None for
        a model without that output (the reading then weighs the probabilities, see
        :mod:`emostream.engine.reading`).
        """
        if x.shape[1:] != self.metadata.input_shape:
            raise ModelError(
                f"features of shape {x.shape[1:]} given, model {self.metadata.name} takes {self.metadata.input_shape}"
            )
        with self._lock:
            raw = self._runner.run(np.asarray(x, dtype=np.float32))
        return split_outputs(raw, len(self.metadata.labels))

    def predict_batch(self, features: FloatArray) -> FloatArray:
        """Class probabilities for a batch of windows, shape (n, n_labels), float32."""
        return self.predict_normalised(self.prepare(features))
