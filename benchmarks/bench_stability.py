"""Readings under inaudible changes (issue 19 item 13): a gain of 0.999, int16 made by truncation, +1 LSB.

    python -m benchmarks --only stability [--data DIR ...] [--stability-clips 60] [--model NAME|PATH ...]

Each clip goes through :func:`emostream.apps.analyze.analyze_file` (the path of
``emostream analyze``: a float32 WAV read in blocks, the model's VAD and windows, the mean of
its speech windows' probabilities) once as the reference and once changed in a way nobody can
hear. Pairs (reference -> changed), on the clip ``s`` as float samples:

* ``gain 0.999`` / ``gain 1.001``: ``s`` -> ``0.999 s`` / ``1.001 s`` (-0.009 / +0.009 dB);
* ``DC +1 LSB``: ``s`` -> ``s + 2**-15`` (one int16 step added to every sample);
* ``int16 by truncation``: ``round(0.999 s * 32768)`` -> ``trunc(0.999 s * 32768)``: the same float
  signal made int16 by rounding and by truncation (the gain takes 16-bit sources off the int16 grid).

Per model and pair it prints: file labels changed (the emotion ``analyze`` shows per file) of the
clips, window labels changed (the argmax of each speech window) of the windows, the largest
absolute difference of any probability (file scores or window probabilities), and the CPU time
(user + system of this process) per second of audio of the reference pass. Models: ``--model``
(repeatable), else ``fast``, ``accurate`` as shipped and ``accurate`` with the other speech-
embedding variant (``embedding=float`` or ``embedding=int8``: the same head fed the other
embedding file; its accuracy is not that of a model trained on it, its stability is what it measures).

Clips: the 16 fixture clips (``tests/fixtures/ravdess``), sentences synthesised with espeak-ng
when it is installed, and ``--stability-clips`` clips spread evenly over each ``--data`` corpus
folder (RAVDESS, nEMO or ASED layout, e.g. ``../shared/datasets/ravdess-speech-16k``).
``--quick``: four fixture clips. Target: no label changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from benchmarks.common import available_models, figure, result
from emostream.apps.analyze import analyze_file, stream_windows
from emostream.audio.files import MonoStream, load_mono
from emostream.config import Config
from emostream.engine.labels import LabelsConfig
from emostream.engine.plan import SessionPlan, make_plan
from emostream.inference.metadata import ModelMetadata, resolve_model
from emostream.inference.model import EmotionModel

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "ravdess"
SAMPLE_RATE_HZ = 16000
LSB = 2.0**-15
INT16_GAIN = 0.999
QUICK_CLIPS = 4
ESPEAK_SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "I told you twice already, put the boxes back where you found them!",
    "Could you please call me back when you get home tonight?",
    "Nobody came to the meeting, and the room stayed empty all afternoon.",
)
ESPEAK_VOICES = ("en-us", "en-gb+f3")
FloatArray = npt.NDArray[np.float64]


def _int16_round(x: FloatArray) -> FloatArray:
    return np.clip(np.round(x * INT16_GAIN * 32768.0), -32768, 32767) / 32768.0


def _int16_trunc(x: FloatArray) -> FloatArray:
    return np.clip(np.trunc(x * INT16_GAIN * 32768.0), -32768, 32767) / 32768.0


PAIRS: dict[str, tuple[Callable[[FloatArray], FloatArray], Callable[[FloatArray], FloatArray]]] = {
    "gain 0.999": (lambda x: x, lambda x: 0.999 * x),
    "gain 1.001": (lambda x: x, lambda x: 1.001 * x),
    "DC +1 LSB": (lambda x: x, lambda x: x + LSB),
    "int16 by truncation": (_int16_round, _int16_trunc),
}


@dataclass(frozen=True, kw_only=True)
class Clip:
    """One source clip: a name and its float64 mono samples at 16 kHz, shape (n,)."""

    name: str
    samples: FloatArray


@dataclass(frozen=True, kw_only=True)
class Reading:
    """``analyze``'s result for one file: the file's label and scores, and each speech window's probabilities."""

    label: str | None
    scores: FloatArray  # (n_labels,), zeros without speech
    windows: FloatArray  # (n_speech_windows, n_labels)
    cpu_s: float  # CPU seconds (user + system) of analyze_file alone


def espeak_clips(folder: Path) -> list[Clip]:
    """Sentences spoken by espeak-ng (a few voices), resampled to 16 kHz float; none if espeak-ng is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return []
    clips = []
    for v, voice in enumerate(ESPEAK_VOICES):
        for s, sentence in enumerate(ESPEAK_SENTENCES):
            path = folder / f"espeak_{v}_{s}.wav"
            subprocess.run([exe, "-v", voice, "-s", "150", "-w", str(path), sentence], check=True, capture_output=True)
            clips.append(Clip(name=f"espeak/{voice}/{s}", samples=load_mono(path, SAMPLE_RATE_HZ).astype(np.float64)))
    return clips


def corpus_clips(root: Path, count: int) -> list[Clip]:
    """``count`` clips spread evenly over a corpus folder (sorted paths), float64 at 16 kHz."""
    from benchmarks.corpus import load_clips, read_clip

    listed = load_clips(root)
    step = max(1, len(listed) // max(count, 1))
    return [
        Clip(name=f"{root.name}/{c.path.name}", samples=read_clip(c.path, SAMPLE_RATE_HZ).astype(np.float64))
        for c in listed[::step][:count]
    ]


def source_clips(args: argparse.Namespace, folder: Path) -> list[Clip]:
    """The clips of this run: fixtures (four with ``--quick``), espeak-ng sentences, ``--data`` corpora."""
    fixtures = sorted(FIXTURES.glob("*/*.flac"))
    if getattr(args, "quick", False):
        fixtures = fixtures[:: len(fixtures) // QUICK_CLIPS][:QUICK_CLIPS]
    clips = [Clip(name=f"fixture/{p.name}", samples=load_mono(p, SAMPLE_RATE_HZ).astype(np.float64)) for p in fixtures]
    if getattr(args, "quick", False):
        return clips
    clips += espeak_clips(folder)
    for root in getattr(args, "data", None) or []:
        clips += corpus_clips(Path(root), int(getattr(args, "stability_clips", 60)))
    return clips


def model_variants(requested: list[str] | None) -> dict[str, EmotionModel]:
    """Models by label: the requested ones, else fast, accurate as shipped and accurate with the other embedding."""
    if requested:
        return {name: EmotionModel.load(name) for name in requested}
    models: dict[str, EmotionModel] = {}
    for name in available_models():
        model = EmotionModel.load(name)
        models[name] = model
        embedding = model.metadata.feature_config.embedding
        if embedding is not None:
            other = dataclasses.replace(embedding, int8=not embedding.int8)
            label = f"{name}, embedding={'int8' if other.int8 else 'float'} (same head)"
            models[label] = with_embedding(name, other)
    return models


def with_embedding(name: str, embedding: Any) -> EmotionModel:
    """Model ``name`` with its feature config's speech embedding replaced (the head unchanged)."""
    path = resolve_model(name)
    meta = ModelMetadata.load(path)
    features = dataclasses.replace(meta.feature_config, embedding=embedding)
    return EmotionModel(dataclasses.replace(meta, feature_config=features), path.parent / meta.tflite_file)


def read(path: Path, plan: SessionPlan) -> Reading:
    """``analyze``'s label and scores of ``path``, and its speech windows' probabilities."""
    started = time.process_time()
    res = analyze_file(path, plan)
    cpu_s = time.process_time() - started
    model = plan.model
    n_labels = len(model.labels)
    rows = []
    with MonoStream(path, plan.file_timing.sample_rate_hz) as stream:
        for windows in stream_windows(stream, plan):
            rows += [w.features for w in windows if w.is_speech]
    if rows:
        inputs = model.select(np.stack(rows))
        meta = model.metadata
        probs = model.predict_normalised(((inputs - meta.norm_mean) / meta.norm_std).astype(np.float32))
    else:
        probs = np.zeros((0, n_labels), dtype=np.float32)
    scores = np.zeros(n_labels) if res.scores is None else np.array([res.scores[k] for k in model.labels])
    return Reading(label=res.emotion, scores=scores, windows=probs.astype(np.float64), cpu_s=cpu_s)


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="emostream-stability-") as name:
        yield Path(name)


def write_wav(folder: Path, name: str, samples: FloatArray) -> Path:
    """``samples`` as a float32 WAV file (so every value reaches the reader unchanged)."""
    path = folder / f"{name}.wav"
    sf.write(path, samples.astype(np.float32), SAMPLE_RATE_HZ, subtype="FLOAT")
    return path


@dataclass
class PairCount:
    """Changes counted over the clips for one model and pair."""

    files_changed: int = 0
    files: int = 0
    windows_changed: int = 0
    windows: int = 0
    max_abs_diff: float = 0.0
    changed_clips: list[str] = field(default_factory=list)

    def add(self, clip: str, ref: Reading, new: Reading) -> None:
        self.files += 1
        if ref.label != new.label:
            self.files_changed += 1
            self.changed_clips.append(f"{clip}: {ref.label} -> {new.label}")
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(ref.scores - new.scores).max()))
        if ref.windows.shape == new.windows.shape:
            self.windows += ref.windows.shape[0]
            if ref.windows.size:
                self.windows_changed += int((ref.windows.argmax(axis=1) != new.windows.argmax(axis=1)).sum())
                self.max_abs_diff = max(self.max_abs_diff, float(np.abs(ref.windows - new.windows).max()))
        else:  # the VAD kept a different number of speech windows: count them all as changed
            n = max(ref.windows.shape[0], new.windows.shape[0])
            self.windows += n
            self.windows_changed += n
            self.max_abs_diff = 1.0


def measure(
    model: EmotionModel, clips: list[Clip], files: dict[str, dict[str, Path]]
) -> tuple[dict[str, PairCount], float]:
    """Counts per pair, and CPU seconds per audio second of the reference pass of ``gain 0.999``."""
    plan = make_plan(Config(labels=LabelsConfig(show="all")), model)  # the model's own labels
    counts = {pair: PairCount() for pair in PAIRS}
    cpu_s = 0.0
    audio_s = 0.0
    for clip in clips:
        paths = files[clip.name]
        refs: dict[Path, Reading] = {}
        for pair in PAIRS:
            key = paths[f"{pair}:ref"]
            if key not in refs:
                refs[key] = read(key, plan)
                if pair == "gain 0.999":
                    cpu_s += refs[key].cpu_s
                    audio_s += clip.samples.size / SAMPLE_RATE_HZ
            counts[pair].add(clip.name, refs[key], read(paths[f"{pair}:new"], plan))
    return counts, cpu_s / max(audio_s, 1e-9)


def write_pairs(clips: list[Clip], folder: Path) -> dict[str, dict[str, Path]]:
    """Each clip's reference and changed signals as files: ``{clip: {"PAIR:ref": path, "PAIR:new": path}}``."""
    files: dict[str, dict[str, Path]] = {}
    for i, clip in enumerate(clips):
        entry: dict[str, Path] = {}
        written: dict[bytes, Path] = {}
        for p, (make_ref, make_new) in enumerate(PAIRS.values()):
            for role, make in (("ref", make_ref), ("new", make_new)):
                samples = make(clip.samples)
                digest = samples.astype(np.float32).tobytes()
                if digest not in written:
                    written[digest] = write_wav(folder, f"{i}_{p}_{role}", samples)
                entry[f"{list(PAIRS)[p]}:{role}"] = written[digest]
        files[clip.name] = entry
    return files


def table(rows: list[tuple[str, str, PairCount]], cpu: dict[str, float]) -> str:
    """The printed table: one line per model and pair."""
    head = (
        f"{'model':44} {'change':22} {'file labels':>12} {'window labels':>14} {'max |dp|':>9} {'CPU ms/audio s':>15}"
    )
    lines = [head, "-" * len(head)]
    for model, pair, c in rows:
        lines.append(
            f"{model:44} {pair:22} {f'{c.files_changed}/{c.files}':>12} {f'{c.windows_changed}/{c.windows}':>14} "
            f"{c.max_abs_diff:9.4f} {1000.0 * cpu[model]:15.2f}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = model_variants(getattr(args, "models", None))
    with scratch_folder() as folder:
        clips = source_clips(args, folder)
        files = write_pairs(clips, folder)
        rows: list[tuple[str, str, PairCount]] = []
        cpu: dict[str, float] = {}
        for label, model in models.items():
            counts, cpu[label] = measure(model, clips, files)
            rows += [(label, pair, c) for pair, c in counts.items()]
    print(f"stability: {len(clips)} clips, {sum(c.samples.size for c in clips) / SAMPLE_RATE_HZ:.0f} s of speech")
    print(table(rows, cpu))
    figures = []
    for label, pair, c in rows:
        figures.append(
            figure(f"{label}: {pair}: file labels changed", c.files_changed, target=0, note=f"of {c.files} clips")
        )
        figures.append(
            figure(
                f"{label}: {pair}: window labels changed",
                c.windows_changed,
                target=0,
                note=f"of {c.windows}; max |dp| {c.max_abs_diff:.3f}",
            )
        )
    for label, value in cpu.items():
        figures.append(figure(f"{label}: CPU per audio second (analyze path)", round(1000.0 * value, 3), "ms"))
    details = {
        "clips": [c.name for c in clips],
        "rows": [{"model": m, "pair": p, **dataclasses.asdict(c)} for m, p, c in rows],
        "cpu_s_per_audio_s": cpu,
    }
    return result("stability", figures, details)
