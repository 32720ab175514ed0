"""Distil the voice encoder's LSTM into a small TFLite CNN (the voice student).

``python -m emostream.train.voice_student --data RAVDESS --corpus nemo=DIR --corpus ased=DIR --out FILE.tflite``

The training examples are the windows the emotion models train on: every speech window of
every clip of the given corpora, as heard (wideband) and through a G.711 mu-law round trip.
For each, the input is the block the LSTM reads (the window's last 1.615 s as (160, 40) mel
power, :mod:`emostream.frontend.voice`) and the target is the LSTM's embedding, taken from the
feature cache of the ``--voice-encoder`` front-end (extracted when missing). No emotion label
is used. ``--leave-out NAME`` drops a corpus: evaluation folds use a student that never heard
the held-out corpus (``loco``) or RAVDESS (``emobox``).

The student (:func:`build_student`): per-band normalisation of the log mel, four 1-D
convolutions over time (batch norm, ReLU; strides 2, 1, 2, 2), the mean, the maximum and the
last step of the result, a 256-unit linear layer; trained to minimise the squared distance
between its L2-normalised output and the LSTM's embedding (Adam, cosine-decayed learning rate,
5 % of the windows held back to report the cosine). ``--precision int8`` (the default, the
shipped student) is full-integer, as the emotion heads: 0.1 ms per block, but it rounds its
input and every activation, so a 0.1 % gain moves ``fast``'s probabilities by up to 0.18.
``float16`` keeps float arithmetic (0.28 ms per block, 1 MB): smooth under a gain (0.03), but
more sensitive to a DC offset near silence, where the int8 input's coarse steps hid the log
mel's floor; tried for v7 and not adopted (docs/results.md, docs/stability.md).

``--layer-means 2,3`` adds a second linear head for the time means of those LSTM layers (what
``accurate`` reads beside the embedding), trained on the means standardised over the distillation
set (mean squared error added to the loss) so that both heads share the int8 output's scale; the
runtime hands them on as they come (the emotion model normalises its inputs). ``--speaker-centred W``
trains on batches of 4 speakers x 32 windows and adds W times the same loss on outputs and targets
with each speaker's batch mean taken off. ``--augment-copies N`` distils on N augmented copies of
every wideband clip as well (the emotion models' augmentation: tempo, pitch, room, noise and babble,
phone line, level; the LSTM's targets are extracted for the copies into the feature cache). All
three were tried for ``accurate`` and not shipped (docs/results.md, "Trial: a voice student for
`accurate`").

Beside ``FILE.tflite`` a ``FILE.json`` records the corpora, windows, epochs, seed, precision,
layer means, cosines (and the layer means' R^2) and the file's sha256, and ``FILE.keras`` keeps the
trained network for another export.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from emostream.apps.threads import bound_math_threads
from emostream.errors import ConfigError, DatasetError
from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.frontend.voice import (
    BLOCK_FRAMES,
    MEL_BANDS,
    MODEL_SHA256,
    VOICE_DIM,
    VoiceConfig,
    VoiceEncoder,
)
from emostream.frontend.voice_student import STUDENT_INPUTS, StudentRunner, student_input
from emostream.frontend.windowing import WindowExtractor
from emostream.inference.tflite import sha256_hex
from emostream.train.augment import AugmentConfig, augment_config_from_dict
from emostream.train.cli import corpus_folders, parse_layer_means
from emostream.train.corpora import Clip, get
from emostream.train.dataset import Channel, babble_paths, build_windows, clip_signals
from emostream.train.export import representative_sample, to_tflite
from emostream.train.models import import_keras
from emostream.train.ravdess import list_clips
from emostream.train.run import feature_config_for

F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
SPEAKER_GROUPS = 4
SPEAKER_GROUP_WINDOWS = 32
CHANNELS: tuple[Channel, ...] = ("wideband", "g711")
Precision = Literal["float16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("float16", "int8")


@dataclass(frozen=True, kw_only=True)
class StudentConfig:
    """Training settings of a voice student."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0
    validation_share: float = 0.05
    precision: Precision = "int8"
    speaker_centred_weight: float = 0.0
    """> 0: each batch holds :data:`SPEAKER_GROUPS` speakers x :data:`SPEAKER_GROUP_WINDOWS` windows and the loss
    adds this weight times the same distance on outputs and targets centred per speaker within the batch (how
    a speaker's windows differ from each other, which the emotion model reads after speaker calibration)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"voice student precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError(
                f"voice student epochs {self.epochs}, batch size {self.batch_size}, learning rate "
                f"{self.learning_rate}; expected positive values"
            )
        if not 0.0 <= self.speaker_centred_weight <= 100.0:
            raise ConfigError(f"speaker-centred weight is {self.speaker_centred_weight}; expected 0 (off) to 100")
        if not 0.0 < self.validation_share < 0.5:
            raise ConfigError(f"validation share is {self.validation_share}; expected between 0 and 0.5")


class _MelRecorder(VoiceEncoder):
    """A voice encoder that records each block's student input and returns zeros (no LSTM run)."""

    def __init__(self, config: VoiceConfig, input_kind: str) -> None:
        super().__init__(config)
        self.input_kind = input_kind
        self.blocks: list[npt.NDArray[np.float16]] = []

    def process(self, block: npt.ArrayLike, *, end_sample: int | None = None) -> F32:
        mel = self.mel(block, end_sample=end_sample)
        self.blocks.append(student_input(mel, self.input_kind).astype(np.float16))
        return np.zeros(self.config.dim, dtype=np.float32)


RecordJob = tuple[str, dict[str, Any], str, str, dict[str, Any], list[list[str]]]


def _record_job(job: RecordJob) -> npt.NDArray[np.float16]:
    """Worker: the student inputs (float16, of kind ``job[3]``) of one clip's speech windows, then those of each
    of its augmented copies (``job[4]``, babble from ``job[5]``), in the feature cache's window order."""
    path, fdict, channel, input_kind, adict, babble = job
    cfg = FeatureConfig.from_dict(fdict)
    recorder = _recorder(cfg, input_kind)
    recorder.blocks.clear()
    extractor = WindowExtractor(cfg, VadConfig(), voice_encoder=recorder)
    for audio in clip_signals(path, cfg.sample_rate_hz, augment_config_from_dict(adict), channel, babble):
        extractor.reset()  # a fresh stream per signal, as the feature cache's extraction reads it
        extractor.process(audio)
        extractor.flush()
    if not recorder.blocks:
        return np.zeros((0, BLOCK_FRAMES, MEL_BANDS), dtype=np.float16)
    return np.stack(recorder.blocks)


@functools.lru_cache(maxsize=1)
def _recorder(cfg: FeatureConfig, input_kind: str) -> _MelRecorder:
    if cfg.voice is None:
        raise ConfigError("the distillation front-end has no voice encoder")
    return _MelRecorder(cfg.voice, input_kind)


def distillation_set(
    clips: Sequence[Clip],
    *,
    cache_dir: Path | None,
    workers: int,
    input_kind: str = "log_mel",
    layer_means: tuple[int, ...] = (),
    aug: AugmentConfig | None = None,
) -> tuple[npt.NDArray[np.float16], F32, npt.NDArray[np.int32]]:
    """(student inputs (n, 160, 40) float16, LSTM targets (n, 256 * (1 + len(layer_means))) float32, speaker
    of each window (n,) int32) of ``clips``' speech windows, wideband (with ``aug``'s augmented copies, as the
    emotion models' ``--augment-copies`` makes them) and through G.711: the embedding, then the time means of
    the ``layer_means`` LSTM layers (as the ``--voice-layer-means`` front-end caches them); ``input_kind``:
    :data:`~emostream.frontend.voice_student.STUDENT_INPUTS`."""
    cfg = feature_config_for("resnet_mlp", voice=True, voice_layer_means=layer_means)
    dim = VOICE_DIM * (1 + len(layer_means))
    inputs, targets, speakers = [], [], []
    actors = np.array([c.actor for c in clips], dtype=np.int32)
    for channel in CHANNELS:
        copies = (aug or AugmentConfig()) if channel == "wideband" else AugmentConfig()
        wset = build_windows(clips, cfg, VadConfig(), aug=copies, channel=channel, cache_dir=cache_dir, workers=workers)
        keep = wset.is_speech
        jobs: list[RecordJob] = [
            (str(c.path), cfg.to_dict(), channel, input_kind, copies.to_dict(), babble)
            for c, babble in zip(clips, babble_paths(clips, copies), strict=True)
        ]
        if workers > 1:
            bound_math_threads()
            with mp.get_context("spawn").Pool(workers) as pool:
                blocks = pool.map(_record_job, jobs, chunksize=8)
        else:
            blocks = [_record_job(j) for j in jobs]
        mel = np.concatenate(blocks)
        if len(mel) != int(keep.sum()):
            raise DatasetError(
                f"{len(mel)} voice blocks recorded but the feature cache has {int(keep.sum())} speech windows "
                f"({channel}); the cache is stale: delete it (--cache) and run again"
            )
        inputs.append(mel)
        targets.append(wset.features[keep][:, -dim:].astype(np.float32))
        speakers.append(actors[wset.clip_index[keep]])
    return np.concatenate(inputs), np.concatenate(targets), np.concatenate(speakers)


def build_student(normalise_with: F32, means_dim: int = 0) -> Any:
    """The student network (Keras): (160, 40) log mel -> (256 + ``means_dim``,): the embedding, not normalised
    (training and the runtime L2-normalise it), then ``means_dim`` standardised layer means (a second head);
    ``normalise_with`` (n, 40) log-mel frames set the per-band normalisation."""
    keras = import_keras()
    layers = keras.layers
    inp = layers.Input((BLOCK_FRAMES, MEL_BANDS))
    norm = layers.Normalization(axis=-1)
    norm.adapt(normalise_with)
    h = norm(inp)
    for filters, kernel, stride in ((128, 5, 2), (128, 3, 1), (192, 3, 2), (256, 3, 2)):
        h = layers.Conv1D(filters, kernel, strides=stride, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        h = layers.ReLU()(h)
    last = layers.Cropping1D((h.shape[1] - 1, 0))(h)
    pooled = layers.Concatenate()(
        [layers.GlobalAveragePooling1D()(h), layers.GlobalMaxPooling1D()(h), layers.Flatten()(last)]
    )
    out = layers.Dense(VOICE_DIM)(pooled)
    if means_dim:
        out = layers.Concatenate()([out, layers.Dense(means_dim)(pooled)])
    return keras.Model(inp, out)


@dataclass(frozen=True)
class MeansScale:
    """Per-value mean and standard deviation of the layer-mean targets ((k,) float32 each): the student's second
    head outputs ``(target - mean) / std``, so that the embedding and the means share one int8 output scale."""

    mean: F32
    std: F32

    @classmethod
    def of(cls, targets: F32) -> MeansScale:
        """The scale of (n, k) targets (a floor of 1e-6 on the deviation)."""
        return cls(
            mean=targets.mean(axis=0).astype(np.float32),
            std=np.maximum(targets.std(axis=0), 1e-6).astype(np.float32),
        )

    def apply(self, targets: F32) -> F32:
        """(n, k) layer means -> standardised, float32."""
        out: F32 = ((targets - self.mean) / self.std).astype(np.float32)
        return out


def student_targets(t: F32, scale: MeansScale | None) -> F32:
    """What a student is trained to output for LSTM targets ``t`` (n, 256 [+ k]): the embedding as it is,
    the layer means standardised by ``scale`` (None when there are none)."""
    if scale is None:
        return t
    return np.concatenate([t[:, :VOICE_DIM], scale.apply(t[:, VOICE_DIM:])], axis=1)


def part_figures(p: F32, y: F32) -> dict[str, float]:
    """How well outputs ``p`` match targets ``y`` (both (n, 256 [+ k]), the embedding unit-normalised, the means
    standardised): the embedding's mean cosine and, with means, their R^2 over every value (1 = exact)."""
    figures = {"cosine": float(np.mean(np.sum(p[:, :VOICE_DIM] * y[:, :VOICE_DIM], axis=1)))}
    if y.shape[1] > VOICE_DIM:
        err = float(np.sum(np.square(p[:, VOICE_DIM:] - y[:, VOICE_DIM:])))
        total = float(np.sum(np.square(y[:, VOICE_DIM:] - y[:, VOICE_DIM:].mean(axis=0))))
        figures["layer_means_r2"] = 1.0 - err / max(total, 1e-12)
    return figures


def speaker_batches(rows: npt.NDArray[np.int64], speakers: npt.NDArray[np.int32], rng: np.random.Generator) -> IntArray:
    """An epoch's order of ``rows`` in batches of :data:`SPEAKER_GROUPS` x :data:`SPEAKER_GROUP_WINDOWS`: each
    batch is that many groups, each group that many windows of one speaker (a speaker's last group filled by
    drawing again from its windows), groups shuffled. ``speakers``: every window's speaker (``rows`` index into
    it). Length: a whole number of batches."""
    m = SPEAKER_GROUP_WINDOWS
    groups: list[npt.NDArray[np.int64]] = []
    for speaker in np.unique(speakers[rows]):
        own = rng.permutation(rows[speakers[rows] == speaker])
        short = -len(own) % m
        if short:
            own = np.concatenate([own, rng.choice(own, short)])
        groups += list(own.reshape(-1, m))
    order = rng.permutation(len(groups))
    whole = len(order) - len(order) % SPEAKER_GROUPS
    out: IntArray = np.concatenate([groups[i] for i in order[:whole]]) if whole else np.zeros(0, dtype=np.int64)
    return out


def train_student(
    x: npt.NDArray[np.float16],
    t: F32,
    cfg: StudentConfig,
    log: Any = print,
    speakers: npt.NDArray[np.int32] | None = None,
) -> tuple[Any, dict[str, float]]:
    """Fit a student to ``t`` (:func:`student_targets`: LSTM embeddings, then any standardised layer means) from
    ``x`` (student inputs); (Keras model, figures). The loss: the squared distance between the L2-normalised
    embedding and the LSTM's, plus the mean squared error of the standardised means (each about 0.2-0.3 when
    the student is as good as v6's); with ``cfg.speaker_centred_weight`` (needs ``speakers``, each window's),
    batches of speakers (:func:`speaker_batches`) and the same distance on outputs and targets centred per speaker."""
    keras = import_keras()
    import tensorflow as tf  # noqa: PLC0415  (training extra)

    weight = cfg.speaker_centred_weight
    if weight and (speakers is None or len(speakers) != len(x)):
        raise ConfigError("a speaker-centred loss needs each window's speaker")
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    val, tr = validation_split(len(x), cfg)
    xf = x.astype(np.float32)
    means_dim = t.shape[1] - VOICE_DIM
    model = build_student(xf[tr[:: max(1, len(tr) // 4000)]].reshape(-1, MEL_BANDS), means_dim)
    emb = keras.layers.UnitNormalization()(model.output[:, :VOICE_DIM] if means_dim else model.output)
    body_out = keras.layers.Concatenate()([emb, model.output[:, VOICE_DIM:]]) if means_dim else emb
    trainer = keras.Model(model.input, body_out)
    batch = SPEAKER_GROUPS * SPEAKER_GROUP_WINDOWS if weight else cfg.batch_size
    steps = cfg.epochs * max(1, len(tr) // batch)

    def distance(y: Any, p: Any) -> Any:
        d = tf.reduce_sum(tf.square(y[..., :VOICE_DIM] - p[..., :VOICE_DIM]), axis=-1)
        if not means_dim:
            return d
        return d + tf.reduce_mean(tf.square(y[..., VOICE_DIM:] - p[..., VOICE_DIM:]), axis=-1)

    def loss(y: Any, p: Any) -> Any:
        if not weight:
            return distance(y, p)
        shape = (-1, SPEAKER_GROUP_WINDOWS, t.shape[1])
        yg, pg = tf.reshape(y, shape), tf.reshape(p, shape)
        yc, pc = yg - tf.reduce_mean(yg, axis=1, keepdims=True), pg - tf.reduce_mean(pg, axis=1, keepdims=True)
        centred = distance(yc, pc)
        return distance(y, p) + weight * tf.reshape(centred, (-1,))

    trainer.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps)), loss=loss)
    started = time.monotonic()
    for epoch in range(cfg.epochs):
        if weight and speakers is not None:
            order = speaker_batches(tr, speakers, rng)
            trainer.fit(xf[order], t[order], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        else:
            trainer.fit(xf[tr], t[tr], batch_size=batch, epochs=1, shuffle=True, verbose=0)
        if epoch % 5 == 4 or epoch == cfg.epochs - 1:
            figures = part_figures(trainer.predict(xf[val], batch_size=512, verbose=0), t[val])
            shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
            log(f"epoch {epoch + 1}: validation {shown} ({time.monotonic() - started:.0f} s)")
    figures = part_figures(trainer.predict(xf[val], batch_size=512, verbose=0), t[val])
    return model, {
        **{f"validation_{k}_float": v for k, v in figures.items()},
        "validation_windows": len(val),
    }


def validation_split(n: int, cfg: StudentConfig) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(held-back, training) indices of ``n`` windows, drawn with ``cfg.seed``."""
    order = np.random.default_rng(cfg.seed).permutation(n)
    n_val = max(1, int(n * cfg.validation_share))
    return order[:n_val], order[n_val:]


def export_student(model: Any, x: npt.NDArray[np.float16], cfg: StudentConfig) -> bytes:
    """The TFLite bytes of a trained student at ``cfg.precision`` (int8 calibrates on 500 windows of ``x``)."""
    if cfg.precision == "int8":
        return to_tflite(model, representative_sample(x.astype(np.float32), 500, cfg.seed))
    return to_tflite(model, None, float16=True)


def exported_figures(content: bytes, x: npt.NDArray[np.float16], t: F32, batch: int = 256) -> dict[str, float]:
    """:func:`part_figures` of the exported student (its outputs as the runtime computes them) against ``t``."""
    runner = StudentRunner(content, source="exported student")
    p = np.concatenate([runner.run_inputs(x[i : i + batch]) for i in range(0, len(x), batch)])
    return part_figures(p, t)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emostream.train.voice_student", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", required=True, type=Path, help="RAVDESS speech folder")
    parser.add_argument("--corpus", action="append", default=[], metavar="NAME=DIR", help="nemo=DIR, ased=DIR")
    parser.add_argument(
        "--leave-out", action="append", default=[], metavar="NAME", help="drop a corpus (ravdess, nemo, ased)"
    )
    parser.add_argument("--out", required=True, type=Path, help="FILE.tflite (FILE.json is written beside it)")
    parser.add_argument("--epochs", type=int, default=StudentConfig.epochs)
    parser.add_argument("--seed", type=int, default=StudentConfig.seed)
    parser.add_argument("--precision", choices=PRECISIONS, default=StudentConfig.precision)
    parser.add_argument(
        "--input", choices=STUDENT_INPUTS, default="log_mel", help="what the student reads (default: v6's log_mel)"
    )
    parser.add_argument(
        "--layer-means",
        default="",
        metavar="L1,L2",
        help="also reproduce the time means of these LSTM layers (e.g. 2,3), standardised; default: the embedding only",
    )
    parser.add_argument(
        "--speaker-centred",
        type=float,
        default=0.0,
        metavar="W",
        help="batches of 4 speakers x 32 windows; the loss adds W x the distance with each speaker's batch mean "
        "taken off outputs and targets (default 0: off)",
    )
    parser.add_argument(
        "--augment-copies",
        type=int,
        default=0,
        metavar="N",
        help="also distil on N augmented copies of each clip (tempo, pitch, room, noise/babble, phone line, level, "
        "as the emotion models' --augment-copies; the LSTM's targets are extracted for them on first use)",
    )
    parser.add_argument("--cache", default="cache", help="feature cache folder ('' = none)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    aug = AugmentConfig(copies=args.augment_copies)
    layer_means = parse_layer_means(args.layer_means, "--layer-means")
    cfg = StudentConfig(
        epochs=args.epochs, seed=args.seed, precision=args.precision, speaker_centred_weight=args.speaker_centred
    )
    parts: dict[str, list[Clip]] = {"ravdess": list(list_clips(args.data))}
    for name, folder in corpus_folders(args.corpus).items():
        parts[name] = list(get(name).list_clips(folder))
    unknown = [n for n in args.leave_out if n not in parts]
    if unknown:
        raise ConfigError(f"--leave-out {', '.join(unknown)}: not among the corpora given ({', '.join(parts)})")
    used = {n: c for n, c in parts.items() if n not in args.leave_out}
    cache = Path(args.cache) if args.cache else None
    xs, ts, speakers = [], [], []
    for name, clips in used.items():
        x, t, who = distillation_set(
            clips, cache_dir=cache, workers=args.workers, input_kind=args.input, layer_means=layer_means, aug=aug
        )
        print(f"{name}: {len(x)} speech windows (wideband, {aug.copies} augmented copies, G.711)", flush=True)
        xs.append(x)
        ts.append(t)
        speakers.append(who)
    x_all, raw = np.concatenate(xs), np.concatenate(ts)
    scale = MeansScale.of(raw[:, VOICE_DIM:]) if layer_means else None
    t_all = student_targets(raw, scale)
    del raw
    model, figures = train_student(
        x_all, t_all, cfg, log=lambda m: print(m, flush=True), speakers=np.concatenate(speakers)
    )
    content = export_student(model, x_all, cfg)
    val, _ = validation_split(len(x_all), cfg)
    exported = exported_figures(content, x_all[val], t_all[val])
    figures.update({f"validation_{k}_exported": v for k, v in exported.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(content)
    model.save(args.out.with_suffix(".keras"))
    meta = {
        "what": "voice student: a TFLite CNN distilled from the voice encoder's LSTM (train/voice_student.py)",
        "precision": cfg.precision,
        "input": args.input,
        **(
            {"layer_means": list(layer_means), "layer_means_output": "standardised (the distillation set's mean, std)"}
            if layer_means
            else {}
        ),
        "teacher_sha256": MODEL_SHA256,
        "sha256": sha256_hex(content),
        "bytes": len(content),
        "corpora": {n: len(c) for n, c in used.items()},
        "left_out": args.leave_out,
        "windows": len(x_all),
        **({"augmentation": aug.to_dict()} if aug.copies else {}),
        "config": {
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "seed": cfg.seed,
            **({"speaker_centred_weight": cfg.speaker_centred_weight} if cfg.speaker_centred_weight else {}),
        },
        "figures": figures,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(meta, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
