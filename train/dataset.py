"""Training examples = the streamer's own windows of each clip, cached on disk.

:func:`build_windows` runs :func:`emostream.frontend.windowing.extract_windows` on every clip
(and on its augmented copies), in parallel over ``workers`` processes, and stores the
result under ``cache_dir`` keyed by a hash of the whole feature config (the speech
embedding's settings and file digests included, and the digests of the embedding files on disk,
so fused and plain windows, or float and int8 embeddings, never mix),
VAD config, augmentation settings, channel and file list, so experiments do not re-extract.
A clip's score is the mean of its speech windows' probabilities (:func:`clip_scores`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from emostream.apps.threads import bound_math_threads
from emostream.audio.files import load_mono
from emostream.frontend.embedding import MEL_MODEL_FILE, EmbeddingConfig, speech_embedding_dir
from emostream.frontend.features import FeatureConfig
from emostream.frontend.vad import VadConfig
from emostream.frontend.windowing import WindowExtractor
from emostream.inference.metadata import EMOTIONS
from emostream.train.augment import (
    AugmentConfig,
    augment,
    augment_config_from_dict,
    babble_picks,
    clip_rng,
    telephone,
)
from emostream.train.corpora import Clip, corpus_of

Channel = Literal["wideband", "g711"]
CACHE_VERSION = 1
Job = tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], str, list[list[str]]]
"""One clip's extraction: path, feature / VAD / augmentation dicts, channel, babble paths per copy."""
IntArray = npt.NDArray[np.int32]


@dataclass
class WindowSet:
    """All windows of a list of clips.

    ``features`` (n_windows, *input_shape) float32; ``is_speech`` (n_windows,) bool;
    ``clip_index`` (n_windows,) int32 into ``clips``; ``copy`` (n_windows,) int32 —
    0 for the clip itself, k >= 1 for its k-th augmented copy.
    """

    clips: list[Clip]
    features: npt.NDArray[np.float32]
    is_speech: npt.NDArray[np.bool_]
    clip_index: IntArray
    copy: IntArray

    @property
    def labels(self) -> IntArray:
        """Class index of each clip, shape (n_clips,)."""
        return np.array([c.label for c in self.clips], dtype=np.int32)

    @property
    def actors(self) -> IntArray:
        """Actor of each clip, shape (n_clips,)."""
        return np.array([c.actor for c in self.clips], dtype=np.int32)

    @property
    def corpora(self) -> npt.NDArray[np.str_]:
        """Corpus name of each clip, shape (n_clips,) (RAVDESS song: "ravdess_song")."""
        return np.array([corpus_of(c).name for c in self.clips])

    @property
    def label_masks(self) -> npt.NDArray[np.float32]:
        """Per clip, 1.0 for each of the eight labels its corpus has, else 0.0; shape (n_clips, 8) float32."""
        out = np.zeros((len(self.clips), len(EMOTIONS)), dtype=np.float32)
        for i, clip in enumerate(self.clips):
            out[i] = corpus_of(clip).label_mask
        return out

    @property
    def window_labels(self) -> IntArray:
        """Class index of each window, shape (n_windows,)."""
        return self.labels[self.clip_index]

    def windows_of(self, clip_mask: npt.NDArray[np.bool_], copies: bool) -> npt.NDArray[np.intp]:
        """Indices of the windows of the clips in ``clip_mask``; with ``copies`` their augmented copies too."""
        keep = clip_mask[self.clip_index]
        if not copies:
            keep &= self.copy == 0
        return np.flatnonzero(keep)


def embedding_file_digests(config: EmbeddingConfig) -> dict[str, str]:
    """sha256 of the speech-embedding files ``config`` runs, as found on disk: ``{file name: digest}``.

    Part of the cache key of fused windows besides the digests the config expects: a cache made with
    one embedding file (float or int8, or another build of either) is never served for another,
    even before the extraction's own digest check would run.
    """
    folder = speech_embedding_dir()
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in (MEL_MODEL_FILE, config.embedding_model_file)
    }


def cache_key(
    clips: Sequence[Clip], feature_cfg: FeatureConfig, vad_cfg: VadConfig, aug: AugmentConfig, channel: Channel
) -> str:
    """Hex digest naming one extraction: configs, augmentation, channel and the file list (names and sizes)."""
    files = [(c.path.parent.name + "/" + c.path.name, c.path.stat().st_size) for c in clips]
    payload: dict[str, Any] = {
        "version": CACHE_VERSION,
        "features": feature_cfg.to_dict(),
        "vad": vad_cfg.to_dict(),
        "augment": aug.key_dict(),
        "channel": channel,
        "files": files,
    }
    if feature_cfg.embedding is not None:
        payload["embedding_files"] = embedding_file_digests(feature_cfg.embedding)
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def clip_audio(path: str, rate_hz: int, channel: str) -> npt.NDArray[np.float32]:
    """A clip's mono samples at ``rate_hz``, through the telephone channel (G.711 mu-law) when ``channel="g711"``."""
    audio = load_mono(path, rate_hz)
    return telephone(audio, rate_hz, law="mulaw") if channel == "g711" else audio


def clip_signals(
    path: str, rate_hz: int, aug: AugmentConfig, channel: str, babble: Sequence[Sequence[str]]
) -> list[npt.NDArray[np.float32]]:
    """A clip's samples (through the telephone channel when ``channel="g711"``), then each of its ``aug.copies``
    augmented copies (deterministic: the seed, the clip's file name and the copy number); ``babble``: per copy,
    the paths of the other speakers' clips whose voices make its babble (:func:`babble_paths`)."""
    audio = clip_audio(path, rate_hz, channel)
    key = Path(path).name
    signals = [audio]
    for k in range(1, aug.copies + 1):
        talkers = [load_mono(p, rate_hz) for p in babble[k - 1]] if babble else []
        signals.append(augment(audio, rate_hz, aug, clip_rng(aug, key, k), talkers))
    return signals


def babble_paths(clips: Sequence[Clip], aug: AugmentConfig) -> list[list[list[str]]]:
    """Per clip and augmented copy, the paths of the clips whose voices make its babble (none without babble)."""
    wants_babble = aug.copies > 0 and aug.noise_prob > 0 and aug.babble_share > 0
    picks = babble_picks([c.speaker for c in clips], aug) if wants_babble else [[] for _ in clips]
    return [[[str(clips[j].path) for j in copy] for copy in mine] for mine in picks]


def _extract_job(job: Job) -> list[tuple[Any, Any]]:
    """Worker: the (features, is_speech) arrays of one clip and of each of its augmented copies."""
    path, fdict, vdict, adict, channel, babble = job
    fcfg = FeatureConfig.from_dict(fdict)
    vcfg = VadConfig.from_dict(vdict)
    signals = clip_signals(path, fcfg.sample_rate_hz, augment_config_from_dict(adict), channel, babble)
    extractor = _extractor(fcfg, vcfg)
    out = []
    for sig in signals:
        extractor.reset()  # a fresh stream: the windows of extract_windows(sig, fcfg, vcfg)
        windows = extractor.process(sig) + extractor.flush()
        out.append(
            (np.stack([w.features for w in windows]).astype(np.float32), np.array([w.is_speech for w in windows]))
        )
    return out


@functools.lru_cache(maxsize=2)
def _extractor(feature_cfg: FeatureConfig, vad_cfg: VadConfig) -> WindowExtractor:
    """One extractor per worker process and config, reset per signal (a speech embedder costs ~20 ms to load)."""
    return WindowExtractor(feature_cfg, vad_cfg)


def build_windows(
    clips: Sequence[Clip],
    feature_cfg: FeatureConfig,
    vad_cfg: VadConfig,
    *,
    aug: AugmentConfig | None = None,
    channel: Channel = "wideband",
    cache_dir: Path | None = Path("cache"),
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> WindowSet:
    """Extract (or load from cache) the windows of ``clips``; see :class:`WindowSet`.

    ``channel="g711"`` passes every clip through the telephone channel (300–3400 Hz,
    8 kHz, μ-law) first. ``progress(done, total)`` is called as clips finish.
    """
    aug = aug or AugmentConfig()
    clips = list(clips)
    key = cache_key(clips, feature_cfg, vad_cfg, aug, channel)
    cached = None if cache_dir is None else cache_dir / f"windows_{key}.npz"
    if cached is not None and cached.is_file():
        with np.load(cached) as data:
            return WindowSet(clips, data["features"], data["is_speech"], data["clip_index"], data["copy"])
    jobs: list[Job] = [
        (str(c.path), feature_cfg.to_dict(), vad_cfg.to_dict(), aug.to_dict(), channel, babble)
        for c, babble in zip(clips, babble_paths(clips, aug), strict=True)
    ]
    results: list[list[tuple[Any, Any]]] = []
    if workers > 1:
        bound_math_threads()  # one BLAS thread per worker (the voice encoder's small products), unless the user set it
        with mp.get_context("spawn").Pool(workers) as pool:
            for res in pool.imap(_extract_job, jobs, chunksize=4):
                results.append(res)
                if progress:
                    progress(len(results), len(jobs))
    else:
        for job in jobs:
            results.append(_extract_job(job))
            if progress:
                progress(len(results), len(jobs))
    wset = _assemble(clips, results)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # one temporary per process: two runs extracting the same windows at once (an evaluation beside a
        # distillation) would otherwise write into one file and could leave a mixed one behind
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, features=wset.features, is_speech=wset.is_speech, clip_index=wset.clip_index, copy=wset.copy)
        tmp.replace(cached)
    return wset


def _assemble(clips: list[Clip], results: list[list[tuple[Any, Any]]]) -> WindowSet:
    feats, speech, index, copy = [], [], [], []
    for i, per_clip in enumerate(results):
        for k, (f, s) in enumerate(per_clip):
            feats.append(f)
            speech.append(s)
            index.append(np.full(len(f), i, dtype=np.int32))
            copy.append(np.full(len(f), k, dtype=np.int32))
    return WindowSet(clips, np.concatenate(feats), np.concatenate(speech), np.concatenate(index), np.concatenate(copy))


def concat_windows(sets: Sequence[WindowSet]) -> WindowSet:
    """One :class:`WindowSet` of several (clips appended in order, clip indices shifted)."""
    if len(sets) == 1:
        return sets[0]
    clips: list[Clip] = []
    index = []
    for wset in sets:
        index.append(wset.clip_index + len(clips))
        clips.extend(wset.clips)
    return WindowSet(
        clips,
        np.concatenate([w.features for w in sets]),
        np.concatenate([w.is_speech for w in sets]),
        np.concatenate(index).astype(np.int32),
        np.concatenate([w.copy for w in sets]),
    )


def clip_scores(
    window_probs: npt.NDArray[np.float32], is_speech: npt.NDArray[np.bool_], clip_index: IntArray, n_clips: int
) -> npt.NDArray[np.float32]:
    """Clip probabilities: mean over each clip's speech windows (all its windows if none is speech).

    ``window_probs`` (n_windows, n_labels); returns (n_clips, n_labels); clips without windows get NaN.
    """
    n_labels = window_probs.shape[1]
    out = np.full((n_clips, n_labels), np.nan, dtype=np.float32)
    for weights in (np.ones_like(is_speech, dtype=np.float64), is_speech.astype(np.float64)):
        sums = np.zeros((n_clips, n_labels))
        np.add.at(sums, clip_index, window_probs * weights[:, None])
        counts = np.bincount(clip_index, weights=weights, minlength=n_clips)
        has = counts > 0
        out[has] = (sums[has] / counts[has, None]).astype(np.float32)
    return out
