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

Beside ``FILE.tflite`` a ``FILE.json`` records the corpora, windows, epochs, seed, precision,
cosines and the file's sha256, and ``FILE.keras`` keeps the trained network for another export.
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
from emostream.train.cli import corpus_folders
from emostream.train.corpora import Clip, get
from emostream.train.dataset import Channel, build_windows, clip_audio
from emostream.train.export import representative_sample, to_tflite
from emostream.train.models import import_keras
from emostream.train.ravdess import list_clips
from emostream.train.run import feature_config_for

F32 = npt.NDArray[np.float32]
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

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"voice student precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError(
                f"voice student epochs {self.epochs}, batch size {self.batch_size}, learning rate "
                f"{self.learning_rate}; expected positive values"
            )
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
        return np.zeros(VOICE_DIM, dtype=np.float32)


def _record_job(job: tuple[str, dict[str, Any], str, str]) -> npt.NDArray[np.float16]:
    """Worker: the student inputs (float16, of kind ``job[3]``) of one clip's speech windows, in window order."""
    path, fdict, channel, input_kind = job
    cfg = FeatureConfig.from_dict(fdict)
    recorder = _recorder(cfg, input_kind)
    audio = clip_audio(path, cfg.sample_rate_hz, channel)
    recorder.blocks.clear()
    extractor = WindowExtractor(cfg, VadConfig(), voice_encoder=recorder)
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
    clips: Sequence[Clip], *, cache_dir: Path | None, workers: int, input_kind: str = "log_mel"
) -> tuple[npt.NDArray[np.float16], F32]:
    """(student inputs (n, 160, 40) float16, LSTM embeddings (n, 256) float32) of ``clips``' speech windows,
    wideband and through G.711; ``input_kind``: :data:`~emostream.frontend.voice_student.STUDENT_INPUTS`."""
    cfg = feature_config_for("resnet_mlp", voice=True)
    inputs, targets = [], []
    for channel in CHANNELS:
        wset = build_windows(clips, cfg, VadConfig(), channel=channel, cache_dir=cache_dir, workers=workers)
        keep = wset.is_speech & (wset.copy == 0)
        jobs = [(str(c.path), cfg.to_dict(), channel, input_kind) for c in clips]
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
        targets.append(wset.features[keep][:, -VOICE_DIM:].astype(np.float32))
    return np.concatenate(inputs), np.concatenate(targets)


def build_student(normalise_with: F32) -> Any:
    """The student network (Keras): (160, 40) log mel -> (256,), not normalised (training and the runtime
    L2-normalise it); ``normalise_with`` (n, 40) log-mel frames set the per-band normalisation."""
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
    return keras.Model(inp, out)


def train_student(
    x: npt.NDArray[np.float16], t: F32, cfg: StudentConfig, log: Any = print
) -> tuple[Any, dict[str, float]]:
    """Fit a student to ``t`` (LSTM embeddings) from ``x`` (student inputs); (Keras model, figures)."""
    keras = import_keras()
    import tensorflow as tf  # noqa: PLC0415  (training extra)

    keras.utils.set_random_seed(cfg.seed)
    val, tr = validation_split(len(x), cfg)
    xf = x.astype(np.float32)
    model = build_student(xf[tr[:: max(1, len(tr) // 4000)]].reshape(-1, MEL_BANDS))
    body_out = keras.layers.UnitNormalization()(model.output)
    trainer = keras.Model(model.input, body_out)
    steps = cfg.epochs * max(1, len(tr) // cfg.batch_size)
    trainer.compile(
        keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps)),
        loss=lambda y, p: tf.reduce_sum(tf.square(y - p), axis=-1),
    )
    started = time.monotonic()
    for epoch in range(cfg.epochs):
        trainer.fit(xf[tr], t[tr], batch_size=cfg.batch_size, epochs=1, shuffle=True, verbose=0)
        if epoch % 5 == 4 or epoch == cfg.epochs - 1:
            p = trainer.predict(xf[val], batch_size=512, verbose=0)
            log(
                f"epoch {epoch + 1}: validation cosine {float(np.mean(np.sum(p * t[val], axis=1))):.4f} "
                f"({time.monotonic() - started:.0f} s)"
            )
    p = trainer.predict(xf[val], batch_size=512, verbose=0)
    return model, {
        "validation_cosine_float": float(np.mean(np.sum(p * t[val], axis=1))),
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


def mean_cosine(content: bytes, x: npt.NDArray[np.float16], t: F32, batch: int = 256) -> float:
    """Mean cosine between the exported student's embeddings (as the runtime computes them) and ``t``."""
    runner = StudentRunner(content, source="exported student")
    total = 0.0
    for i in range(0, len(x), batch):
        total += float(np.sum(runner.run_inputs(x[i : i + batch]) * t[i : i + batch]))
    return total / max(1, len(x))


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
    parser.add_argument("--cache", default="cache", help="feature cache folder ('' = none)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = StudentConfig(epochs=args.epochs, seed=args.seed, precision=args.precision)
    parts: dict[str, list[Clip]] = {"ravdess": list(list_clips(args.data))}
    for name, folder in corpus_folders(args.corpus).items():
        parts[name] = list(get(name).list_clips(folder))
    unknown = [n for n in args.leave_out if n not in parts]
    if unknown:
        raise ConfigError(f"--leave-out {', '.join(unknown)}: not among the corpora given ({', '.join(parts)})")
    used = {n: c for n, c in parts.items() if n not in args.leave_out}
    cache = Path(args.cache) if args.cache else None
    xs, ts = [], []
    for name, clips in used.items():
        x, t = distillation_set(clips, cache_dir=cache, workers=args.workers, input_kind=args.input)
        print(f"{name}: {len(x)} speech windows (wideband + G.711)", flush=True)
        xs.append(x)
        ts.append(t)
    x_all, t_all = np.concatenate(xs), np.concatenate(ts)
    model, figures = train_student(x_all, t_all, cfg, log=lambda m: print(m, flush=True))
    content = export_student(model, x_all, cfg)
    val, _ = validation_split(len(x_all), cfg)
    figures["validation_cosine_exported"] = mean_cosine(content, x_all[val], t_all[val])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(content)
    model.save(args.out.with_suffix(".keras"))
    meta = {
        "what": "voice student: a TFLite CNN distilled from the voice encoder's LSTM (train/voice_student.py)",
        "precision": cfg.precision,
        "input": args.input,
        "teacher_sha256": MODEL_SHA256,
        "sha256": sha256_hex(content),
        "bytes": len(content),
        "corpora": {n: len(c) for n, c in used.items()},
        "left_out": args.leave_out,
        "windows": len(x_all),
        "config": {
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "seed": cfg.seed,
        },
        "figures": figures,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(meta, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
