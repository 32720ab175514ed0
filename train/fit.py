"""Fitting one model: feature selection, normalisation, class weights, early stopping.

Inputs are window features before normalisation, (n, *shape) float32, and their class
indices. The fitted result keeps what the runtime needs (normalisation, selected
columns) beside the Keras model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError
from emostream.inference.metadata import normalize_input
from emostream.train.models import SUMMARY_FAMILIES, ModelConfig, build_model, import_keras, set_seeds

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings. ``select_k`` keeps the k best summary columns (f_classif); 0 = all.

    ``class_weights`` weights each training window by ``balance``: ``"corpus_class"`` gives
    every (corpus, class) group the same total weight (with one corpus: the classic balanced
    class weights), ``"corpus_class_speaker"`` also every speaker within a group.

    With a validation set, training stops when ``monitor`` (``val_accuracy`` or ``val_loss``)
    has not improved for ``patience`` epochs, and the best epoch's weights are kept.

    ``ensemble`` > 1 trains that many members on the same data, each with its own seed
    (``seed``, ``seed + 1``, ...: its own initial weights, dropout and batch order) and its own
    early stopping, and averages their probabilities in one model (one TFLite file).

    With ``model.arousal_output`` the network also has a sigmoid arousal output, trained with
    binary cross-entropy (weight ``arousal_weight``, the same label smoothing towards 0.5) on
    every window whose label has a high/low truth, high and low weighing the same in each corpus
    (:func:`masked_arousal_loss`, :func:`arousal_balance`).
    """

    family: str = "resnet_mlp"
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    label_smoothing: float = 0.1
    patience: int = 15
    monitor: str = "val_accuracy"
    select_k: int = 0
    class_weights: bool = True
    mixup_alpha: float = 0.0
    balance: str = "corpus_class"
    seed: int = 42
    ensemble: int = 1
    arousal_weight: float = 1.0
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.balance not in BALANCES:
            raise ConfigError(f"--balance is {self.balance!r}; expected one of {', '.join(BALANCES)}")
        if not 1 <= self.ensemble <= MAX_ENSEMBLE:
            raise ConfigError(
                f"--ensemble is {self.ensemble}; expected 1 (one network) to {MAX_ENSEMBLE} members averaged"
            )
        if not 0.0 < self.arousal_weight <= 10.0:
            raise ConfigError(
                f"--arousal-weight is {self.arousal_weight}; expected a loss weight above 0 and at most 10"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dataclasses.asdict(self)


BALANCES: tuple[str, ...] = ("corpus_class", "corpus_class_speaker")
MAX_ENSEMBLE = 8


@dataclass
class Fitted:
    """A trained Keras model with its input preparation. ``mean``/``std`` per input column (last axis)."""

    model: Any
    mean: F32
    std: F32
    selected: tuple[int, ...] | None
    epochs_run: int
    best_epoch: int
    history: dict[str, list[float]]

    def prepare(self, x: F32) -> F32:
        """Select and normalise raw window features (:func:`emostream.inference.metadata.normalize_input`)."""
        return normalize_input(x, mean=self.mean, std=self.std, selected=self.selected)

    def predict(self, x: F32, batch_size: int = 512) -> F32:
        """Float Keras outputs for raw window features, (n, n_labels) (+ 1 arousal column with an arousal output)."""
        return self.predict_normalised(self.prepare(x), batch_size)

    def predict_normalised(self, z: F32, batch_size: int = 512) -> F32:
        """Float Keras outputs for already selected and normalised inputs (e.g. calibrated), as :meth:`predict`."""
        return np.asarray(self.model.predict(z, batch_size=batch_size, verbose=0), dtype=np.float32)


def normalisation(x: F32) -> tuple[F32, F32]:
    """Per-column mean and std over all axes but the last (std floored at 1e-6)."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes, dtype=np.float64)
    std = np.maximum(x.std(axis=axes, dtype=np.float64), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def select_columns(x: F32, y: I32, k: int) -> tuple[int, ...] | None:
    """Indices of the ``k`` best columns by ANOVA F (sklearn SelectKBest/f_classif), sorted; None for k = 0 or all.

    ``x`` (n, columns) summary vectors; :class:`ConfigError` for k < 0 or k > columns.
    """
    if k < 0 or k > x.shape[1]:
        raise ConfigError(f"--select-k is {k}; expected 0 (all) to {x.shape[1]} (the number of summary columns)")
    if k == 0 or k == x.shape[1]:
        return None
    from sklearn.feature_selection import SelectKBest, f_classif  # noqa: PLC0415

    selector = SelectKBest(f_classif, k=k).fit(x, y)
    return tuple(int(i) for i in np.flatnonzero(selector.get_support()))


def balanced_weights(
    y: I32, groups: npt.NDArray[Any] | None = None, speakers: npt.NDArray[Any] | None = None
) -> npt.NDArray[np.float32]:
    """Per-window weights giving every (group, class) the same total weight; mean weight 1.

    ``y`` (n,) class indices; ``groups`` (n,) corpus of each window (None = one corpus);
    ``speakers`` (n,) speaker of each window: when given, every speaker within a (group,
    class) also gets the same share. With one group this is the classic balanced class weight
    ``n / (n_classes_present * count(class))``.
    """
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    g = np.zeros(n, dtype=np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    key = g * 1000 + y.astype(np.int64)
    _, cell, counts = np.unique(key, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[cell].astype(np.float64)
    if speakers is not None:
        skey = np.unique(speakers, return_inverse=True)[1].astype(np.int64) * 1_000_000 + key
        _, scell, scounts = np.unique(skey, return_inverse=True, return_counts=True)
        per_cell_speakers = np.zeros(counts.size)
        np.add.at(per_cell_speakers, cell[np.unique(scell, return_index=True)[1]], 1.0)
        weights = 1.0 / (scounts[scell].astype(np.float64) * per_cell_speakers[cell])
    weights *= n / weights.sum()
    return weights.astype(np.float32)


def masked_cross_entropy(y_true: Any, y_pred: Any, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy over only the labels a window's corpus has (Keras ops; per-window loss, shape (n,)).

    ``y_true`` (n, 2 * L): the one-hot class (first L columns) then the corpus's label mask
    (1 = the corpus has the label); ``y_pred`` (n, L) softmax probabilities. The probabilities
    are renormalised over the masked labels, and label smoothing spreads over those labels
    only, so a corpus without calm or disgust neither rewards nor punishes them.
    """
    from keras import ops  # noqa: PLC0415

    n_labels = y_pred.shape[-1]
    onehot, mask = y_true[:, :n_labels], y_true[:, n_labels:]
    target = onehot * (1.0 - label_smoothing) + label_smoothing * mask / ops.sum(mask, axis=-1, keepdims=True)
    p = y_pred * mask
    p = p / (ops.sum(p, axis=-1, keepdims=True) + 1e-7)
    return -ops.sum(target * ops.log(ops.clip(p, 1e-7, 1.0)), axis=-1)


def masked_arousal_loss(y_true: Any, y_pred: Any, label_smoothing: float = 0.0) -> Any:
    """Binary cross-entropy of the arousal output on windows with a high/low truth (Keras ops; shape (n,)).

    ``y_true`` (n, 2): the arousal truth (1 high, 0 low) and the window's weight on this loss
    (0 = no truth; in training the factor of :func:`arousal_balance`); ``y_pred`` (n,) the
    sigmoid output. Smoothing moves the truth towards 0.5; windows without a truth (disgust) add 0.
    """
    from keras import ops  # noqa: PLC0415

    target = y_true[:, 0] * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    return -y_true[:, 1] * (target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))


def arousal_balance(
    arousal_targets: npt.NDArray[np.float32], weights: npt.NDArray[np.float32], groups: npt.NDArray[Any] | None
) -> npt.NDArray[np.float32]:
    """Per-window factors on the arousal loss that give high and low the same total weight in each corpus.

    ``arousal_targets`` (n, 2): truth (1 high, 0 low) and whether the window has one; ``weights``
    (n,) the windows' sample weights (the class balance); ``groups`` (n,) corpus of each window
    (None = one corpus). The class balance gives every label the same weight, so a corpus with
    four high-arousal labels and two low ones would weigh high twice as much and bias the
    arousal output (read at 0.5) towards high. Returns (n,) float32: 0 where there is no truth,
    else ``(W_high + W_low) / (2 W_side)`` over the corpus's weighted windows (1 when balanced).
    """
    truth, known = arousal_targets[:, 0], arousal_targets[:, 1] > 0
    out = np.zeros(len(truth), dtype=np.float64)
    g = np.zeros(len(truth), dtype=np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    w = weights.astype(np.float64)
    for corpus in np.unique(g):
        rows = (g == corpus) & known
        sides = [rows & (truth > 0.5), rows & (truth <= 0.5)]
        totals = [float(w[m].sum()) for m in sides]
        if min(totals) <= 0:  # one side only: nothing to balance
            out[rows] = 1.0
            continue
        for mask, total in zip(sides, totals, strict=True):
            out[mask] = sum(totals) / (2.0 * total)
    return out.astype(np.float32)


def masked_accuracy(y_true: Any, y_pred: Any, n_labels: int | None = None) -> Any:
    """Accuracy of the most probable label among those the window's corpus has (``y_true`` as above).

    ``n_labels``: the labels' columns of ``y_pred`` (None = all of them; an arousal column after them is ignored).
    """
    from keras import ops  # noqa: PLC0415

    n_labels = y_pred.shape[-1] if n_labels is None else n_labels
    y_pred = y_pred[:, :n_labels]
    onehot, mask = y_true[:, :n_labels], y_true[:, n_labels : 2 * n_labels]
    hit = ops.argmax(y_pred * mask, axis=-1) == ops.argmax(onehot, axis=-1)
    return ops.cast(hit, "float32")


def masked_targets(
    y: I32, n_labels: int, mask: npt.NDArray[np.float32] | None, arousal_truth: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """The (n, 2 * n_labels) targets of :func:`masked_cross_entropy`: one-hot, then the label mask (all 1 if None).

    With ``arousal_truth`` (n_labels,: 1 high, 0 low, NaN none) two more columns follow, the
    targets of :func:`masked_arousal_loss`: each window's arousal truth and whether it has one.
    """
    onehot = np.eye(n_labels, dtype=np.float32)[y]
    m = np.ones_like(onehot) if mask is None else mask.astype(np.float32)
    missing = onehot.astype(bool) & (m == 0)
    if missing.any():
        raise ConfigError(f"{int(missing.any(axis=1).sum())} training windows have a label their corpus mask lacks")
    parts = [onehot, m]
    if arousal_truth is not None:
        truth = np.asarray(arousal_truth, dtype=np.float32)[y]
        known = np.isfinite(truth)
        parts += [np.where(known, truth, 0.0)[:, None], known.astype(np.float32)[:, None]]
    return np.concatenate(parts, axis=1).astype(np.float32)


def fit(
    x_train: F32,
    y_train: I32,
    n_labels: int,
    cfg: TrainConfig,
    *,
    validation: tuple[F32, I32] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    population: tuple[F32, F32] | None = None,
    label_mask: npt.NDArray[np.float32] | None = None,
    validation_mask: npt.NDArray[np.float32] | None = None,
    groups: npt.NDArray[Any] | None = None,
    speakers: npt.NDArray[Any] | None = None,
    arousal_truth: npt.NDArray[np.float32] | None = None,
) -> Fitted:
    """Train ``cfg.family`` on raw window features; with ``validation`` stop early on its loss and keep the best.

    ``label_mask`` (n, n_labels): per training window, the labels its corpus has (None = all);
    the loss (:func:`masked_cross_entropy`) scores only those. ``validation_mask`` the same for
    the validation windows. ``groups`` / ``speakers`` (n,): corpus and speaker of each training
    window, for the class weights (``cfg.balance``, :func:`balanced_weights`).

    ``population``: ``x_train`` and the validation inputs are already normalised (speaker
    calibrated, :mod:`emostream.train.calibration`) and are used as given; this (mean, std)
    of the raw training windows becomes the model's normalisation (what the runtime uses
    before it has heard any speech). Column selection is refused with it.

    ``arousal_truth`` (n_labels,): per label 1 (high arousal), 0 (low) or NaN (neither), the
    truth of the arousal output (``cfg.model.arousal_output``); None = the project's labels'
    (:func:`emostream.train.reading.arousal_truth` of EMOTIONS).
    """
    keras = import_keras()
    if cfg.model.arousal_output and arousal_truth is None:
        arousal_truth = _default_arousal_truth(n_labels)
    if not cfg.model.arousal_output:
        arousal_truth = None
    if cfg.family in SUMMARY_FAMILIES and x_train.ndim != 2:
        raise ConfigError(f"{cfg.family} takes summary vectors, got inputs of shape {x_train.shape[1:]}")
    if population is not None:
        if cfg.select_k:
            raise ConfigError(
                f"--select-k {cfg.select_k} with speaker calibration: calibrated training keeps all columns; "
                "drop --select-k or use --calibration-prior 0"
            )
        fitted = Fitted(None, population[0], population[1], None, 0, 0, {})
        xs = x_train

        def prepare(x: F32) -> F32:
            return x

    else:
        if cfg.select_k and x_train.ndim != 2:
            raise ConfigError(
                f"--select-k {cfg.select_k} with {cfg.family}: column selection needs summary vectors, "
                f"got inputs of shape {x_train.shape[1:]}"
            )
        selected = select_columns(x_train, y_train, cfg.select_k)
        xs = x_train if selected is None else x_train[:, list(selected)]
        mean, std = normalisation(xs)
        fitted = Fitted(None, mean, std, selected, 0, 0, {})
        prepare = fitted.prepare
    val_data = None
    if validation is not None:
        val_data = (prepare(validation[0]), masked_targets(validation[1], n_labels, validation_mask, arousal_truth))
    weights = (
        balanced_weights(y_train, groups, speakers if cfg.balance == "corpus_class_speaker" else None)
        if cfg.class_weights
        else np.ones(len(y_train), dtype=np.float32)
    )
    targets = masked_targets(y_train, n_labels, label_mask, arousal_truth)
    if arousal_truth is not None:
        targets[:, 2 * n_labels + 1] = arousal_balance(targets[:, 2 * n_labels :], weights, groups)
    xs = prepare(x_train)
    members = [
        _fit_member(
            xs,
            targets,
            weights,
            n_labels=n_labels,
            cfg=dataclasses.replace(cfg, seed=cfg.seed + k),
            val_data=val_data,
            on_epoch=on_epoch,
        )
        for k in range(cfg.ensemble)
    ]
    if len(members) == 1:
        fitted.model, hist = members[0]
    else:
        fitted.model = _average(keras, [m for m, _ in members], tuple(xs.shape[1:]))
        hist = _mean_history([h for _, h in members])
    fitted.history = hist
    fitted.epochs_run = max(len(h.get("loss", [])) for _, h in members)
    bests = [_best_epoch(h, cfg) for _, h in members]
    fitted.best_epoch = int(np.median(bests))
    return fitted


def _default_arousal_truth(n_labels: int) -> npt.NDArray[np.float32]:
    """The arousal truth of the project's eight labels; ConfigError for another label count."""
    from emostream.inference.metadata import EMOTIONS  # noqa: PLC0415
    from emostream.train.reading import arousal_truth  # noqa: PLC0415

    if n_labels != len(EMOTIONS):
        raise ConfigError(
            f"an arousal output needs each label's high/low truth; {n_labels} labels given without it "
            f"(the default covers the {len(EMOTIONS)} labels {', '.join(EMOTIONS)})"
        )
    return arousal_truth(EMOTIONS)


def _best_epoch(hist: dict[str, list[float]], cfg: TrainConfig) -> int:
    """1-based epoch of the best ``cfg.monitor`` value, or the last epoch when it was not tracked."""
    if cfg.monitor in hist:
        values = np.asarray(hist[cfg.monitor])
        return int(np.argmin(values) if cfg.monitor.endswith("loss") else np.argmax(values)) + 1
    return len(hist.get("loss", []))


def _mean_history(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per key and epoch, the mean over the members that ran that epoch."""
    out: dict[str, list[float]] = {}
    for key in histories[0]:
        runs = [h[key] for h in histories if key in h]
        n = max(len(r) for r in runs)
        out[key] = [float(np.mean([r[e] for r in runs if e < len(r)])) for e in range(n)]
    return out


def _average(keras: Any, members: list[Any], input_shape: tuple[int, ...]) -> Any:
    """One Keras model whose output is the mean of the members' probabilities (same input)."""
    inputs = keras.Input(shape=input_shape)
    outs = [keras.Model(m.inputs, m.outputs[0], name=f"member_{k}")(inputs) for k, m in enumerate(members)]
    return keras.Model(inputs, keras.layers.Average()(outs), name=f"{members[0].name}_x{len(members)}")


def _fit_member(
    xs: F32,
    targets: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    *,
    n_labels: int,
    cfg: TrainConfig,
    val_data: tuple[F32, npt.NDArray[np.float32]] | None,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> tuple[Any, dict[str, list[float]]]:
    """Train one network on prepared inputs with ``cfg.seed``; (Keras model, history)."""
    keras = import_keras()
    set_seeds(cfg.seed)
    model = build_model(cfg.family, tuple(xs.shape[1:]), n_labels, cfg.model)
    smoothing = cfg.label_smoothing
    head = cfg.model.arousal_output
    arousal_weight = cfg.arousal_weight

    def loss(y_true: Any, y_pred: Any) -> Any:
        out = masked_cross_entropy(y_true[:, : 2 * n_labels], y_pred[:, :n_labels], smoothing)
        if head:
            out = out + arousal_weight * masked_arousal_loss(y_true[:, 2 * n_labels :], y_pred[:, n_labels], smoothing)
        return out

    def masked_accuracy_metric(y_true: Any, y_pred: Any) -> Any:
        return masked_accuracy(y_true, y_pred, n_labels)

    masked_accuracy_metric.__name__ = "masked_accuracy"
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=loss,
        metrics=[masked_accuracy_metric],
    )
    monitor = cfg.monitor.replace("accuracy", "masked_accuracy")
    callbacks: list[Any] = []
    if val_data is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode="min" if cfg.monitor.endswith("loss") else "max",
                patience=cfg.patience,
                restore_best_weights=True,
            )
        )
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e, dict(logs or {}))))
    history = model.fit(
        _mixup(xs, targets, weights, cfg, n_labels),
        epochs=cfg.epochs,
        shuffle=False,  # the tf.data pipeline shuffles (seeded) itself
        validation_data=val_data,
        callbacks=callbacks,
        verbose=0,
    )
    hist = {k.replace("masked_accuracy", "accuracy"): [float(v) for v in vals] for k, vals in history.history.items()}
    return model, hist


def _mixup(x: F32, y: F32, w: F32, cfg: TrainConfig, n_labels: int) -> Any:
    """A tf.data pipeline of shuffled (input, target, weight) batches, with mixup when ``cfg.mixup_alpha`` > 0.

    Mixup mixes inputs, one-hot targets and weights; the label masks of a mixed pair are
    combined by their element-wise maximum (either corpus's labels count). Arousal targets
    (columns after the ``2 * n_labels`` of :func:`masked_targets`) mix the same way, and a
    mixed pair has an arousal truth only if both windows have one (its arousal weight then mixes too).
    """
    import tensorflow as tf  # noqa: PLC0415

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32), w.astype(np.float32)))
    ds = ds.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True).batch(cfg.batch_size)
    if cfg.mixup_alpha > 0:
        alpha = cfg.mixup_alpha

        def mix(xb: Any, yb: Any, wb: Any) -> Any:
            n = tf.shape(xb)[0]
            g1 = tf.random.gamma([n], alpha, seed=cfg.seed)
            g2 = tf.random.gamma([n], alpha, seed=cfg.seed + 1)
            lam = g1 / (g1 + g2)
            perm = tf.random.shuffle(tf.range(n), seed=cfg.seed)
            lx = tf.reshape(lam, [-1] + [1] * (len(xb.shape) - 1))
            onehot, mask = yb[:, :n_labels], yb[:, n_labels : 2 * n_labels]
            mixed = lam[:, None] * onehot + (1 - lam[:, None]) * tf.gather(onehot, perm)
            masks = tf.maximum(mask, tf.gather(mask, perm))
            parts = [mixed, masks]
            if yb.shape[1] > 2 * n_labels:
                truth, known = yb[:, 2 * n_labels], yb[:, 2 * n_labels + 1]
                known_p = tf.gather(known, perm)
                parts.append((lam * truth + (1 - lam) * tf.gather(truth, perm))[:, None])
                both = tf.cast((known > 0) & (known_p > 0), known.dtype)
                parts.append((both * (lam * known + (1 - lam) * known_p))[:, None])
            return (
                lx * xb + (1 - lx) * tf.gather(xb, perm),
                tf.concat(parts, axis=1),
                lam * wb + (1 - lam) * tf.gather(wb, perm),
            )

        ds = ds.map(mix)
    return ds.prefetch(2)
