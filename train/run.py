"""Orchestration of `emostream evaluate` and `emostream train`, with rich progress bars."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from emostream.errors import ConfigError, DatasetError
from emostream.frontend.embedding import EmbeddingConfig
from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.train.augment import AugmentConfig, g711_available
from emostream.train.dataset import WindowSet, build_windows
from emostream.train.evaluate import (
    SplitResult,
    confusion,
    emobox_split,
    random_split,
    run_split,
    speaker_normalise,
    summarise,
)
from emostream.train.export import representative_sample, run_tflite, write_model
from emostream.train.fit import TrainConfig, fit
from emostream.train.models import SUMMARY_FAMILIES
from emostream.train.ravdess import describe, folds_file, list_clips, load_folds
from emostream.train.report import write_class_table, write_confusion_png, write_metrics

PROTOCOLS: tuple[str, ...] = ("random", "emobox", "emobox_speaker_adaptive")


def feature_config_for(
    family: str,
    window_ms: float = 2000.0,
    hop_ms: float = 500.0,
    *,
    legacy: bool = False,
    embedding_stride_frames: int = 0,
) -> FeatureConfig:
    """Default front-end of a family.

    Summary families (``resnet_mlp``, ``mlp``): summary statistics with pitch (F0 mean/std)
    and delta statistics (115 inputs). ``cnn``: 40 MFCCs + F0 + voicing per frame (42
    channels). ``legacy=True`` gives the first shipped front-end (no pitch, no deltas:
    90 inputs resp. 40 channels). ``embedding_stride_frames`` > 0 fuses the pretrained
    speech embedding into a summary family's input (``EmbeddingConfig(stride_frames=...)``,
    in 10 ms mel frames; + 288 pooled inputs); 0 = off. :class:`ConfigError` for ``cnn``.
    """
    if embedding_stride_frames < 0:
        raise ConfigError(f"--embedding-stride is {embedding_stride_frames}; expected 0 (off) or 1 to 1000 frames")
    if family == "cnn":
        if embedding_stride_frames:
            raise ConfigError(
                f"--embedding-stride {embedding_stride_frames} with --model cnn: the speech embedding is fused into "
                f"the summary statistics only; use --model {' or '.join(SUMMARY_FAMILIES)} or --embedding-stride 0"
            )
        return FeatureConfig(
            feature_set="frames", n_mfcc=40, window_ms=window_ms, window_hop_ms=hop_ms, pitch=not legacy
        )
    embedding = EmbeddingConfig(stride_frames=embedding_stride_frames) if embedding_stride_frames else None
    return FeatureConfig(
        window_ms=window_ms, window_hop_ms=hop_ms, pitch=not legacy, deltas=not legacy, embedding=embedding
    )


@dataclass
class RunSpec:
    """Everything one training/evaluation run depends on."""

    data: Path
    train: TrainConfig
    features: FeatureConfig
    vad: VadConfig = field(default_factory=VadConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: Path | None = Path("cache")
    workers: int = 2
    g711: bool = True
    max_folds: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stamped into reports and metadata."""
        return {
            "data": str(self.data),
            "train": self.train.to_dict(),
            "features": self.features.to_dict(),
            "vad": self.vad.to_dict(),
            "augment": self.augment.to_dict(),
            "g711_available": g711_available(),
            "max_folds": self.max_folds,
        }


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    )


def load_windows(spec: RunSpec, progress: Progress, channel: str = "wideband") -> WindowSet:
    """Windows of every clip (augmented copies unless ``channel="g711"``), from the cache when possible."""
    clips = list_clips(spec.data)
    aug = spec.augment if channel == "wideband" else AugmentConfig()
    task = progress.add_task(f"features ({channel}, {aug.copies} aug. copies)", total=len(clips))
    wset = build_windows(
        clips,
        spec.features,
        spec.vad,
        aug=aug,
        channel="g711" if channel == "g711" else "wideband",
        cache_dir=spec.cache_dir,
        workers=spec.workers,
        progress=lambda done, total: progress.update(task, completed=done, total=total),
    )
    progress.update(task, completed=len(clips))
    return wset


def evaluate(
    spec: RunSpec, protocol: str, out: Path, save_fold_models: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Run ``protocol`` ("random", "emobox", "emobox_speaker_adaptive" or "all"); write reports to ``out``."""
    chosen = PROTOCOLS if protocol == "all" else (protocol,)
    results: dict[str, dict[str, Any]] = {}
    with _progress() as progress:
        wset = load_windows(spec, progress)
        progress.console.print(describe(wset.clips))
        g711 = load_windows(spec, progress, "g711") if spec.g711 else None
        for proto in chosen:
            results.update(
                _run_protocol(
                    spec=spec,
                    proto=proto,
                    wset=wset,
                    g711=g711,
                    out=out,
                    save_fold_models=save_fold_models,
                    progress=progress,
                )
            )
    return results


def _splits(spec: RunSpec, proto: str, wset: WindowSet) -> list[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    if proto == "random":
        return [("random", random_split(wset, seed=42))]
    folds = load_folds(folds_file(spec.data))
    chosen = list(folds.items())[: spec.max_folds or None]
    return [(str(k), emobox_split(wset, actors, spec.train.seed + k)) for k, actors in chosen]


def _run_protocol(
    *,
    spec: RunSpec,
    proto: str,
    wset: WindowSet,
    g711: WindowSet | None,
    out: Path,
    save_fold_models: Path | None,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    adaptive = proto == "emobox_speaker_adaptive"
    features = speaker_normalise(wset) if adaptive else None
    splits = _splits(spec, proto, wset)
    task = progress.add_task(f"{proto}: splits", total=len(splits))
    epoch_task = progress.add_task("epochs", total=spec.train.epochs)
    split_results: list[SplitResult] = []
    for name, (tr, va, te) in splits:
        started = time.monotonic()
        progress.reset(epoch_task, total=spec.train.epochs, description=f"{proto} split {name}: epochs")
        res = run_split(
            wset,
            tr,
            va,
            te,
            spec.train,
            fold=name,
            g711=None if adaptive else g711,
            features=features,
            on_epoch=lambda e, logs: progress.update(epoch_task, completed=e + 1),
            export_dir=save_fold_models if proto == "emobox" else None,
            feature_cfg=spec.features,
            vad_cfg=spec.vad,
        )
        res.seconds = time.monotonic() - started
        split_results.append(res)
        figs = res.figures["int8"]
        progress.console.print(
            f"{proto} split {name} (test actors {res.test_actors}): int8 UA {figs['ua']:.3f} WA {figs['wa']:.3f} "
            f"F1 {figs['macro_f1']:.3f}; float UA {res.figures['float']['ua']:.3f}; best epoch {res.best_epoch}; "
            f"validation-actor UA {res.figures['validation']['ua']:.3f}"
        )
        progress.advance(task)
    return _write_protocol(spec, proto, wset, split_results, out)


def _write_protocol(
    spec: RunSpec, proto: str, wset: WindowSet, split_results: list[SplitResult], out: Path
) -> dict[str, dict[str, Any]]:
    config = spec.to_dict()
    variants = {proto: "int8"}
    if proto == "emobox" and all("g711" in r.figures for r in split_results):
        variants["emobox_g711"] = "g711"
    written: dict[str, dict[str, Any]] = {}
    for name, variant in variants.items():
        summary = summarise(split_results, variant)
        extra: dict[str, Any] = {"model": "int8 TFLite", "family": spec.train.family}
        if name == proto:
            float_summary = summarise(split_results, "float")
            extra["float"] = float_summary
            extra["validation"] = summarise(split_results, "validation")["mean"]
            extra["int8_vs_float"] = {
                "top1_agreement_windows": float(np.mean([r.agreement for r in split_results])),
                "mean_abs_dp_windows": float(np.mean([r.mean_abs_dp for r in split_results])),
                "ua_difference_int8_minus_float": summary["mean"]["ua"] - float_summary["mean"]["ua"],
            }
            extra["epochs"] = [{"split": r.fold, "run": r.epochs, "best": r.best_epoch} for r in split_results]
            extra["seconds_per_split"] = [round(r.seconds, 1) for r in split_results]
        if proto == "emobox_speaker_adaptive":
            extra["note"] = (
                "test speakers' features normalised with statistics of their own audio (not the shipped runtime)"
            )
        write_metrics(out, name, summary, extra, config)
        matrix = confusion(split_results, wset.labels, variant)
        write_class_table(out, name, matrix, config)
        m = summary["mean"]
        write_confusion_png(out, name, matrix, f"{spec.train.family} {name}: UA {m['ua']:.3f}, WA {m['wa']:.3f}")
        written[name] = {"protocol": name, **summary, **extra}
    return written


def train_final(
    spec: RunSpec, out_dir: Path, name: str, metrics_dir: Path | None = None, float_copy: bool = False
) -> dict[str, Any]:
    """Train on every clip for ``spec.train.epochs`` epochs (no early stopping); export int8 + metadata."""
    started = time.monotonic()
    with _progress() as progress:
        wset = load_windows(spec, progress)
        if len(wset.clips) < 16:
            raise DatasetError(f"only {len(wset.clips)} clips found in {spec.data}; training needs the full set")
        keep = wset.is_speech
        epoch_task = progress.add_task("training epochs", total=spec.train.epochs)
        fitted = fit(
            wset.features[keep],
            wset.window_labels[keep],
            8,
            spec.train,
            on_epoch=lambda e, logs: progress.update(epoch_task, completed=e + 1),
        )
    seconds = time.monotonic() - started
    import tensorflow as tf  # noqa: PLC0415

    training = {
        "dataset": "RAVDESS speech (Livingstone & Russo 2018), all clips",
        "license": "CC BY-NC-SA 4.0",
        "clips": len(wset.clips),
        "actors": sorted({int(a) for a in wset.actors}),
        "windows": int(keep.sum()),
        "augmentation": spec.augment.to_dict(),
        "g711_in_augmentation": g711_available(),
        "epochs": fitted.epochs_run,
        "seed": spec.train.seed,
        "seconds": round(seconds, 1),
        "tf_version": tf.__version__,
        "config": spec.to_dict(),
    }
    metrics = _collect_metrics(metrics_dir)
    rep = representative_sample(wset.features[keep], 1000, spec.train.seed)
    _meta, int8, flt = write_model(
        out_dir,
        name=name,
        family=spec.train.family,
        fitted=fitted,
        feature_cfg=spec.features,
        vad_cfg=spec.vad,
        representative=rep,
        training=training,
        metrics=metrics,
        float_copy=float_copy,
    )
    check = _fixture_check(fitted, int8, flt, wset)
    data = json.loads((out_dir / f"{name}.json").read_text(encoding="utf-8"))
    data["metrics"]["int8_vs_float_training_windows"] = check
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return {"name": name, "seconds": seconds, "size_bytes": len(int8), "float_bytes": len(flt), **check}


def _collect_metrics(metrics_dir: Path | None) -> dict[str, Any]:
    if metrics_dir is None:
        return {}
    out: dict[str, Any] = {}
    for path in sorted(metrics_dir.glob("metrics_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        keep = {k: data[k] for k in ("mean", "folds", "float", "int8_vs_float", "commit", "date") if k in data}
        out[data["protocol"]] = keep
    return out


def _fixture_check(fitted: Any, int8: bytes, flt: bytes, wset: WindowSet) -> dict[str, float]:
    """int8 vs float TFLite on a fixed sample of 1000 training windows: top-1 agreement and mean |Δp|."""
    x = fitted.prepare(representative_sample(wset.features[wset.is_speech], 1000, 7))
    p8, pf = run_tflite(int8, x), run_tflite(flt, x)
    return {
        "top1_agreement": float(np.mean(p8.argmax(1) == pf.argmax(1))),
        "mean_abs_dp": float(np.mean(np.abs(p8 - pf))),
    }


def replace_train(spec: RunSpec, **changes: Any) -> RunSpec:
    """A copy of ``spec`` with TrainConfig fields changed."""
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, **changes))
