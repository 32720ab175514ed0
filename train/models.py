"""Keras 3 model families: ``resnet_mlp``, ``mlp``, ``linear`` (summary features) and ``cnn`` (MFCC frames).

All take normalised inputs and end in a softmax over the labels; with
``ModelConfig.arousal_output`` they also have a sigmoid arousal unit, concatenated after the
probabilities (one output tensor of n_labels + 1 columns, so the TFLite file keeps one output). TensorFlow is
imported lazily; a missing install raises :class:`ConfigError` telling the user to
install ``emostream[train]``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from emostream.errors import ConfigError

FAMILIES: tuple[str, ...] = ("resnet_mlp", "mlp", "linear", "cnn")
SUMMARY_FAMILIES: tuple[str, ...] = ("resnet_mlp", "mlp", "linear")


def import_keras() -> Any:
    """Import keras (with TensorFlow set to 2 threads), or raise a ConfigError naming the extra to install."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            f"training needs TensorFlow and Keras ({exc}); install them with `pip install 'emostream[train]'`"
        ) from exc
    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:
        pass  # already initialised: the setting stays as first made
    return keras


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and Keras/TensorFlow."""
    keras = import_keras()
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture settings shared by the families (dropout rate, L2 weight, widths, arousal output)."""

    dropout: float = 0.4
    l2: float = 1e-4
    width: int = 128
    cnn_filters: tuple[int, ...] = (32, 64, 64)
    arousal_output: bool = False


def _head(keras: Any, x: Any, n_labels: int, cfg: ModelConfig, *, regularised: bool = False) -> Any:
    """The softmax over the labels, then (``cfg.arousal_output``) a sigmoid arousal column: (n, n_labels [+ 1]).

    ``regularised``: the head's kernels carry the L2 penalty too (the linear family's only layer).
    """
    reg = {"kernel_regularizer": keras.regularizers.L2(cfg.l2)} if regularised else {}
    probs = keras.layers.Dense(n_labels, activation="softmax", **reg)(x)
    if not cfg.arousal_output:
        return probs
    aro = keras.layers.Dense(1, activation="sigmoid", name="arousal", **reg)(x)
    return keras.layers.Concatenate(name="probabilities_arousal")([probs, aro])


def build_model(family: str, input_shape: tuple[int, ...], n_labels: int, cfg: ModelConfig) -> Any:
    """An uncompiled Keras model of ``family`` for inputs of ``input_shape`` (batch axis excluded)."""
    if family == "resnet_mlp":
        return _resnet_mlp(input_shape, n_labels, cfg)
    if family == "mlp":
        return _mlp(input_shape, n_labels, cfg)
    if family == "linear":
        return _linear(input_shape, n_labels, cfg)
    if family == "cnn":
        return _cnn(input_shape, n_labels, cfg)
    raise ConfigError(f"model family {family!r} is unknown; expected one of {FAMILIES}")


def _dense(keras: Any, units: int, cfg: ModelConfig) -> Any:
    return keras.layers.Dense(units, kernel_regularizer=keras.regularizers.L2(cfg.l2))


def _resnet_mlp(input_shape: tuple[int, ...], n_labels: int, cfg: ModelConfig) -> Any:
    """Dense 128, then residual blocks of 128/64/32 (projection shortcuts where the width changes)."""
    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input(shape=input_shape)
    x = _dense(keras, cfg.width, cfg)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(cfg.dropout)(x)
    for units in (cfg.width, cfg.width // 2, cfg.width // 4):
        shortcut = x if x.shape[-1] == units else _dense(keras, units, cfg)(x)
        y = _dense(keras, units, cfg)(x)
        y = layers.BatchNormalization()(y)
        y = layers.Activation("relu")(y)
        y = layers.Dropout(cfg.dropout)(y)
        y = _dense(keras, units, cfg)(y)
        y = layers.BatchNormalization()(y)
        x = layers.Activation("relu")(layers.Add()([shortcut, y]))
    return keras.Model(inputs, _head(keras, x, n_labels, cfg), name="resnet_mlp")


def _mlp(input_shape: tuple[int, ...], n_labels: int, cfg: ModelConfig) -> Any:
    """Plain MLP baseline: dense 256 → 128 → 64 with batch norm and dropout."""
    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for units in (2 * cfg.width, cfg.width, cfg.width // 2):
        x = _dense(keras, units, cfg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Dropout(cfg.dropout)(x)
    return keras.Model(inputs, _head(keras, x, n_labels, cfg), name="mlp")


def _linear(input_shape: tuple[int, ...], n_labels: int, cfg: ModelConfig) -> Any:
    """Multinomial logistic regression: input dropout, one L2-regularised dense layer, softmax.

    Fewer ways to fit one corpus's recording setup than the deeper families: in a
    leave-one-corpus-out probe (clip-mean features, per-speaker z-scores) a linear model
    read other corpora better than a 128-unit MLP.
    """
    keras = import_keras()
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Dropout(cfg.dropout)(inputs)
    return keras.Model(inputs, _head(keras, x, n_labels, cfg, regularised=True), name="linear")


def _cnn(input_shape: tuple[int, ...], n_labels: int, cfg: ModelConfig) -> Any:
    """1D CNN over (frames, n_mfcc): 2-frame average pooling, Conv1D-BN-ReLU-pool blocks, global pooling, dense head."""
    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input(shape=input_shape)
    x = layers.AveragePooling1D(2)(inputs)
    for filters in cfg.cnn_filters:
        x = layers.Conv1D(filters, 5, padding="same", kernel_regularizer=keras.regularizers.L2(cfg.l2))(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling1D(2)(x)
        x = layers.Dropout(cfg.dropout / 2)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = _dense(keras, cfg.width // 2, cfg)(x)
    x = layers.Activation("relu")(x)
    x = layers.Dropout(cfg.dropout)(x)
    return keras.Model(inputs, _head(keras, x, n_labels, cfg), name="cnn")
