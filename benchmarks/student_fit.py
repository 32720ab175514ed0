"""How well a voice student reproduces the LSTM on one corpus, overall and within speakers.

``python -m benchmarks.student_fit --corpus nemo=DIR --student FILE.tflite [--cache cache]``

For every speech window of the corpus (wideband, the product's windows), the LSTM's voice values
(the embedding, and the time means of layers 2 and 3 when the student reproduces them) and the
student's, both from the feature cache of ``python -m emostream.train evaluate`` runs (extracted
when missing). Each value of the LSTM is fitted by least squares on the student's same value (a
scale and an offset per value: the emotion model normalises every input, so neither matters),
and the pooled R^2 is printed three ways:

* ``all``: over every window;
* ``within speaker``: after taking each speaker's mean off both (what speaker calibration leaves);
* ``emotion means within speaker``: the means of each speaker's windows per emotion, each
  speaker's mean taken off (the part of the values that tells one speaker's emotions apart).

A student distilled on other corpora that scores low on the last line hands the emotion model
little of what the LSTM gives it after calibration (docs/results.md, "Trial: a voice student for
`accurate`").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpy.typing as npt

from emostream.frontend.vad import VadConfig
from emostream.frontend.voice import VOICE_DIM
from emostream.train.corpora import Clip, get
from emostream.train.dataset import build_windows
from emostream.train.run import feature_config_for

F64 = npt.NDArray[np.float64]


def _voice_values(
    clips: list[Clip], student: Path | None, layer_means: tuple[int, ...], cache: Path | None
) -> tuple[F64, npt.NDArray[np.int64]]:
    cfg = (
        feature_config_for("resnet_mlp", voice=True, voice_layer_means=layer_means)
        if student is None
        else feature_config_for("resnet_mlp", voice=True, voice_student=student)
    )
    if cfg.voice is None:
        raise SystemExit("no voice config: the front-end needs --voice-encoder")
    wset = build_windows(clips, cfg, VadConfig(), channel="wideband", cache_dir=cache, workers=2)
    keep = wset.is_speech & (wset.copy == 0)
    values = wset.features[keep][:, -cfg.voice.dim :].astype(np.float64)
    return values, wset.clip_index[keep].astype(np.int64)


def pooled_r2(x: F64, y: F64) -> float:
    """R^2 of ``y`` (n, d) fitted per column by a scale and an offset on ``x``'s same column, pooled over columns."""
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    scale = (xc * yc).sum(axis=0) / np.maximum((xc * xc).sum(axis=0), 1e-12)
    return float(1.0 - np.square(yc - scale * xc).sum() / max(float(np.square(yc).sum()), 1e-12))


def centred(values: F64, groups: npt.NDArray[np.int64]) -> F64:
    """``values`` with each group's mean taken off its rows."""
    out = values.copy()
    for g in np.unique(groups):
        rows = groups == g
        out[rows] -= values[rows].mean(axis=0)
    return out


def emotion_means(values: F64, speakers: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]) -> F64:
    """One row per (speaker, emotion): the mean of its windows, each speaker's mean of those rows taken off."""
    cells = sorted(set(zip(speakers.tolist(), labels.tolist(), strict=True)))
    rows = np.stack([values[(speakers == s) & (labels == e)].mean(axis=0) for s, e in cells])
    return centred(rows, np.array([s for s, _ in cells], dtype=np.int64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.student_fit", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, metavar="NAME=DIR", help="ravdess=DIR, nemo=DIR or ased=DIR")
    parser.add_argument(
        "--student", required=True, type=Path, help="a student written by emostream.train.voice_student"
    )
    parser.add_argument("--cache", default="cache", help="feature cache folder ('' = none)")
    args = parser.parse_args(argv)
    name, _, folder = args.corpus.partition("=")
    clips = list(get(name).list_clips(Path(folder)))
    cache = Path(args.cache) if args.cache else None
    student_values, index = _voice_values(clips, args.student, (), cache)
    layer_means = (2, 3) if student_values.shape[1] > VOICE_DIM else ()
    lstm_values, lstm_index = _voice_values(clips, None, layer_means, cache)
    if not np.array_equal(index, lstm_index):
        raise SystemExit("the student's and the LSTM's windows differ; delete the cache and run again")
    speakers = np.array([c.actor for c in clips], dtype=np.int64)[index]
    labels = np.array([c.label for c in clips], dtype=np.int64)[index]
    parts = [("embedding", slice(0, VOICE_DIM))] + (
        [("layer means 2, 3", slice(VOICE_DIM, None))] if layer_means else []
    )
    print(f"{name}: {len(index)} speech windows, {len(np.unique(speakers))} speakers, student {args.student}")
    for part, cols in parts:
        x, y = student_values[:, cols], lstm_values[:, cols]
        print(
            f"  {part}: R^2 all {pooled_r2(x, y):.3f}, within speaker "
            f"{pooled_r2(centred(x, speakers), centred(y, speakers)):.3f}, emotion means within speaker "
            f"{pooled_r2(emotion_means(x, speakers, labels), emotion_means(y, speakers, labels)):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
