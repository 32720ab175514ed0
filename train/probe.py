"""A quick ceiling probe of the handcrafted features across corpora (scikit-learn; not the product).

``python -m emostream.train.probe --data RAVDESS --corpus nemo=DIR --corpus ased=DIR``

For each of RAVDESS speech, nEMO and ASED in turn (leave one corpus out), a scikit-learn
classifier is trained on the other two and tested on it, on the ``fast`` front-end's 115
summary statistics (the same windows and cache as ``emostream.train``). Every speaker's
speech windows are z-scored with the statistics of *all* their speech windows: an upper
bound of what speaker calibration (60 s at run time) can give. Reported like ``loco``:
4-class UA (angry, happy, sad, neutral; calm counts as neutral) and arousal UA (high:
angry, happy, fearful, surprised; low: neutral, calm, sad), per corpus and mean, for:

* ``lr_clip_4``: logistic regression on clip means, trained on the four classes;
* ``lr_clip_all``: the same trained on every label the training corpora have;
* ``lr_window_all``: logistic regression on windows (clip score = mean window probability);
* ``mlp_window_all``: a 128-unit MLP on windows.

Prints one line per classifier; ``--columns`` drops feature groups (e.g. ``no_chroma``);
``--voice-encoder`` adds the voice encoder's embedding (``voice_only`` / ``no_voice`` pick its part),
``--voice-layer-means 2,3`` the time means of its LSTM layers 2 and 3 (``no_layer_means`` leaves them out);
``--egemaps`` adds openSMILE's eGeMAPS v02 functionals of each whole clip (88 columns, each speaker z-scored, the
same values on every window of the clip; ``egemaps_only`` / ``no_egemaps`` pick its part; needs the ``bench`` extra);
``--whisper DIR`` adds a Whisper encoder's statistics per clip the same way (:mod:`emostream.train.whisper_probe`;
``whisper_only`` / ``no_whisper``).
``--only arousal_classes`` prints, per held-out corpus, the share of each label's clips that a high / low arousal
classifier trained on the other corpora reads as high (which labels a corpus voices against the arousal mapping).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.engine.labels import FOUR
from emostream.engine.reading import ReadingConfig
from emostream.errors import ConfigError
from emostream.frontend.features import summary_feature_names
from emostream.frontend.vad import VadConfig
from emostream.inference.metadata import EMOTIONS
from emostream.train.cli import corpus_folders, voice_layer_means
from emostream.train.corpora import Clip, get
from emostream.train.dataset import build_windows
from emostream.train.loco import MERGED, ua4
from emostream.train.ravdess import list_clips
from emostream.train.reading import HIGH, LOW, arousal_ua
from emostream.train.run import feature_config_for

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
COLUMN_SETS: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "no_chroma": lambda name: not name.startswith("chroma"),
    "no_chroma_no_mfcc_means": lambda name: (
        not name.startswith("chroma") and not (name.startswith("mfcc") and name.endswith("_mean"))
    ),
    "voice_only": lambda name: name.startswith("voice_"),
    "no_voice": lambda name: not name.startswith("voice_"),
    "no_layer_means": lambda name: not name.startswith("voice_l"),
    "egemaps_only": lambda name: name.startswith("egemaps_"),
    "no_egemaps": lambda name: not name.startswith("egemaps_"),
    "whisper_only": lambda name: name.startswith("whisper_"),
    "no_whisper": lambda name: not name.startswith("whisper_"),
}


@dataclass(frozen=True)
class CorpusWindows:
    """One corpus's speech windows, speaker-z-scored: ``x`` (n_windows, n_features) float64,
    ``clip`` (n_windows,) clip index, ``labels`` (n_clips,) EMOTIONS index per clip."""

    x: F64
    clip: I32
    labels: I32


def load(
    clips: Sequence[Clip],
    cache: Path | None,
    workers: int,
    *,
    voice: bool = False,
    layer_means: tuple[int, ...] = (),
    speech_lookback_ms: float = 0.0,
) -> CorpusWindows:
    """Speech windows of ``clips`` on the ``fast`` front-end (``voice``: + the voice encoder, with the time
    means of its ``layer_means`` LSTM layers, on speech only within ``speech_lookback_ms`` when > 0), each
    speaker z-scored with all of theirs."""
    cfg = feature_config_for(
        "resnet_mlp", voice=voice, voice_layer_means=layer_means, voice_speech_lookback_ms=speech_lookback_ms
    )
    wset = build_windows(clips, cfg, VadConfig(), cache_dir=cache, workers=workers)
    keep = wset.is_speech & (wset.copy == 0)
    x = wset.features[keep].astype(np.float64)
    clip = wset.clip_index[keep]
    speaker = np.array([c.speaker for c in clips])[clip]
    for who in np.unique(speaker):
        mine = speaker == who
        x[mine] = (x[mine] - x[mine].mean(axis=0)) / (x[mine].std(axis=0) + 1e-6)
    return CorpusWindows(x, clip.astype(np.int32), np.array([c.label for c in clips], dtype=np.int32))


def egemaps_functionals(clips: Sequence[Clip], cache: Path | None) -> tuple[F64, list[str]]:
    """openSMILE eGeMAPS v02 functionals of each whole clip: ((n_clips, 88) float64, names ``egemaps_*``).

    Cached in ``cache`` under a key of the clips' paths and sizes (about 0.02 s of one core per clip
    second to compute). Raises :class:`ConfigError` when the ``opensmile`` package is not installed.
    """
    import hashlib  # noqa: PLC0415

    import soundfile as sf  # noqa: PLC0415

    key = hashlib.sha256("\n".join(f"{c.path}:{Path(c.path).stat().st_size}" for c in clips).encode()).hexdigest()
    path = None if cache is None else cache / f"egemaps_{key[:20]}.npz"
    if path is not None and path.exists():
        with np.load(path) as stored:
            return stored["x"], [str(n) for n in stored["names"]]
    try:
        import opensmile  # noqa: PLC0415  (bench extra)
    except ImportError as exc:
        raise ConfigError(
            "--egemaps needs the opensmile package, which is not installed; install it with "
            "`pip install -e '.[bench]'` (or `pip install opensmile`)"
        ) from exc
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )
    rows = []
    for clip in clips:
        x, rate = sf.read(str(clip.path), dtype="float32")
        rows.append(smile.process_signal(x, rate).to_numpy()[0])
    values = np.array(rows, dtype=np.float64)
    names = [f"egemaps_{n}" for n in smile.feature_names]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=values, names=np.array(names))
    return values, names


def with_clip_columns(w: CorpusWindows, clips: Sequence[Clip], values: F64) -> CorpusWindows:
    """``w`` with per-clip ``values`` ((n_clips, k)), each speaker z-scored, appended to every window of the clip."""
    z = values.copy()
    speaker = np.array([c.speaker for c in clips])
    for who in np.unique(speaker):
        mine = speaker == who
        z[mine] = (z[mine] - z[mine].mean(axis=0)) / (z[mine].std(axis=0) + 1e-6)
    return CorpusWindows(np.hstack([w.x, z[w.clip]]), w.clip, w.labels)


def clip_means(w: CorpusWindows) -> tuple[F64, I32]:
    """(clip-mean features, labels) of the clips that have speech windows."""
    n = len(w.labels)
    counts = np.bincount(w.clip, minlength=n)
    sums = np.zeros((n, w.x.shape[1]))
    np.add.at(sums, w.clip, w.x)
    has = counts > 0
    return sums[has] / counts[has, None], w.labels[has]


def four_index(labels: I32) -> I32:
    """Index into FOUR per label (calm -> neutral), -1 for the other emotions."""
    names = [MERGED.get(EMOTIONS[int(k)], EMOTIONS[int(k)]) for k in labels]
    return np.array([FOUR.index(n) if n in FOUR else -1 for n in names], dtype=np.int32)


def score(probs: F64, classes: Sequence[int], four_only: bool, labels: I32) -> tuple[float, float]:
    """(4-class UA, arousal UA) of clip probabilities over ``classes`` (FOUR or EMOTIONS indices)."""
    full = np.zeros((len(labels), len(EMOTIONS)), dtype=np.float32)
    for j, k in enumerate(classes):
        target = EMOTIONS.index(FOUR[k]) if four_only else k
        full[:, target] += probs[:, j]
    return ua4(full, labels), arousal_ua(full, labels, EMOTIONS)


def run(
    data: dict[str, CorpusWindows], make: Callable[[], Any], *, windows: bool, four_only: bool
) -> list[tuple[str, float, float]]:
    """Leave each corpus out once: (corpus, 4-class UA, arousal UA)."""
    out = []
    for test, held_out in data.items():
        xs, ys = [], []
        for name, w in data.items():
            if name == test:
                continue
            x, y = (w.x, w.labels[w.clip]) if windows else clip_means(w)
            if four_only:
                f = four_index(y)
                x, y = x[f >= 0], f[f >= 0]
            xs.append(x)
            ys.append(y)
        model = make().fit(np.concatenate(xs), np.concatenate(ys))
        n = len(held_out.labels)
        p_win = model.predict_proba(held_out.x)
        sums = np.zeros((n, p_win.shape[1]))
        np.add.at(sums, held_out.clip, p_win)
        counts = np.bincount(held_out.clip, minlength=n)
        has = counts > 0
        probs = sums[has] / counts[has, None]
        ua4, aro = score(probs, [int(c) for c in model.classes_], four_only, held_out.labels[has])
        out.append((test, ua4, aro))
    return out


def arousal_side(labels: I32) -> I32:
    """1 for high-arousal emotions, 0 for low, -1 for the others (disgust), per EMOTIONS index."""
    return np.array(
        [1 if EMOTIONS[int(k)] in HIGH else 0 if EMOTIONS[int(k)] in LOW else -1 for k in labels], dtype=np.int32
    )


def binary_ua(predicted: I32, truth: I32) -> float:
    """Mean recall of the two sides (truth 0 / 1); NaN when a side has no clip."""
    recalls = [float(np.mean(predicted[truth == side] == side)) for side in (0, 1) if (truth == side).any()]
    return float(np.mean(recalls)) if len(recalls) == 2 else float("nan")


def run_arousal(
    data: dict[str, CorpusWindows], make: Callable[[], Any]
) -> list[tuple[str, float, float, float, float]]:
    """Leave each corpus out once, clip means: (corpus, arousal UA and AUC read from an every-label classifier's
    probabilities as the runtime reads them, the same from a classifier trained on high / low arousal directly)."""
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415  (training extra)

    weights = ReadingConfig().weights_for(EMOTIONS)  # how the runtime reads arousal from probabilities
    out = []
    for test, held_out in data.items():
        xs, ys = zip(*(clip_means(w) for name, w in data.items() if name != test), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        xt, yt = clip_means(held_out)
        side, side_t = arousal_side(y), arousal_side(yt)
        keep = side_t >= 0
        every = make().fit(x, y)
        full = np.zeros((len(xt), len(EMOTIONS)))
        full[:, [int(c) for c in every.classes_]] = every.predict_proba(xt)
        summed = full @ weights
        binary = make().fit(x[side >= 0], side[side >= 0])
        direct = binary.predict_proba(xt)[:, 1]
        out.append(
            (
                test,
                arousal_ua(full.astype(np.float32), yt, EMOTIONS),
                float(roc_auc_score(side_t[keep], summed[keep])),
                binary_ua((direct[keep] >= 0.5).astype(np.int32), side_t[keep]),
                float(roc_auc_score(side_t[keep], direct[keep])),
            )
        )
    return out


def run_arousal_classes(data: dict[str, CorpusWindows], make: Callable[[], Any]) -> list[tuple[str, dict[str, float]]]:
    """Leave each corpus out once, clip means: (corpus, {label: share of its clips a high / low classifier trained
    on the other corpora reads as high}), every label of the held-out corpus, disgust included."""
    out = []
    for test, held_out in data.items():
        xs, ys = zip(*(clip_means(w) for name, w in data.items() if name != test), strict=True)
        x, y = np.concatenate(xs), np.concatenate(ys)
        side = arousal_side(y)
        binary = make().fit(x[side >= 0], side[side >= 0])
        xt, yt = clip_means(held_out)
        high = binary.predict(xt) == 1
        out.append((test, {EMOTIONS[int(k)]: float(np.mean(high[yt == k])) for k in np.unique(yt)}))
    return out


def _load_all(args: argparse.Namespace, layers: tuple[int, ...]) -> dict[str, CorpusWindows]:
    """Every corpus's speech windows with the columns ``args`` asks for (:class:`ConfigError` for a missing extra)."""
    cache = Path(args.cache) if args.cache else None
    parts: dict[str, list[Clip]] = {"ravdess": list(list_clips(args.data))}
    for name, folder in corpus_folders(args.corpus).items():
        parts[name] = list(get(name).list_clips(folder))
    data = {
        name: load(
            clips,
            cache,
            args.workers,
            voice=args.voice_encoder,
            layer_means=layers,
            speech_lookback_ms=args.voice_speech_lookback_ms,
        )
        for name, clips in parts.items()
    }
    names = summary_feature_names(feature_config_for("resnet_mlp", voice=args.voice_encoder, voice_layer_means=layers))
    if args.egemaps:
        extra = {name: egemaps_functionals(clips, cache) for name, clips in parts.items()}
        data = {k: with_clip_columns(v, parts[k], extra[k][0]) for k, v in data.items()}
        names = [*names, *next(iter(extra.values()))[1]]
    if args.whisper is not None:
        from emostream.train.whisper_probe import encoder_statistics  # noqa: PLC0415

        chunk_ms = args.whisper_chunk_ms or None
        stats = {
            name: encoder_statistics(clips, args.whisper, cache, chunk_ms=chunk_ms) for name, clips in parts.items()
        }
        wanted = {f"whisper_l{tag}_" for tag in args.whisper_layers.split(",") if tag}
        all_names = next(iter(stats.values()))[1]
        keep = np.array([any(n.startswith(w) for w in wanted) for n in all_names], dtype=bool)
        if not keep.any():
            raise ConfigError(
                f"--whisper-layers {args.whisper_layers!r} names no layer; expected some of "
                + ", ".join(sorted({n.split("_")[1][1:] for n in all_names}))
            )
        data = {k: with_clip_columns(v, parts[k], stats[k][0][:, keep]) for k, v in data.items()}
        names = [*names, *[n for n, k in zip(all_names, keep, strict=True) if k]]
    cols = np.array([COLUMN_SETS[args.columns](n) for n in names], dtype=bool)
    return {k: CorpusWindows(v.x[:, cols], v.clip, v.labels) for k, v in data.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415  (training extra)
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m emostream.train.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="RAVDESS speech folder")
    parser.add_argument("--corpus", action="append", default=[], metavar="NAME=DIR", help="nemo=DIR, ased=DIR")
    parser.add_argument("--columns", choices=tuple(COLUMN_SETS), default="all")
    parser.add_argument("--cache", default="cache", help="feature cache folder ('' = none)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated probes (default all but arousal_clip): lr_clip_4, lr_clip_all, lr_window_all, "
        "mlp_window_all, arousal_clip (arousal summed from class probabilities against a direct high/low classifier), "
        "arousal_classes (per label, the share of clips a high/low classifier reads as high)",
    )
    parser.add_argument("--voice-encoder", action="store_true", help="add the voice encoder's 256 columns")
    parser.add_argument(
        "--voice-layer-means",
        default="",
        metavar="LAYERS",
        help="with --voice-encoder: add the time means of these LSTM layers, e.g. 2,3 (+256 columns each)",
    )
    parser.add_argument(
        "--voice-speech-lookback-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="with --voice-encoder: the encoder hears the last 1.615 s of speech within MS (0 = of audio)",
    )
    parser.add_argument(
        "--egemaps", action="store_true", help="add openSMILE's eGeMAPS v02 functionals of each clip (bench extra)"
    )
    parser.add_argument(
        "--whisper",
        type=Path,
        default=None,
        metavar="DIR",
        help="add the mean and std of a Whisper encoder's layers over each clip's speech (a CTranslate2 model "
        "folder; emostream.train.whisper_probe)",
    )
    parser.add_argument(
        "--whisper-layers", default="post", metavar="LAYERS", help="with --whisper: e.g. 2,4,post (default post)"
    )
    parser.add_argument(
        "--whisper-chunk-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="with --whisper: encode each MS of a clip on its own, as a stream would (0 = the whole clip)",
    )
    args = parser.parse_args(argv)
    try:
        layers = voice_layer_means(args)
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        data = _load_all(args, layers)
    except ConfigError as exc:
        parser.error(str(exc))
    lr_aro = lambda: LogisticRegression(C=0.03, max_iter=3000, class_weight="balanced")  # noqa: E731
    lr_clip = lambda: LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced")  # noqa: E731
    lr_win = lambda: LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced")  # noqa: E731
    mlp = lambda: MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-2, max_iter=60, random_state=0)  # noqa: E731
    probes: dict[str, tuple[Callable[[], Any], bool, bool]] = {
        "lr_clip_4": (lr_clip, False, True),
        "lr_clip_all": (lr_clip, False, False),
        "lr_window_all": (lr_win, True, False),
        "mlp_window_all": (mlp, True, False),
    }
    wanted = [p for p in args.only.split(",") if p] or list(probes)
    if "arousal_classes" in wanted:
        wanted.remove("arousal_classes")
        for c, shares in run_arousal_classes(data, lr_aro):
            print(f"arousal_classes {c}: read high " + " ".join(f"{k} {v:.2f}" for k, v in shares.items()), flush=True)
    if "arousal_clip" in wanted:
        wanted.remove("arousal_clip")
        arousal_rows = run_arousal(data, lr_aro)
        for c, ua_sum, auc_sum, ua_bin, auc_bin in arousal_rows:
            print(f"arousal_clip {c}: summed UA {ua_sum:.3f} AUC {auc_sum:.3f}, binary {ua_bin:.3f} / {auc_bin:.3f}")
        means = np.mean([r[1:] for r in arousal_rows], axis=0)
        m = [f"{v:.3f}" for v in means]
        print(f"arousal_clip mean: summed UA {m[0]} AUC {m[1]}, binary UA {m[2]} AUC {m[3]}", flush=True)
    for name in wanted:
        make, windows, four_only = probes[name]
        rows = run(data, make, windows=windows, four_only=four_only)
        per = " ".join(f"{c} {u:.3f}/{a:.3f}" for c, u, a in rows)
        mean_u = float(np.mean([u for _, u, _ in rows]))
        mean_a = float(np.mean([a for _, _, a in rows]))
        print(f"{name:15s} ua4/arousal: {per}  mean {mean_u:.3f}/{mean_a:.3f}  ({args.columns})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
