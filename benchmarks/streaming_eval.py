"""Streaming evaluation: long recordings of held-out actors through the real pipeline.

``python -m benchmarks.streaming_eval --data DIR --fold-models DIR [--model resnet_mlp]``

For each EmoBox fold (``DIR/folds.json``) the fold's test actors' clips are trimmed to their
voiced span, shuffled and concatenated with 0.5–3 s gaps, and background noise is added at
``--snr-db`` (default 20 dB, relative to the mean speech power) over the whole recording;
every sample keeps its true label (an emotion, or none in the gaps). The recording is
streamed through ``ChannelPipeline`` (VAD, features, windows, the fold's model from
``--fold-models DIR/fold_K/NAME.json``) in 500 ms blocks, once. The smoothing grid is then
replayed with ENGINE's ``Smoother`` over the same per-window scores (the pipeline calls the
smoother once per window in the same order, so this is what the pipeline would show; the
default setting is checked against the pipeline's own output). Reported per setting:

* accuracy and UA of the shown label on speech hops (window majority is an emotion);
* delay from an utterance's start until the shown label first equals its emotion, for
  utterances whose emotion differs from the previous one and is not already shown when the
  utterance starts (median, p90, share reached before the next utterance starts);
* shown-label changes per minute vs the true changes per minute;
* (setting-independent) share of no-speech hops (true utterance share of the window below
  the VAD's ``min_speech_ratio``) left unlabelled (no scores), and the raw per-window
  accuracy of the model without smoothing; also for windows without any utterance sample.

Without ``--fold-models`` one ``--model`` serves every fold: those figures are NOT
actor-independent (the model may have been trained on the test actors).

**Other corpora** (``--corpus DIR``, repeatable; RAVDESS, nEMO or ASED layout, see
:mod:`benchmarks.corpus`): each speaker of each corpus gets one recording of their own clips (as
``--per-actor``; ``--max-speakers N`` per corpus, ``--max-clips`` per speaker), streamed through
``--fold-models DIR/fold_NAME/MODEL.json``: the loco fold model that never heard corpus NAME
(``emostream.train evaluate --protocol loco --save-fold-models DIR``). UA is over the labels the
corpus has. Every figure is computed per corpus (``corpora`` in the JSON) and the table gives
their mean, so each corpus counts once whatever its size, as in ``loco``; the recommendation is
made on those means.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corpus import corpus_name, load_clips
from emostream.apps.options import parse_fold, parse_labels
from emostream.audio.files import load_mono
from emostream.config import Config, Overrides
from emostream.engine.events import HopResult
from emostream.engine.labels import FOUR, LabelGrouping, LabelsConfig
from emostream.engine.plan import make_plan
from emostream.engine.smoothing import Smoother, SmoothingConfig
from emostream.errors import ConfigError
from emostream.frontend.vad import VadConfig
from emostream.inference.metadata import EMOTIONS
from emostream.inference.model import EmotionModel
from emostream.train.loco import MERGED  # calm read as neutral, as loco reads it

GAP = -1  # label of samples between utterances
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Utterance:
    """One clip placed in the recording: seconds from the recording start."""

    start_s: float
    end_s: float
    emotion: str


@dataclass
class Recording:
    """A long test recording: float32 mono ``signal``, per-sample label index (GAP = none)."""

    signal: np.ndarray
    labels: np.ndarray
    utterances: list[Utterance]
    rate_hz: int


# ------------------------------------------------------------------ building recordings


def fold_clips(data_dir: Path, actors: Sequence[int]) -> list[tuple[Path, str]]:
    """(path, emotion) of every speech clip (``03-01-EE-...``) of ``actors``."""
    clips = []
    for actor in actors:
        for path in sorted((data_dir / f"Actor_{actor:02d}").glob("03-01-*.flac")):
            clips.append((path, EMOTIONS[int(path.name.split("-")[2]) - 1]))
    if not clips:
        raise SystemExit(f"no clips of actors {list(actors)} under {data_dir}; expected Actor_XX/03-01-*.flac")
    return clips


def trim_silence(x: np.ndarray, rate_hz: int, floor_db: float = -35.0, margin_s: float = 0.05) -> np.ndarray:
    """``x`` cut to the span whose 20 ms frames are within ``floor_db`` of the loudest frame."""
    frame = rate_hz // 50
    n = len(x) // frame
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    margin = int(margin_s * rate_hz)
    return x[max(0, loud[0] * frame - margin) : min(len(x), (loud[-1] + 1) * frame + margin)]


def episode_order(clips: Sequence[tuple[Path, str]], rng: np.random.Generator, episode: int) -> list[int]:
    """Clip indices in random order; with ``episode`` > 1, runs of up to that many clips of one actor
    and emotion stay together (an emotional episode), and the episodes are shuffled."""
    if episode <= 1:
        return [int(i) for i in rng.permutation(len(clips))]
    groups: dict[tuple[str, str], list[int]] = {}
    for i in rng.permutation(len(clips)).tolist():
        path, emotion = clips[i]
        groups.setdefault((path.parent.name, emotion), []).append(i)
    runs = [g[k : k + episode] for g in groups.values() for k in range(0, len(g), episode)]
    return [i for r in (runs[j] for j in rng.permutation(len(runs))) for i in r]


NOISE_SLOPES = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power falls as 1/f**slope


def coloured_noise(n: int, rng: np.random.Generator, colour: str = "pink") -> np.ndarray:
    """Unit-power noise whose power falls as 1/f**slope (white: hiss, pink: room, brown: fan rumble), float64 (n,)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.maximum(np.arange(spectrum.size), 1.0) ** (NOISE_SLOPES[colour] / 2.0)
    noise = np.fft.irfft(spectrum, n)
    return noise / np.sqrt(np.mean(noise**2))


def build_recording(
    clips: Sequence[tuple[Path, str]],
    labels: Sequence[str],
    rng: np.random.Generator,
    *,
    rate_hz: int = 16000,
    gap_s: tuple[float, float] = (0.5, 3.0),
    snr_db: float = 20.0,
    episode: int = 1,
    noise: str = "pink",
) -> Recording:
    """Shuffle (see :func:`episode_order`), trim and join ``clips`` with random gaps; add ``noise``
    (a colour of :data:`NOISE_SLOPES`) at ``snr_db`` (inf = none)."""
    parts: list[np.ndarray] = []
    marks: list[np.ndarray] = []
    utterances: list[Utterance] = []
    position = 0
    for index in episode_order(clips, rng, episode):
        path, emotion = clips[index]
        gap = np.zeros(int(rng.uniform(*gap_s) * rate_hz), dtype=np.float32)
        speech = trim_silence(load_mono(path, rate_hz), rate_hz)
        parts += [gap, speech]
        marks += [np.full(gap.size, GAP, np.int8), np.full(speech.size, labels.index(emotion), np.int8)]
        start = position + gap.size
        utterances.append(Utterance(start / rate_hz, (start + speech.size) / rate_hz, emotion))
        position = start + speech.size
    tail = np.zeros(int(gap_s[1] * rate_hz), dtype=np.float32)
    signal = np.concatenate([*parts, tail]).astype(np.float64)
    label_track = np.concatenate([*marks, np.full(tail.size, GAP, np.int8)])
    if np.isfinite(snr_db):
        speech_power = float(np.mean(signal[label_track != GAP] ** 2))
        signal += coloured_noise(signal.size, rng, noise) * np.sqrt(speech_power / 10 ** (snr_db / 10))
    peak = np.max(np.abs(signal))
    if peak > 1.0:
        signal /= peak
    return Recording(signal.astype(np.float32), label_track, utterances, rate_hz)


# ------------------------------------------------------------------ streaming and scoring


def stream(
    model: EmotionModel,
    recording: Recording,
    smoothing: SmoothingConfig,
    *,
    block_s: float = 0.5,
    vad_noise_margin_db: float | None = None,
    vad_engine: str | None = None,
    labels: LabelsConfig | None = None,
) -> list[HopResult]:
    """Every hop of ``recording`` through a fresh pipeline as a live run builds it (the plan step:
    speaker calibration when the model was trained for it, the first reading after 1 s, ``[labels]``),
    end flushed."""
    pairs: list[tuple[str, float | str]] = (
        [] if vad_noise_margin_db is None else [("noise_floor_margin_db", vad_noise_margin_db)]
    )
    if vad_engine is not None:
        pairs.append(("engine", vad_engine))
    vad = Overrides(VadConfig, tuple(pairs))
    plan = make_plan(Config(smoothing=smoothing, vad=vad, labels=labels or LabelsConfig()), model)
    pipeline = plan.pipeline(plan.channel_plans(1)[0])
    block = int(block_s * recording.rate_hz)
    hops: list[HopResult] = []
    for start in range(0, recording.signal.size, block):
        hops += pipeline.process(recording.signal[start : start + block])
    return hops + pipeline.flush()


def replay(
    hops: Sequence[HopResult], labels: Sequence[str], smoothing: SmoothingConfig, hop_s: float
) -> list[str | None]:
    """The label a pipeline with ``smoothing`` would show at each hop, from the hops' window scores over
    ``labels`` (the labels the pipeline shows: the model's, or fewer with ``[labels] show``)."""
    smoother = Smoother(labels, smoothing, hop_s)
    shown = []
    for hop in hops:
        probs = None if hop.scores is None else [hop.scores[lab] for lab in labels]
        shown.append(smoother.process(probs, hop.t_end)[1])
    return shown


def window_truth(hops: Sequence[HopResult], recording: Recording, n_labels: int) -> np.ndarray:
    """Majority label of each hop's window (GAP when gap samples are the majority or tie the best emotion)."""
    truth = np.empty(len(hops), dtype=np.int64)
    rate = recording.rate_hz
    for i, hop in enumerate(hops):
        span = recording.labels[round(hop.t_start * rate) : round(hop.t_end * rate)]
        counts = np.bincount(span.astype(np.int64) + 1, minlength=n_labels + 1)
        truth[i] = GAP if counts.size == 0 or counts.argmax() == 0 else counts.argmax() - 1
    return truth


def speech_fraction(hops: Sequence[HopResult], recording: Recording) -> np.ndarray:
    """True share of utterance samples in each hop's window, float64 (n_hops,)."""
    rate = recording.rate_hz
    voiced = np.concatenate([[0], np.cumsum(recording.labels != GAP)])
    starts = np.clip([round(h.t_start * rate) for h in hops], 0, recording.labels.size)
    ends = np.clip([round(h.t_end * rate) for h in hops], 0, recording.labels.size)
    return (voiced[ends] - voiced[starts]) / np.maximum(
        1, np.array([round((h.t_end - h.t_start) * rate) for h in hops])
    )


def ua4_of(confusion: np.ndarray, labels: Sequence[str]) -> float:
    """4-class UA (loco's classes, calm counted as neutral) of a (truth, shown + unlabelled) confusion matrix:
    the mean over the four classes present of the share of their hops whose shown label is the same class
    (any other label, or none, counts as wrong); NaN when none of the four is present."""
    group = [FOUR.index(MERGED.get(lab, lab)) if MERGED.get(lab, lab) in FOUR else -1 for lab in labels]
    shown_group = np.array([*group, -1])  # the last column: no label shown
    recalls = []
    for k in range(len(FOUR)):
        truth_rows = np.flatnonzero(np.array(group) == k)
        total = confusion[truth_rows].sum()
        if total:
            recalls.append(confusion[np.ix_(truth_rows, np.flatnonzero(shown_group == k))].sum() / total)
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass
class Tally:
    """Counts pooled over folds for one smoothing setting (``labels``: the model's, in confusion order)."""

    confusion: np.ndarray
    labels: tuple[str, ...] = ()
    delays: list[float] = field(default_factory=list)
    transitions: int = 0
    reached: int = 0
    shown_changes: int = 0
    true_changes: int = 0
    minutes: float = 0.0

    def row(self) -> dict[str, float]:
        totals = self.confusion.sum(axis=1)
        recalls = np.diag(self.confusion)[totals > 0] / totals[totals > 0]
        delays = np.asarray(self.delays)
        return {
            "accuracy": float(np.trace(self.confusion) / max(1, self.confusion.sum())),
            "ua": float(recalls.mean()) if recalls.size else float("nan"),
            "ua4": ua4_of(self.confusion, self.labels) if self.labels else float("nan"),
            "delay_median_s": float(np.median(delays)) if delays.size else float("nan"),
            "delay_p90_s": float(np.percentile(delays, 90)) if delays.size else float("nan"),
            "reached": self.reached / max(1, self.transitions),
            "changes_per_min": self.shown_changes / max(1e-9, self.minutes),
            "true_changes_per_min": self.true_changes / max(1e-9, self.minutes),
        }


def score(
    tally: Tally,
    hops: Sequence[HopResult],
    *,
    shown: Sequence[str | None],
    truth: np.ndarray,
    recording: Recording,
    labels: Sequence[str],
) -> None:
    """Add one fold's hops (with the labels a setting showed) to ``tally``."""
    index = {lab: i for i, lab in enumerate(labels)}
    n = len(labels)
    for label, true in zip(shown, truth, strict=True):
        if true != GAP:
            tally.confusion[true, index[label] if label is not None else n] += 1
    names = [s for s in shown if s is not None]
    tally.shown_changes += sum(a != b for a, b in itertools.pairwise(names))
    tally.minutes += recording.signal.size / recording.rate_hz / 60.0
    ends = np.array([h.t_end for h in hops])
    utts = recording.utterances
    for prev, utt, nxt in zip([None, *utts[:-1]], utts, [*utts[1:], None], strict=True):
        if prev is None or prev.emotion == utt.emotion:
            continue
        tally.true_changes += 1
        before = np.flatnonzero(ends <= utt.start_s)
        if before.size and shown[int(before[-1])] == utt.emotion:
            continue  # already shown (by chance) when the utterance starts: no delay to measure
        tally.transitions += 1
        limit = np.inf if nxt is None else nxt.start_s
        for i in np.flatnonzero((ends >= utt.start_s) & (ends <= limit)).tolist():
            if shown[i] == utt.emotion:
                tally.delays.append(float(ends[i] - utt.start_s))
                tally.reached += 1
                break


# ------------------------------------------------------------------ the grid and the run


def smoothing_grid(name: str) -> list[SmoothingConfig]:
    """``default``: EMA time constants × hysteresis × min dwell (+ sliding-window means); ``small``: a few."""
    if name == "small":
        return [
            SmoothingConfig(time_constant_s=t, hysteresis=h, min_dwell_s=d)
            for t, h, d in ((0.0, 0.0, 0.0), (2.0, 0.1, 2.0), (1.0, 0.05, 1.0))
        ]
    grid = [
        SmoothingConfig(time_constant_s=t, hysteresis=h, min_dwell_s=d)
        for t in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
        for h in (0.0, 0.05, 0.1, 0.15, 0.2)
        for d in (0.0, 1.0, 2.0, 3.0)
    ]
    grid += [SmoothingConfig(method="window", window_s=w, hysteresis=0.1, min_dwell_s=1.0) for w in (2.0, 4.0)]
    return grid


MAX_CHANGE_RATIO = 2.0  # shown changes per minute at most this many times the true rate
MAX_MEDIAN_DELAY_S = 2.0


def recommend(rows: dict[str, dict[str, float]]) -> str | None:
    """The setting with the best UA among those that change the label at most MAX_CHANGE_RATIO × as
    often as the truth and reflect a new emotion within MAX_MEDIAN_DELAY_S (median); None if none."""
    fit = {
        name: r
        for name, r in rows.items()
        if r["changes_per_min"] <= MAX_CHANGE_RATIO * r["true_changes_per_min"]
        and r["delay_median_s"] <= MAX_MEDIAN_DELAY_S
    }
    return max(fit, key=lambda name: fit[name]["ua"]) if fit else None


def setting_name(s: SmoothingConfig) -> str:
    """Short description of a smoothing setting."""
    head = f"ema τ={s.time_constant_s:g}s" if s.method == "ema" else f"window {s.window_s:g}s"
    return f"{head} hyst={s.hysteresis:g} dwell={s.min_dwell_s:g}s"


def fold_model(args: argparse.Namespace, fold: int | str) -> tuple[EmotionModel, bool]:
    """The model of fold ``fold`` (an EmoBox fold number, or the held-out corpus of a loco fold) and whether
    it is independent of the test speakers; without ``--fold-models``, ``--model`` (not independent)."""
    if args.fold_models:
        path = Path(args.fold_models) / f"fold_{fold}" / f"{args.model}.json"
        if not path.is_file():
            raise SystemExit(
                f"no fold model {path}; train them with `python -m emostream.train evaluate ... "
                "--protocol emobox|loco --save-fold-models DIR` (loco for --corpus)"
            )
        return EmotionModel.load(path, num_threads=1), True
    return EmotionModel.load(args.model, num_threads=1), False


def folds_of(
    data_dir: Path, wanted: Sequence[int] | None, actors: Sequence[int] | None = None
) -> Iterator[tuple[int, list[int]]]:
    """(fold, test actors) from ``data_dir/folds.json``; with ``actors``, one fold 0 of those actors."""
    if actors:
        yield 0, list(actors)
        return
    folds = json.loads((data_dir / "folds.json").read_text(encoding="utf-8"))["test_actors"]
    for key in sorted(folds, key=int):
        if not wanted or int(key) in wanted:
            yield int(key), [int(a) for a in folds[key]]


@dataclass
class Unit:
    """One held-out set: the ``corpus`` it belongs to, its model, and its recordings' clips (path, emotion)."""

    corpus: str
    description: str
    model: EmotionModel
    independent: bool
    groups: list[list[tuple[Path, str]]]


def emobox_units(args: argparse.Namespace, rng: np.random.Generator) -> Iterator[Unit]:
    """The EmoBox folds of RAVDESS (``--data``): one unit per fold (corpus ``ravdess``)."""
    data_dir = Path(args.data or os.environ.get("EMOSTREAM_RAVDESS", ""))
    if not (data_dir / "folds.json").is_file():
        raise SystemExit(f"no RAVDESS set at {data_dir!s}; pass --data DIR or set EMOSTREAM_RAVDESS")
    for fold, actors in folds_of(data_dir, args.folds, args.actors):
        model, independent = fold_model(args, fold)
        all_clips = fold_clips(data_dir, actors)
        if args.max_clips:
            picked = rng.choice(len(all_clips), min(args.max_clips, len(all_clips)), replace=False)
            all_clips = [all_clips[i] for i in picked]
        groups = [[c for c in all_clips if _actor(c[0]) == a] for a in actors] if args.per_actor else [all_clips]
        description = f"fold {fold}: actors {actors}, {len(all_clips)} clips, model {model.metadata.name}"
        description += ", one recording per actor" if args.per_actor else ""
        yield Unit("ravdess", description, model, independent, [g for g in groups if g])


def corpus_units(args: argparse.Namespace, rng: np.random.Generator) -> Iterator[Unit]:
    """One unit per ``--corpus`` folder: a recording per speaker, through the model that never heard the corpus."""
    for folder in args.corpus:
        name = corpus_name(Path(folder))
        model, independent = fold_model(args, name)
        clips = load_clips(folder)
        speakers = sorted({c.speaker for c in clips})
        if args.max_speakers:
            speakers = speakers[: args.max_speakers]
        groups = []
        for speaker in speakers:
            mine = [(c.path, c.emotion) for c in clips if c.speaker == speaker]
            if args.max_clips and len(mine) > args.max_clips:
                mine = [mine[i] for i in sorted(rng.choice(len(mine), args.max_clips, replace=False).tolist())]
            groups.append(mine)
        count = sum(len(g) for g in groups)
        description = f"{name}: {len(speakers)} speakers, {count} clips, model {model.metadata.name}"
        yield Unit(name, description, model, independent, groups)


def mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each figure's mean over ``rows`` (NaN figures left out; NaN when all are)."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows if not np.isnan(r[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate every unit, tally per corpus and smoothing setting, and average the corpora."""
    grid = smoothing_grid(args.grid)
    tallies: dict[str, dict[str, Tally]] = {}
    raws: dict[str, Tally] = {}
    models: dict[str, list[str]] = {}
    gap_hops = gap_unlabelled = silent_hops = silent_unlabelled = 0
    independent = True
    rng = np.random.default_rng(args.seed)
    units = corpus_units(args, rng) if args.corpus else emobox_units(args, rng)
    show = shown_labels(args)
    for unit in units:
        independent &= unit.independent
        try:
            names = LabelGrouping.resolve(show, unit.model.labels, unit.description).labels  # what it shows
        except ConfigError as exc:
            raise SystemExit(f"--show-labels: {exc}") from None
        for clips in unit.groups:
            stats = _stream_and_score(
                args,
                unit.model,
                clips,
                rng=rng,
                grid=grid,
                tallies=tallies.setdefault(unit.corpus, {}),
                raw=raws.get(unit.corpus),
                show=show,
                names=names,
            )
            raws[unit.corpus] = stats.pop("raw")
            gap_hops += stats["gap_hops"]
            gap_unlabelled += stats["gap_unlabelled"]
            silent_hops += stats["silent_hops"]
            silent_unlabelled += stats["silent_unlabelled"]
        models.setdefault(unit.corpus, []).append(unit.description)
        print(unit.description, file=sys.stderr)
    if not tallies:
        raise SystemExit("nothing to evaluate: no clips in the folds or corpora given")
    per_corpus: dict[str, dict[str, Any]] = {
        corpus: {
            "units": models[corpus],
            "raw_window": raws[corpus].row(),
            "settings": {name: t.row() for name, t in by_setting.items()},
        }
        for corpus, by_setting in tallies.items()
    }
    names = [setting_name(setting) for setting in grid]
    rows = {name: mean_rows([c["settings"][name] for c in per_corpus.values()]) for name in names}
    return {
        "recommended": recommend(rows),
        "actor_independent": independent,
        "model": args.model,
        "fold_models": args.fold_models,
        "actors": args.actors,
        "per_actor": args.per_actor or bool(args.corpus),
        "snr_db": args.snr_db,
        "noise": args.noise,
        "vad_noise_margin_db": args.vad_noise_margin,
        "vad_engine": args.vad_engine,
        "seed": args.seed,
        "episode": args.episode,
        "show_labels": args.show_labels,
        "fold": args.fold,
        "no_speech_unlabelled": gap_unlabelled / max(1, gap_hops),
        "no_speech_hops": gap_hops,
        "silent_unlabelled": silent_unlabelled / max(1, silent_hops),
        "silent_hops": silent_hops,
        "raw_window": mean_rows([c["raw_window"] for c in per_corpus.values()]),
        "settings": rows,
        "corpora": per_corpus,
    }


def _actor(path: Path) -> int:
    """Actor number of a RAVDESS file name (the last dash-separated field)."""
    return int(path.stem.split("-")[-1])


def _stream_and_score(
    args: argparse.Namespace,
    model: EmotionModel,
    clips: list[tuple[Path, str]],
    *,
    rng: np.random.Generator,
    grid: list[SmoothingConfig],
    tallies: dict[str, Tally],
    raw: Tally | None,
    show: LabelsConfig,
    names: tuple[str, ...],
) -> dict[str, Any]:
    """One recording of ``clips`` streamed once with ``[labels]`` ``show`` (whose shown labels are ``names``)
    and scored under every smoothing setting (tallies updated)."""
    labels = model.labels
    rec = build_recording(
        clips,
        labels,
        rng,
        rate_hz=model.metadata.feature_config.sample_rate_hz,
        snr_db=args.snr_db,
        episode=args.episode,
        noise=args.noise,
    )
    default = SmoothingConfig()
    hops = stream(
        model, rec, default, vad_noise_margin_db=args.vad_noise_margin, vad_engine=args.vad_engine, labels=show
    )
    hop_s = model.metadata.feature_config.window_hop_ms / 1000.0
    if replay(hops, names, default, hop_s) != [h.emotion for h in hops]:
        raise SystemExit("replayed smoother disagrees with the pipeline's own labels; the replay is invalid")
    truth = window_truth(hops, rec, len(labels))
    fraction = speech_fraction(hops, rec)
    quiet = fraction < model.metadata.vad_config.min_speech_ratio
    argmax = [None if h.scores is None else max(h.scores, key=h.scores.__getitem__) for h in hops]
    raw = raw or Tally(np.zeros((len(labels), len(labels) + 1), np.int64), tuple(labels))
    score(raw, hops, shown=argmax, truth=truth, recording=rec, labels=labels)
    for setting in grid:
        empty = Tally(np.zeros((len(labels), len(labels) + 1), np.int64), tuple(labels))
        tally = tallies.setdefault(setting_name(setting), empty)
        shown = replay(hops, names, setting, hop_s)
        score(tally, hops, shown=shown, truth=truth, recording=rec, labels=labels)
    return {
        "raw": raw,
        "gap_hops": int(quiet.sum()),
        "gap_unlabelled": sum(1 for h, q in zip(hops, quiet.tolist(), strict=True) if q and h.scores is None),
        "silent_hops": int((fraction == 0).sum()),
        "silent_unlabelled": sum(
            1 for h, f in zip(hops, fraction.tolist(), strict=True) if f == 0 and h.scores is None
        ),
    }


def shown_labels(args: argparse.Namespace) -> LabelsConfig:
    """The ``[labels]`` setting of the run: --show-labels and --fold, else [labels]'s defaults."""
    cfg = LabelsConfig() if args.show_labels is None else LabelsConfig(show=args.show_labels)
    return cfg if args.fold is None else dataclasses.replace(cfg, fold=args.fold)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="RAVDESS speech folder with folds.json (default: $EMOSTREAM_RAVDESS)")
    parser.add_argument("--fold-models", help="DIR with fold_K/NAME.json per fold (actor-independent)")
    parser.add_argument("--model", default="resnet_mlp", help="model name (in fold dirs, or shipped / a path)")
    parser.add_argument("--folds", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 1,2 (default all)")
    parser.add_argument(
        "--actors",
        type=lambda s: [int(x) for x in s.split(",")],
        help="evaluate these actors as one fold (with --model: e.g. the actors a model was not trained on)",
    )
    parser.add_argument(
        "--corpus",
        action="append",
        default=[],
        metavar="DIR",
        help="a corpus folder (RAVDESS, nEMO or ASED layout; repeatable): one recording per speaker, through "
        "--fold-models DIR/fold_NAME (loco); replaces the EmoBox folds of --data",
    )
    parser.add_argument("--max-speakers", type=int, default=0, help="with --corpus: speakers per corpus (0 = all)")
    parser.add_argument(
        "--show-labels",
        type=parse_labels,
        default=None,
        metavar="all|L1,L2,..",
        help="stream with [labels] show = these labels (e.g. neutral,happy,sad,angry: calm read as neutral, "
        "the others dropped and the rest renormalised; all: every label of the model); default: [labels]'s default",
    )
    parser.add_argument(
        "--fold", type=parse_fold, metavar="L=S,..", help="[labels] fold for the run (e.g. calm=neutral,fearful=sad)"
    )
    parser.add_argument("--max-clips", type=int, default=0, help="clips per fold (with --corpus: per speaker; 0 = all)")
    parser.add_argument("--snr-db", type=float, default=20.0, help="background noise SNR; inf = none")
    parser.add_argument("--noise", choices=tuple(NOISE_SLOPES), default="pink", help="background noise colour")
    parser.add_argument(
        "--vad-noise-margin", type=float, help="[vad] noise_floor_margin_db for the run (default: the model's VAD)"
    )
    parser.add_argument(
        "--vad-engine", choices=("webrtc", "silero"), help="[vad] engine for the run (default: the model's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--episode", type=int, default=1, help="keep runs of up to N clips of one actor+emotion together"
    )
    parser.add_argument("--grid", choices=("default", "small"), default="default")
    parser.add_argument(
        "--per-actor",
        action="store_true",
        help="one recording per actor (a speaker per channel, as speaker calibration assumes) instead of one per fold",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "streaming_eval.json")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    return parser.parse_args(argv)


def markdown_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table, best accuracy first."""
    lines = [
        "| smoothing | hop acc | UA | 4-class UA | delay median s | delay p90 s | reached | changes/min (true) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    raw = report["raw_window"]
    lines.append(
        f"| raw window argmax (no smoothing, unlabelled when no speech) | {raw['accuracy']:.3f} | "
        f"{raw['ua']:.3f} | {raw['ua4']:.3f} | {raw['delay_median_s']:.2f} | {raw['delay_p90_s']:.2f} | "
        f"{raw['reached']:.0%} | "
        f"{raw['changes_per_min']:.1f} ({raw['true_changes_per_min']:.1f}) |"
    )
    for name, r in sorted(report["settings"].items(), key=lambda kv: -kv[1]["accuracy"]):
        lines.append(
            f"| {name} | {r['accuracy']:.3f} | {r['ua']:.3f} | {r['ua4']:.3f} | {r['delay_median_s']:.2f} | "
            f"{r['delay_p90_s']:.2f} | {r['reached']:.0%} | {r['changes_per_min']:.1f} "
            f"({r['true_changes_per_min']:.1f}) |"
        )
    return "\n".join(lines) + "\n"


def corpus_lines(report: dict[str, Any]) -> str:
    """Per corpus: shown-label UA and median delay of the default smoothing and of the recommended one."""
    default = setting_name(SmoothingConfig())
    picked = [("default", default)] + ([("recommended", report["recommended"])] if report["recommended"] else [])
    lines = []
    for corpus, figures in report["corpora"].items():
        raw = figures["raw_window"]
        parts = [f"raw window UA {raw['ua']:.3f} (4-class {raw['ua4']:.3f})"]
        for what, name in picked:
            row = figures["settings"][name]
            parts.append(f"{what} UA {row['ua']:.3f} (4-class {row['ua4']:.3f}), delay {row['delay_median_s']:.2f} s")
        lines.append(f"{corpus}: " + "; ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(report)
    print(table)
    print(
        f"no-speech hops left unlabelled: {report['no_speech_unlabelled']:.1%} of {report['no_speech_hops']} "
        f"(windows without any speech: {report['silent_unlabelled']:.1%} of {report['silent_hops']})"
    )
    print(
        f"recommended (best UA with changes/min <= {MAX_CHANGE_RATIO:g}x true and median delay <= "
        f"{MAX_MEDIAN_DELAY_S:g} s): {report['recommended']}"
    )
    if len(report["corpora"]) > 1:
        print(corpus_lines(report))
    if not report["actor_independent"]:
        print("WARNING: one model for every fold: these figures are NOT actor-independent")
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
