"""Orchestration of `emostream evaluate` and `emostream train`, with rich progress bars."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from emostream.engine.reading import ReadingConfig
from emostream.errors import ConfigError, DatasetError
from emostream.frontend.embedding import EMBEDDING_VARIANTS, EmbeddingConfig
from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.frontend.voice import VoiceConfig, voice_encoder_dir
from emostream.frontend.whisper import WhisperConfig
from emostream.inference.metadata import EMOTIONS
from emostream.inference.tflite import sha256_hex
from emostream.train import loco
from emostream.train.augment import AugmentConfig, g711_available
from emostream.train.calibration import CalibrationSpec, SpeakerPool, make_calibrated, population
from emostream.train.corpora import LOCO_CORPORA, Clip, corpus_of, describe_clips
from emostream.train.corpora import get as get_corpus
from emostream.train.dataset import WindowSet, build_windows, concat_windows
from emostream.train.evaluate import (
    SplitResult,
    confusion,
    emobox_split,
    loco_split,
    ravdess_random_split,
    reading_config,
    run_calibrated_split,
    run_split,
    speaker_normalise,
    summarise,
    training_extras,
)
from emostream.train.export import representative_sample, run_tflite, write_model
from emostream.train.fit import TrainConfig, fit
from emostream.train.models import SUMMARY_FAMILIES
from emostream.train.ravdess import folds_file, list_clips, list_song_clips, load_folds
from emostream.train.reading import AROUSAL_NOTE, UNCERTAIN_RULE
from emostream.train.report import write_class_table, write_confusion_png, write_metrics

PROTOCOLS: tuple[str, ...] = ("random", "emobox", "emobox_speaker_adaptive")
"""What ``--protocol all`` runs (``emobox_calibrated``, ``random_speech_song`` and ``loco`` are asked for by name)."""
ALL_PROTOCOLS: tuple[str, ...] = (*PROTOCOLS, "emobox_calibrated", "random_speech_song", "loco")


def feature_config_for(
    family: str,
    window_ms: float = 2000.0,
    hop_ms: float = 500.0,
    *,
    legacy: bool = False,
    embedding_stride_frames: int = 0,
    embedding_variant: str = "float",
    voice: bool = False,
    voice_student: Path | None = None,
    voice_layer_means: tuple[int, ...] = (),
    voice_speech_lookback_ms: float = 0.0,
    whisper_layers: tuple[int, ...] = (),
    whisper_chunk_ms: float = 500.0,
) -> FeatureConfig:
    """Default front-end of a family.

    Summary families (``resnet_mlp``, ``mlp``): summary statistics with pitch (F0 mean/std)
    and delta statistics (115 inputs). ``cnn``: 40 MFCCs + F0 + voicing per frame (42
    channels). ``legacy=True`` gives the first shipped front-end (no pitch, no deltas:
    90 inputs resp. 40 channels). ``embedding_stride_frames`` > 0 fuses the pretrained
    speech embedding into a summary family's input (``EmbeddingConfig(stride_frames=...)``,
    in 10 ms mel frames; + 288 pooled inputs); 0 = off. :class:`ConfigError` for ``cnn``.
    ``embedding_variant``: the embedding model's file, ``float`` (the vendored model, the default) or ``int8``
    (3.3x less CPU per embedding, but its readings change on inaudible changes: docs/stability.md).
    ``voice``: fuse the pretrained voice encoder's embedding (+256 inputs, :mod:`emostream.frontend.voice`);
    ``voice_student``: a distilled student file run in the encoder's LSTM's place (:func:`student_voice_config`);
    ``voice_layer_means``: LSTM layers whose time means follow the embedding (+256 inputs each; LSTM only).
    ``voice_speech_lookback_ms``: > 0 gives the encoder the last 1.615 s of speech within this lookback
    (:class:`~emostream.frontend.voice.VoiceConfig`); 0 the window's last 1.615 s of audio.
    ``whisper_layers``: Whisper tiny.en encoder blocks (1-4) whose rows' mean and std over each speech window
    are fused last (+768 inputs each; () = off), the stream encoded in chunks of ``whisper_chunk_ms``
    (:class:`~emostream.frontend.whisper.WhisperConfig`).
    """
    if embedding_stride_frames < 0:
        raise ConfigError(f"--embedding-stride is {embedding_stride_frames}; expected 0 (off) or 1 to 1000 frames")
    whisper = WhisperConfig(layers=whisper_layers, chunk_ms=whisper_chunk_ms) if whisper_layers else None
    if family == "cnn":
        if whisper is not None:
            raise ConfigError(
                "--whisper-layers with --model cnn: the whisper statistics are fused into the summary statistics "
                f"only; use --model {' or '.join(SUMMARY_FAMILIES)} or drop --whisper-layers"
            )
        if voice:
            raise ConfigError(
                "--voice-encoder with --model cnn: the voice embedding is fused into the summary statistics only; "
                f"use --model {' or '.join(SUMMARY_FAMILIES)} or drop --voice-encoder"
            )
        if embedding_stride_frames:
            raise ConfigError(
                f"--embedding-stride {embedding_stride_frames} with --model cnn: the speech embedding is fused into "
                f"the summary statistics only; use --model {' or '.join(SUMMARY_FAMILIES)} or --embedding-stride 0"
            )
        return FeatureConfig(
            feature_set="frames", n_mfcc=40, window_ms=window_ms, window_hop_ms=hop_ms, pitch=not legacy
        )
    if embedding_variant not in EMBEDDING_VARIANTS:
        raise ConfigError(
            f"--embedding-variant is {embedding_variant!r}; expected one of {', '.join(EMBEDDING_VARIANTS)}"
        )
    if embedding_variant != "float" and not embedding_stride_frames:
        raise ConfigError(
            f"--embedding-variant {embedding_variant} needs --embedding-stride FRAMES (the embedding is off)"
        )
    embedding = (
        EmbeddingConfig(stride_frames=embedding_stride_frames, int8=embedding_variant == "int8")
        if embedding_stride_frames
        else None
    )
    return FeatureConfig(
        window_ms=window_ms,
        window_hop_ms=hop_ms,
        pitch=not legacy,
        deltas=not legacy,
        embedding=embedding,
        voice=_voice_config(voice, voice_student, voice_layer_means, voice_speech_lookback_ms),
        whisper=whisper,
    )


def _voice_config(
    voice: bool, student: Path | None, layer_means: tuple[int, ...], speech_lookback_ms: float
) -> VoiceConfig | None:
    if not voice:
        if speech_lookback_ms:
            raise ConfigError(
                f"--voice-speech-lookback-ms {speech_lookback_ms:g} needs --voice-encoder "
                "(it picks what the encoder hears)"
            )
        return None
    if student is None:
        return VoiceConfig(layer_means=layer_means, speech_lookback_ms=speech_lookback_ms)
    base = student_voice_config(student)  # the student's own layer means, from its JSON
    if layer_means and layer_means != base.layer_means:
        raise ConfigError(
            f"--voice-layer-means {','.join(map(str, layer_means))} with the student {student}, which reproduces "
            f"the layer means {list(base.layer_means) or 'of no layer'}; drop --voice-layer-means (a student's "
            "layers come with it) or distil a student with --layer-means"
        )
    return dataclasses.replace(base, speech_lookback_ms=speech_lookback_ms)


def student_voice_config(path: Path) -> VoiceConfig:
    """A voice config running the student ``path``: recorded by name when it lies in the encoder folder
    (a shipped student), else by absolute path (evaluation folds); :class:`ConfigError` if unreadable."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"--voice-student {path}: cannot read it ({exc.strerror}); give a student written by "
            "python -m emostream.train.voice_student"
        ) from exc
    resolved = path.resolve()
    shipped = voice_encoder_dir().resolve()
    name = resolved.name if resolved.parent == shipped else str(resolved)
    meta = _student_meta(path)
    layers = meta.get("layer_means", [])
    if not isinstance(layers, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in layers):
        raise ConfigError(
            f"--voice-student: {path.with_suffix('.json')} gives layer_means {layers!r}; expected a list of LSTM "
            "layer numbers such as [2, 3]; re-run the distillation"
        )
    return VoiceConfig(
        student_file=name,
        student_sha256=sha256_hex(content),
        student_input=str(meta.get("input", "log_mel")),
        layer_means=tuple(layers),
    )


def _student_meta(path: Path) -> dict[str, Any]:
    """The FILE.json the distillation wrote beside the student ``path`` (what it reads, which layer means it
    reproduces); {} when there is none (v6's student predates both keys: ``log_mel``, no layer means);
    :class:`ConfigError` if that JSON is unreadable."""
    meta_path = path.with_suffix(".json")
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--voice-student: cannot read {meta_path} ({exc}); re-run the distillation") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"--voice-student: {meta_path} is not a JSON object; re-run the distillation")
    return meta


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
    song: Path | None = None  # RAVDESS song folder added to the training data (None = speech only)
    calibration: CalibrationSpec | None = None  # speaker-calibrated training (None = off)
    corpora: dict[str, Path] = field(default_factory=dict)  # further corpora (name -> folder), e.g. nemo, ased
    telephone_copy: bool = False  # each training clip's G.711 round trip joins the training data as a copy
    channel: str = "wideband"  # "g711": train and test on every clip's G.711 round trip only (a phone-line model)
    # corpus -> the sentence ids its training (and validation) clips are limited to; test clips keep every sentence
    train_sentences: dict[str, tuple[str, ...]] = field(default_factory=dict)
    loco_voice_students: dict[str, Path] = field(default_factory=dict)  # loco: held-out corpus -> voice student

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stamped into reports and metadata."""
        return {
            "data": str(self.data),
            "song": None if self.song is None else str(self.song),
            "corpora": {name: str(path) for name, path in self.corpora.items()},
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "train": self.train.to_dict(),
            "features": self.features.to_dict(),
            "vad": self.vad.to_dict(),
            "augment": self.augment.to_dict(),
            "g711_available": g711_available(),
            "max_folds": self.max_folds,
            "telephone_copy": self.telephone_copy,
            "channel": self.channel,
            **(
                {"train_sentences": {k: list(v) for k, v in self.train_sentences.items()}}
                if self.train_sentences
                else {}
            ),
            **(
                {"loco_voice_students": {k: str(v) for k, v in self.loco_voice_students.items()}}
                if self.loco_voice_students
                else {}
            ),
        }


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    )


def load_windows(spec: RunSpec, progress: Progress, channel: str = "wideband") -> WindowSet:
    """Windows of every clip (augmented copies unless ``channel="g711"``), from the cache when possible.

    RAVDESS speech clips first, then the song clips when ``spec.song`` is set, then each of
    ``spec.corpora``; each set is extracted and cached on its own (its file list is part of
    the cache key), so runs on different combinations of corpora share their caches.
    """
    parts: list[tuple[str, list[Clip]]] = [("ravdess speech", list(list_clips(spec.data)))]
    if spec.song is not None:
        parts.append(("ravdess song", list(list_song_clips(spec.song))))
    for name, folder in spec.corpora.items():
        parts.append((name, get_corpus(name).list_clips(folder)))
    aug = spec.augment if channel == "wideband" else AugmentConfig()
    sets = []
    for what, clips in parts:
        task = progress.add_task(f"{what} features ({channel}, {aug.copies} aug. copies)", total=len(clips))
        sets.append(
            build_windows(
                clips,
                spec.features,
                spec.vad,
                aug=aug,
                channel="g711" if channel == "g711" else "wideband",
                cache_dir=spec.cache_dir,
                workers=spec.workers,
                progress=functools.partial(_advance, progress, task),
            )
        )
        progress.update(task, completed=len(clips))
    return concat_windows(sets)


def with_copy(wset: WindowSet, other: WindowSet) -> WindowSet:
    """``wset`` with ``other``'s windows (the same clips, e.g. their G.711 round trip) as one more augmented copy.

    Training draws every copy (calibrated with the same copy of the speaker's other clips, as
    the runtime calibrates on what it hears); testing reads copy 0 only, so figures are unchanged.
    """
    if [c.path for c in wset.clips] != [c.path for c in other.clips]:
        raise DatasetError("the telephone copy's clips differ from the training clips; clear the feature cache")
    first = int(wset.copy.max()) + 1 if len(wset.copy) else 0
    return WindowSet(
        wset.clips,
        np.concatenate([wset.features, other.features]),
        np.concatenate([wset.is_speech, other.is_speech]),
        np.concatenate([wset.clip_index, other.clip_index]),
        np.concatenate([wset.copy, other.copy + first]).astype(np.int32),
    )


def _advance(progress: Progress, task: TaskID, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)


def evaluate(
    spec: RunSpec, protocol: str, out: Path, save_fold_models: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Run ``protocol`` (one of :data:`ALL_PROTOCOLS` or "all"); write reports to ``out``.

    With ``spec.calibration`` the EmoBox folds train speaker-calibrated models and
    ``emobox`` / ``emobox_calibrated`` are one run writing both reports (``emobox`` = the
    same models with no speech heard). ``random_speech_song`` needs ``spec.song``.
    """
    chosen = PROTOCOLS if protocol == "all" else (protocol,)
    if spec.calibration is not None:
        chosen = tuple(dict.fromkeys("emobox_calibrated" if p == "emobox" else p for p in chosen))
    if "emobox_calibrated" in chosen and spec.calibration is None:
        raise ConfigError("--protocol emobox_calibrated needs a calibrated model: add --calibration-prior N0 (e.g. 20)")
    if "random_speech_song" in chosen and spec.song is None:
        raise ConfigError(
            "--protocol random_speech_song needs the song clips: add --song DIR (e.g. ../shared/datasets/"
            "ravdess-song-16k) or set EMOSTREAM_RAVDESS_SONG"
        )
    if "loco" in chosen and spec.calibration is None:
        raise ConfigError(
            "--protocol loco needs a calibrated model (its figures are raw and calibrated): add "
            "--calibration-prior N0 (e.g. 20)"
        )
    if "loco" in chosen and not spec.corpora:
        raise ConfigError(
            "--protocol loco needs the other corpora: add --corpus nemo=DIR --corpus ased=DIR "
            "(e.g. ../shared/datasets/nemo-16k, ../shared/datasets/ased-16k)"
        )
    if spec.calibration is not None and "emobox_speaker_adaptive" in chosen:
        raise ConfigError("emobox_speaker_adaptive is for uncalibrated models; drop --calibration-prior for it")
    results: dict[str, dict[str, Any]] = {}
    with _progress() as progress:
        if spec.loco_voice_students and "loco" in chosen:
            results.update(_loco_with_students(spec, out, save_fold_models, progress))
            chosen = tuple(p for p in chosen if p != "loco")
        if not chosen:
            return results
        wset, g711 = _load_sets(spec, progress, chosen)
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


def _load_sets(spec: RunSpec, progress: Progress, chosen: tuple[str, ...]) -> tuple[WindowSet, WindowSet | None]:
    """The windows of ``spec`` (with their G.711 copy when ``spec.telephone_copy``) and the G.711 set the
    ``chosen`` protocols test on (None when none does).

    With ``spec.channel == "g711"`` (a phone-line model) the set is every clip's G.711 round trip and
    there is no separate G.711 set: the headline figures are already the phone line's.
    """
    if spec.channel == "g711":
        return load_windows(spec, progress, "g711"), None
    wset = load_windows(spec, progress)
    progress.console.print(describe_clips(wset.clips))
    uses_g711 = spec.telephone_copy or (spec.g711 and any(p in ("emobox", "emobox_calibrated", "loco") for p in chosen))
    g711 = load_windows(spec, progress, "g711") if uses_g711 else None
    if spec.telephone_copy and g711 is not None:
        wset = with_copy(wset, g711)
    return wset, g711


def _loco_with_students(
    spec: RunSpec, out: Path, save_fold_models: Path | None, progress: Progress
) -> dict[str, dict[str, Any]]:
    """``loco`` where each fold's voice encoder is a student that never heard its held-out corpus.

    Each fold extracts (or loads from the cache) every corpus's windows with its own student, so
    neither the emotion head nor the student of a fold has seen the held-out corpus.
    """
    present = [name for name in LOCO_CORPORA if name == "ravdess" or name in spec.corpora]
    missing = [name for name in present if name not in spec.loco_voice_students]
    if missing or spec.features.voice is None:
        raise ConfigError(
            f"--loco-voice-student is given for {', '.join(spec.loco_voice_students) or 'no corpus'}; loco holds out "
            f"{', '.join(present)}: give one student per held-out corpus (NAME=FILE), with --voice-encoder"
        )
    results: list[SplitResult] = []
    fold_wset: WindowSet | None = None
    for name in present:
        voice = student_voice_config(spec.loco_voice_students[name])
        fold_spec = dataclasses.replace(spec, features=dataclasses.replace(spec.features, voice=voice))
        fold_wset, g711 = _load_sets(fold_spec, progress, ("loco",))
        results += _run_splits(
            spec=fold_spec,
            proto="loco",
            wset=fold_wset,
            g711=g711,
            save_fold_models=save_fold_models,
            progress=progress,
            only=name,
        )
        progress.console.print(f"loco {name}: voice student {voice.student_file} (sha256 {voice.student_sha256})")
    if fold_wset is None:
        raise ConfigError("loco needs the other corpora: add --corpus nemo=DIR --corpus ased=DIR")
    return _write_loco(spec, fold_wset, results, out)


def _splits(spec: RunSpec, proto: str, wset: WindowSet) -> list[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    if proto == "random":
        return [("random", ravdess_random_split(wset, seed=42, speech_only=True))]
    if proto == "random_speech_song":
        return [("random", ravdess_random_split(wset, seed=42, speech_only=False))]
    if proto == "loco":
        present = {c.corpus for c in wset.clips}
        return [(name, loco_split(wset, name, spec.train.seed)) for name in LOCO_CORPORA if name in present]
    folds = load_folds(folds_file(spec.data))
    chosen = list(folds.items())[: spec.max_folds or None]
    return [(str(k), emobox_split(wset, actors, spec.train.seed + k)) for k, actors in chosen]


def trainable_clips(wset: WindowSet, train_sentences: dict[str, tuple[str, ...]]) -> np.ndarray:
    """Clips that may train or validate, (n_clips,) bool: those of a corpus in ``train_sentences`` only if
    their sentence id is listed (e.g. ASED's two sentences spoken in every emotion); every other clip.

    :class:`ConfigError` when a listed corpus has no clip or none of its clips has a listed sentence."""
    allowed = np.ones(len(wset.clips), dtype=bool)
    for corpus, sentences in train_sentences.items():
        mine = np.array([c.corpus == corpus for c in wset.clips], dtype=bool)
        if not mine.any():
            raise ConfigError(
                f"--train-sentences {corpus}=...: no clip of {corpus!r} in the data; add it with --corpus {corpus}=DIR"
            )
        keep = np.array([c.sentence in sentences for c in wset.clips], dtype=bool)
        if not (keep & mine).any():
            found = sorted({c.sentence for c, m in zip(wset.clips, mine, strict=True) if m})
            raise ConfigError(
                f"--train-sentences {corpus}={','.join(sentences)}: no clip of {corpus!r} has these sentence ids; "
                f"its sentence ids are {', '.join(found)}"
            )
        allowed &= ~mine | keep
    return allowed


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
    split_results = _run_splits(
        spec=spec, proto=proto, wset=wset, g711=g711, save_fold_models=save_fold_models, progress=progress
    )
    if proto == "loco":
        return _write_loco(spec, wset, split_results, out)
    if spec.calibration is not None:
        return _write_calibrated(spec, proto, wset, split_results, out)
    return _write_protocol(spec, proto, wset, split_results, out)


def _run_splits(
    *,
    spec: RunSpec,
    proto: str,
    wset: WindowSet,
    g711: WindowSet | None,
    save_fold_models: Path | None,
    progress: Progress,
    only: str | None = None,
) -> list[SplitResult]:
    """Train and score each split of ``proto`` (only the one named ``only`` when given)."""
    adaptive = proto == "emobox_speaker_adaptive"
    features = speaker_normalise(wset) if adaptive else None
    allowed = trainable_clips(wset, spec.train_sentences)
    splits = [
        (n, (tr & allowed, va & allowed, te))
        for n, (tr, va, te) in _splits(spec, proto, wset)
        if only is None or n == only
    ]
    task = progress.add_task(f"{proto}: splits", total=len(splits))
    epoch_task = progress.add_task("epochs", total=spec.train.epochs)
    split_results: list[SplitResult] = []
    for name, (tr, va, te) in splits:
        started = time.monotonic()
        progress.reset(epoch_task, total=spec.train.epochs, description=f"{proto} split {name}: epochs")
        if spec.calibration is not None:
            res = run_calibrated_split(
                wset,
                tr,
                va,
                te,
                spec.train,
                calib=spec.calibration,
                fold=name,
                g711=g711 if proto != "random_speech_song" else None,
                on_epoch=lambda e, logs: progress.update(epoch_task, completed=e + 1),
                export_dir=save_fold_models if proto in ("emobox_calibrated", "loco") else None,
                feature_cfg=spec.features,
                vad_cfg=spec.vad,
            )
        else:
            res = run_split(
                wset,
                tr,
                va,
                te,
                spec.train,
                fold=name,
                g711=None if adaptive or proto == "random_speech_song" else g711,
                features=features,
                on_epoch=lambda e, logs: progress.update(epoch_task, completed=e + 1),
                export_dir=save_fold_models if proto == "emobox" else None,
                feature_cfg=spec.features,
                vad_cfg=spec.vad,
            )
        res.seconds = time.monotonic() - started
        split_results.append(res)
        figs = res.figures["int8"]
        uncal = f"; no calibration UA {res.figures['int8_0s']['ua']:.3f}" if "int8_0s" in res.figures else ""
        progress.console.print(
            f"{proto} split {name} (test actors {res.test_actors}): int8 UA {figs['ua']:.3f} WA {figs['wa']:.3f} "
            f"F1 {figs['macro_f1']:.3f}{uncal}; float UA {res.figures['float']['ua']:.3f}; best epoch "
            f"{res.best_epoch}; validation-actor UA {res.figures['validation']['ua']:.3f}; {res.seconds:.0f} s"
        )
        progress.advance(task)
    return split_results


LOCO_NOTE = (
    "leave one corpus out: for each corpus, a speaker-calibrated model trained on the other corpora (validation "
    "speakers from those) is tested on every speech clip of it. ua4: angry, happy, sad, neutral (calm counts as "
    "neutral), prediction = the most probable of neutral+calm, happy, sad, angry; arousal_ua: high (angry, happy, "
    "fearful, surprised) vs low (neutral, calm, sad); corpus_ua: UA over the labels the corpus has, prediction "
    "restricted to them. No suffix: raw (no speech of the test speaker heard); _calibrated: after {seconds:g} s of "
    "the speaker's other speech (random order); _g711: the test clips through a G.711 mu-law round trip"
)


def loco_note(spec: RunSpec) -> str:
    """The loco report's note; a phone-line model's (``--channel g711``) says its figures are all the phone line's."""
    seconds = spec.calibration.eval_seconds if spec.calibration is not None else 60.0
    note = LOCO_NOTE.format(seconds=seconds)
    if spec.channel == "g711":
        note = (
            "A phone-line model (--channel g711): trained, validated and tested on every clip's G.711 mu-law round "
            "trip, so the figures without suffix are the phone line's. " + note
        )
    return note


def _write_loco(
    spec: RunSpec, wset: WindowSet, split_results: list[SplitResult], out: Path
) -> dict[str, dict[str, Any]]:
    """``metrics_loco.json`` (``mean`` over the held-out corpora, ``corpora`` per corpus) and a markdown table."""
    calib = spec.calibration
    assert calib is not None
    per: dict[str, dict[str, Any]] = {}
    for r in split_results:
        y = wset.labels[r.test_clips]
        mask = corpus_of(wset.clips[int(r.test_clips[0])]).label_mask
        per[r.fold] = {
            **loco.corpus_figures(r.extra["probs"], y, mask),
            "clips": len(r.test_clips),
            "speakers": len(r.test_actors),
            "validation_speakers": r.extra.get("validation_actors"),
            "training_windows": r.extra.get("training_windows"),
            "best_epoch": r.best_epoch,
            "seconds": round(r.seconds, 1),
        }
    mean = loco.mean_figures([{k: v for k, v in f.items() if isinstance(v, float)} for f in per.values()])
    extra = {
        "corpora": per,
        "uncertain": _uncertain_summary(split_results, ("int8", "int8_0s")),
        "note": loco_note(spec),
        "arousal_note": AROUSAL_NOTE,
        "model": "int8 TFLite",
        "family": spec.train.family,
    }
    write_metrics(out, "loco", {"mean": mean, "folds": []}, extra, spec.to_dict())
    lines = [
        "# Leave one corpus out (`loco`)",
        "",
        "| held-out corpus | ua4 raw | ua4 calibrated | arousal raw | arousal calibrated | ua4 G.711 raw | "
        "ua4 G.711 calibrated | corpus UA raw | corpus UA calibrated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = (
        "ua4",
        "ua4_calibrated",
        "arousal_ua",
        "arousal_ua_calibrated",
        "ua4_g711",
        "ua4_g711_calibrated",
        "corpus_ua",
        "corpus_ua_calibrated",
    )
    for name, figs in [*per.items(), ("**mean**", mean)]:
        cells = " | ".join(f"{figs[k]:.3f}" if k in figs else "-" for k in keys)
        lines.append(f"| {name} | {cells} |")
    lines += ["", loco_note(spec), ""]
    (out / "loco.md").write_text("\n".join(lines), encoding="utf-8")
    return {"loco": {"protocol": "loco", "mean": mean, "folds": [], **extra}}


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
            if all("arousal" in r.extra for r in split_results):
                summary["mean"]["arousal_ua"] = _mean(r.extra["arousal"]["int8"] for r in split_results)
                extra["arousal_note"] = AROUSAL_NOTE
                extra["uncertain"] = _uncertain_summary(split_results, ("int8",))
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


def _mean(values: Any) -> float:
    vals = [float(v) for v in values]
    return float(np.nanmean(vals)) if vals else float("nan")


def _uncertain_summary(results: list[SplitResult], variants: tuple[str, ...]) -> dict[str, Any]:
    """The uncertainty rule, the per-split thresholds (and their median) and the test figures per variant."""
    chosen = [r.extra["uncertain"]["chosen"] for r in results]

    def median(key: str) -> float | None:
        values = [c[key] for c in chosen if c.get(key) is not None]
        return float(np.median(values)) if values else None

    columns = {c.get("population_columns") for c in chosen}
    out: dict[str, Any] = {
        "rule": UNCERTAIN_RULE,
        "per_split": [{"split": r.fold, **c} for r, c in zip(results, chosen, strict=True)],
        "chosen_median": {
            "min_top_probability": median("min_top_probability"),
            "max_input_rms_z": median("max_input_rms_z"),
            "max_population_rms_z": median("max_population_rms_z"),
            "population_columns": columns.pop() if len(columns) == 1 else None,
        },
    }
    for variant in variants:
        figs = [r.extra["uncertain"][variant] for r in results if variant in r.extra["uncertain"]]
        out[variant] = {
            key: _mean(f[key] for f in figs) for key in ("uncertain_share", "accuracy_certain", "accuracy_all")
        }
    return out


CALIBRATED_NOTE = (
    "speaker-calibrated model: training windows normalised with statistics simulated from the same speaker's other "
    "clips (emostream.train.calibration); test clips normalised with the runtime's blended() statistics of "
    "{seconds:g} s of the test speaker's other speech clips in random emotion order (never the clip itself)"
)


def _write_calibrated(
    spec: RunSpec, proto: str, wset: WindowSet, split_results: list[SplitResult], out: Path
) -> dict[str, dict[str, Any]]:
    """Reports of a calibrated run: the calibrated headline, the curve, and the same models with no calibration."""
    calib = spec.calibration
    assert calib is not None
    config = spec.to_dict()
    eval_name = f"int8_{calib.eval_seconds:g}s"
    curve_names = {f"{s:g}": f"int8_{s:g}s" for s in calib.curve_seconds}
    one_name = f"one_emotion_{calib.eval_seconds:g}s"
    if proto == "emobox_calibrated":
        reports = {"emobox_calibrated": "int8", "emobox": "int8_0s"}
        if all("g711" in r.figures for r in split_results):
            reports["emobox_g711"] = "g711"
    else:
        reports = {proto: "int8"}
    written: dict[str, dict[str, Any]] = {}
    common: dict[str, Any] = {
        "model": "int8 TFLite",
        "family": spec.train.family,
        "arousal_note": AROUSAL_NOTE,
        "epochs": [{"split": r.fold, "run": r.epochs, "best": r.best_epoch} for r in split_results],
        "seconds_per_split": [round(r.seconds, 1) for r in split_results],
        "training_windows": [r.extra.get("training_windows") for r in split_results],
    }
    for name, variant in reports.items():
        summary = summarise(split_results, variant)
        mean = summary["mean"]
        mean["arousal_ua"] = _mean(r.extra["arousal"][variant] for r in split_results)
        extra = dict(common)
        if variant == "int8":
            mean["curve"] = {sec: summarise(split_results, v)["mean"]["ua"] for sec, v in curve_names.items()}
            mean["one_emotion_ua"] = summarise(split_results, one_name)["mean"]["ua"]
            extra["curve_note"] = (
                "UA after T s of the test speaker's other speech (random emotion order; 0 = population "
                f"normalisation); one_emotion_ua: {calib.eval_seconds:g} s of clips of one random emotion only"
            )
            extra["curve_arousal_ua"] = {
                sec: _mean(r.extra["arousal"][v] for r in split_results) for sec, v in curve_names.items()
            }
            extra["curve_folds"] = {sec: [r.figures[v]["ua"] for r in split_results] for sec, v in curve_names.items()}
            extra["note"] = CALIBRATED_NOTE.format(seconds=calib.eval_seconds)
            float_summary = summarise(split_results, "float")
            extra["float"] = float_summary
            extra["validation"] = summarise(split_results, "validation")["mean"]
            extra["int8_vs_float"] = {
                "top1_agreement_windows": _mean(r.agreement for r in split_results),
                "mean_abs_dp_windows": _mean(r.mean_abs_dp for r in split_results),
                "ua_difference_int8_minus_float": mean["ua"] - float_summary["mean"]["ua"],
            }
            extra["uncertain"] = _uncertain_summary(split_results, (eval_name, "int8_0s", one_name))
            no_cal = summarise(split_results, "int8_0s")["mean"]
            mean["no_calibration"] = {k: no_cal[k] for k in ("ua", "wa", "macro_f1")}
        elif variant == "int8_0s":
            extra["note"] = (
                "no calibration: the same speaker-calibrated fold models with no speech of the test speaker heard "
                "(population normalisation), as the runtime reads before it has heard a speaker or with "
                "[calibration] enabled = false"
            )
            extra["uncertain"] = _uncertain_summary(split_results, ("int8_0s",))
        else:
            extra["note"] = (
                f"G.711 round trip of the test clips; calibrated with {calib.eval_seconds:g} s of the speaker's other "
                "G.711 clips; no_calibration_ua: the same with no speech heard"
            )
            mean["no_calibration_ua"] = summarise(split_results, "g711_0s")["mean"]["ua"]
        write_metrics(out, name, summary, extra, config)
        matrix = confusion(split_results, wset.labels, variant)
        write_class_table(out, name, matrix, config)
        write_confusion_png(out, name, matrix, f"{spec.train.family} {name}: UA {mean['ua']:.3f}, WA {mean['wa']:.3f}")
        written[name] = {"protocol": name, **summary, **extra}
    return written


def train_final(
    spec: RunSpec,
    out_dir: Path,
    name: str,
    metrics_dir: Path | None = None,
    float_copy: bool = False,
    *,
    reading: ReadingConfig | None = None,
) -> dict[str, Any]:
    """Train on every clip for ``spec.train.epochs`` epochs (no early stopping); export int8 + metadata.

    With ``spec.calibration`` the training inputs are speaker-calibrated (as in the
    evaluation) and the metadata gets the ``calibration`` section. ``reading``: the
    metadata's ``reading`` section; default: the uncertainty thresholds chosen in the
    evaluation reports of ``metrics_dir`` (median over the folds), else the runtime defaults.
    """
    started = time.monotonic()
    with _progress() as progress:
        wset = load_windows(spec, progress, spec.channel)
        if len(wset.clips) < 16:
            raise DatasetError(f"only {len(wset.clips)} clips found in {spec.data}; training needs the full set")
        if spec.telephone_copy:
            wset = with_copy(wset, load_windows(spec, progress, "g711"))
        allowed = trainable_clips(wset, spec.train_sentences)
        keep = np.flatnonzero(wset.is_speech & allowed[wset.clip_index])
        epoch_task = progress.add_task("training epochs", total=spec.train.epochs)
        on_epoch = lambda e, logs: progress.update(epoch_task, completed=e + 1)  # noqa: E731
        calib = spec.calibration
        if calib is None:
            x_rep = wset.features[keep]
            fitted = fit(
                x_rep, wset.window_labels[keep], 8, spec.train, on_epoch=on_epoch, **training_extras(wset, keep)
            )
        else:
            pool = SpeakerPool(wset)
            pop = population(wset.features[keep])
            copies = tuple(range(int(wset.copy.max()) + 1))
            rng = np.random.default_rng([spec.train.seed, 1])
            x_rep, idx = make_calibrated(pool, np.flatnonzero(allowed), calib, rng, pop=pop, copies=copies)
            fitted = fit(
                x_rep,
                wset.window_labels[idx],
                8,
                spec.train,
                on_epoch=on_epoch,
                population=pop,
                **training_extras(wset, idx),
            )
    seconds = time.monotonic() - started
    import tensorflow as tf  # noqa: PLC0415

    song = int(sum(c.vocal_channel == 2 for c in wset.clips))
    training = {
        "dataset": "; ".join(f"{get_corpus(n).title} ({get_corpus(n).licence})" for n in dict.fromkeys(wset.corpora)),
        "corpora": _corpora_summary(wset),
        "license": "CC BY-NC-SA 4.0"
        if all(get_corpus(n).licence == "CC BY-NC-SA 4.0" for n in set(wset.corpora))
        else "CC BY-NC-SA 4.0 (RAVDESS, nEMO); ASED states no licence: see the training corpora",
        "clips": int(allowed.sum()),
        "clips_speech": int(allowed.sum()) - song,
        "clips_song": song,
        "speakers": len({int(a) for a in wset.actors}),
        "windows": len(keep),
        "training_inputs": len(x_rep),
        "augmentation": spec.augment.to_dict(),
        "telephone_copy": spec.telephone_copy,
        "channel": spec.channel,
        "g711_in_augmentation": spec.telephone_copy
        or spec.channel == "g711"
        or (spec.augment.copies > 0 and spec.augment.telephone_prob > 0),
        "calibration": None if calib is None else calib.to_dict(),
        "epochs": fitted.epochs_run,
        "seed": spec.train.seed,
        "seconds": round(seconds, 1),
        "tf_version": tf.__version__,
        "config": spec.to_dict(),
    }
    metrics = _collect_metrics(metrics_dir)
    if reading is None:
        reading = _reading_from_metrics(metrics_dir)
    rep = representative_sample(x_rep, 1000, spec.train.seed)
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
        representative_normalised=calib is not None,
        calibration=None if calib is None else calib.metadata(),
        reading=reading.to_dict(),
    )
    sample = representative_sample(x_rep, 1000, 7)
    check = _fixture_check(int8, flt, sample if calib is not None else fitted.prepare(sample))
    data = json.loads((out_dir / f"{name}.json").read_text(encoding="utf-8"))
    data["metrics"]["int8_vs_float_training_windows"] = check
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return {"name": name, "seconds": seconds, "size_bytes": len(int8), "float_bytes": len(flt), **check}


def _corpora_summary(wset: WindowSet) -> dict[str, dict[str, Any]]:
    """Per training corpus: licence, source, clips, speakers and clips per label."""
    out: dict[str, dict[str, Any]] = {}
    names = wset.corpora
    for name in dict.fromkeys(names):
        corpus = get_corpus(name)
        rows = np.flatnonzero(names == name)
        labels = wset.labels[rows]
        out[name] = {
            "title": corpus.title,
            "licence": corpus.licence,
            "source": corpus.source,
            "clips": len(rows),
            "speakers": len({int(a) for a in wset.actors[rows]}),
            "labels": {e: int(np.sum(labels == i)) for i, e in enumerate(EMOTIONS) if np.any(labels == i)},
        }
    return out


def _reading_from_metrics(metrics_dir: Path | None) -> ReadingConfig:
    """Uncertainty thresholds chosen in the evaluation (median over the splits), else the defaults.

    ``loco`` first: its thresholds were chosen on validation speakers of several corpora.
    """
    if metrics_dir is None:
        return ReadingConfig()
    for proto in ("loco", "emobox_calibrated", "emobox"):
        path = metrics_dir / f"metrics_{proto}.json"
        if path.is_file():
            chosen = json.loads(path.read_text(encoding="utf-8")).get("uncertain", {}).get("chosen_median")
            if chosen:
                return reading_config(chosen)
    return ReadingConfig()


def _collect_metrics(metrics_dir: Path | None) -> dict[str, Any]:
    if metrics_dir is None:
        return {}
    out: dict[str, Any] = {}
    for path in sorted(metrics_dir.glob("metrics_*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        keep = {
            k: data[k]
            for k in ("mean", "folds", "float", "int8_vs_float", "uncertain", "note", "commit", "date")
            if k in data
        }
        out[data["protocol"]] = keep
    return out


def _fixture_check(int8: bytes, flt: bytes, x: Any) -> dict[str, float]:
    """int8 vs float TFLite on a fixed sample of (up to) 1000 normalised training inputs: top-1 agreement, mean |Δp|."""
    n = len(EMOTIONS)  # the labels' columns (an arousal output after them is not compared here)
    p8, pf = run_tflite(int8, x)[:, :n], run_tflite(flt, x)[:, :n]
    return {
        "top1_agreement": float(np.mean(p8.argmax(1) == pf.argmax(1))),
        "mean_abs_dp": float(np.mean(np.abs(p8 - pf))),
    }


def replace_train(spec: RunSpec, **changes: Any) -> RunSpec:
    """A copy of ``spec`` with TrainConfig fields changed."""
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, **changes))
