"""Batch analysis of recorded calls: ``emostream calls DIR_OR_FILES --jobs N --out DIR``.

Each call file (WAV/FLAC/OGG, any rate, G.711 WAV included; one party per channel) is
read whole, resampled to the model's rate and run through one
:class:`~emostream.engine.pipeline.ChannelPipeline` per channel at full speed, with the
``[[alerts]]`` rules of the config. Roles come from ``[[channels]]``; without them a
stereo call is channel 0 = ``customer``, channel 1 = ``agent`` and a mono call is
``mixed``. Agent channels are only metered unless ``[privacy] allow_agent_analysis``.

Per call ``OUT/<call>.json`` (per channel: speech time, share per emotion, peaks,
alerts, a coarse timeline) and ``OUT/<call>.png`` (emotion over time per channel; needs
matplotlib: ``pip install 'emostream[calls]'``); per batch ``OUT/calls.csv`` (one row
per call and channel) and ``OUT/batch_summary.json``. A call whose JSON exists and
records the input's current size and mtime is skipped (resume). An unreadable file is
reported, skipped and listed; the command then exits with status 3. No audio is written.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from emostream.alerts.rules import AlertRules
from emostream.audio.files import read_audio, resample
from emostream.config import ChannelPlan, Config, channel_plan
from emostream.config import summary as config_summary
from emostream.engine.events import HopResult
from emostream.engine.pipeline import ChannelPipeline
from emostream.errors import AudioInputError, ConfigError, EmoStreamError
from emostream.inference.metadata import ModelMetadata, resolve_model
from emostream.inference.model import EmotionModel

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".au", ".aiff", ".aif"})
STEREO_ROLES: tuple[str, ...] = ("customer", "agent")
MONO_ROLES: tuple[str, ...] = ("mixed",)
SUMMARY_VERSION = 1
CHUNK_S = 10.0
CLI_DESCRIPTION = (
    "Analyse recorded calls (WAV/FLAC/OGG, G.711 WAV included; one party per channel) at full speed, one "
    "pipeline per channel, with the config's alert rules. Without [[channels]], a stereo call is channel 0 = "
    "customer, channel 1 = agent (metered, not analysed unless [privacy] allow_agent_analysis); mono = 'mixed'. "
    "Writes OUT/<call>.json, OUT/<call>.png, OUT/calls.csv and OUT/batch_summary.json; calls already "
    "summarised (same size and mtime) are skipped."
)
FINGERPRINT_SECTIONS = ("model", "vad", "windowing", "smoothing", "channels", "privacy", "alerts")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PNG_HINT = "timeline PNGs need matplotlib: `pip install 'emostream[calls]'`; writing JSON and CSV only"


@dataclass(frozen=True)
class BatchOptions:
    """What every worker needs: settings, output folder, timeline bin (s) and whether to draw PNGs."""

    cfg: Config
    out_dir: Path
    bin_s: float = 10.0
    png: bool = True
    fingerprint: str = ""  # settings_fingerprint(), recorded in each summary for resume


@dataclass(frozen=True)
class CallJob:
    """One input file and the name of its outputs (``OUT/<key>.json``)."""

    path: Path
    key: str


# ---------------------------------------------------------------- one call


class CallAnalyzer:
    """Loads the model once and analyses call files with it (one per worker process)."""

    def __init__(self, options: BatchOptions) -> None:
        cfg = options.cfg
        self.options = options
        self.model = EmotionModel.load(cfg.model.name, cfg.model.num_threads)
        self.vad = cfg.vad.resolve(self.model.metadata.vad_config)
        self.features = cfg.windowing.resolve(self.model.metadata.feature_config, self.vad)
        self.rules = [a.to_rule() for a in cfg.alerts]
        AlertRules(self.rules, self.model.labels)  # fail early on unknown emotions

    def analyze(self, job: CallJob) -> tuple[dict[str, Any], list[ChannelRun]]:
        """Summary dict of one call (see :func:`summarize`) and its channel runs; AudioInputError if unreadable."""
        samples, rate = read_audio(job.path)
        n_channels = samples.shape[1]
        defaults = STEREO_ROLES if n_channels == 2 else MONO_ROLES
        plans = channel_plan(self.options.cfg, n_channels, defaults, strict=False)
        audio = resample(samples, rate, self.features.sample_rate_hz)
        if audio.ndim == 1:
            audio = audio[:, None]
        rules = AlertRules(self.rules, self.model.labels)
        channels = [self._channel(audio[:, p.index], p, rules) for p in plans]
        summary = summarize(
            job, rate, samples.shape[0] / rate, channels, labels=self.model.labels, bin_s=self.options.bin_s
        )
        summary["model"] = self.model.metadata.name
        summary["settings"] = self.options.fingerprint
        return summary, channels

    def _channel(self, signal: np.ndarray, plan: ChannelPlan, rules: AlertRules) -> ChannelRun:
        pipeline = ChannelPipeline(
            self.model,
            self.vad,
            self.options.cfg.smoothing,
            channel=plan.index,
            role=plan.role,
            analysed=plan.analysed,
            feature_cfg=self.features,
        )
        step = int(CHUNK_S * self.features.sample_rate_hz)
        hops: list[HopResult] = []
        for start in range(0, signal.shape[0], step):
            hops += pipeline.process(signal[start : start + step])
        hops += pipeline.flush()
        alerts = [e.to_json() for hop in hops for e in rules.process(hop)]
        return ChannelRun(plan=plan, pipeline=pipeline, hops=hops, alerts=alerts)


@dataclass
class ChannelRun:
    """One channel's results: its plan, finished pipeline, every hop and its alert events."""

    plan: ChannelPlan
    pipeline: ChannelPipeline
    hops: list[HopResult]
    alerts: list[dict[str, Any]]


def summarize(
    job: CallJob,
    rate_hz: int,
    duration_s: float,
    runs: Sequence[ChannelRun],
    *,
    labels: Sequence[str],
    bin_s: float,
) -> dict[str, Any]:
    """The call's summary JSON: input identity (for resume), duration and one entry per channel."""
    stat = job.path.stat()
    return {
        "version": SUMMARY_VERSION,
        "call": job.key,
        "input": {"path": str(job.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "rate_hz": rate_hz,
        "duration_s": round(duration_s, 3),
        "channels": [_channel_summary(run, labels, bin_s, duration_s) for run in runs],
    }


def _channel_summary(run: ChannelRun, labels: Sequence[str], bin_s: float, duration_s: float) -> dict[str, Any]:
    totals = run.pipeline.summary()
    speech = [h for h in run.hops if h.is_speech and h.smoothed is not None]
    peaks = {}
    for label in labels if run.plan.analysed else ():
        best = max(speech, key=lambda h: (h.smoothed or {}).get(label, 0.0), default=None)
        if best is not None and best.smoothed is not None:
            peaks[label] = {"score": round(best.smoothed[label], 4), "t": round(best.t_end, 3)}
    hop_s = run.pipeline.hop_s
    emotion_s: dict[str, float] = {}
    for h in speech:
        if h.emotion is not None:
            emotion_s[h.emotion] = emotion_s.get(h.emotion, 0.0) + hop_s
    total = sum(emotion_s.values())
    shares = {k: v / total for k, v in emotion_s.items()} if total > 0 else {}
    return {
        "channel": run.plan.index,
        "role": run.plan.role,
        "name": run.plan.name,
        "analysed": run.plan.analysed,
        "speech_s": round(totals.speech_seconds, 3),
        "emotion_s": {k: round(v, 3) for k, v in emotion_s.items()},
        "shares": {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
        "dominant": max(shares, key=lambda k: shares[k]) if shares else None,
        "peaks": peaks,
        "alerts": run.alerts,
        "timeline": _timeline(run.hops, labels, bin_s, duration_s, hop_s=hop_s, analysed=run.plan.analysed),
    }


def _timeline(
    hops: Sequence[HopResult], labels: Sequence[str], bin_s: float, duration_s: float, *, hop_s: float, analysed: bool
) -> list[dict[str, Any]]:
    """Bins of ``bin_s`` seconds: speech time, the most shown emotion and mean smoothed scores."""
    n_bins = max(1, math.ceil(duration_s / bin_s))
    ends = [h.t_end for h in hops]  # increasing
    bins: list[dict[str, Any]] = []
    for b in range(n_bins):
        lo, hi = b * bin_s, min((b + 1) * bin_s, duration_s)
        first = bisect.bisect_right(ends, lo)
        last = len(hops) if b == n_bins - 1 else bisect.bisect_right(ends, hi)
        inside = hops[first:last]
        entry: dict[str, Any] = {"t_start": round(lo, 3), "t_end": round(hi, 3)}
        entry["speech_s"] = round(sum(h.speech_ratio for h in inside) * hop_s, 3)
        if analysed:
            shown = [h.emotion for h in inside if h.is_speech and h.emotion is not None]
            # most shown; a tie goes to the label shown last (max keeps the first maximum it meets).
            # Not max(set(...)): set order follows string hashing, which differs between processes.
            entry["emotion"] = max(reversed(shown), key=shown.count) if shown else None
            speech = [h.smoothed for h in inside if h.is_speech and h.smoothed is not None]
            entry["scores"] = {k: round(float(np.mean([s[k] for s in speech])), 4) for k in labels} if speech else None
        bins.append(entry)
    return bins


def plot_call(summary: dict[str, Any], runs: Sequence[ChannelRun], labels: Sequence[str], path: Path) -> None:
    """Timeline PNG: one panel per channel, smoothed score per emotion over time, alert spans shaded."""
    import matplotlib  # noqa: PLC0415 - optional dependency (emostream[calls])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.2 * len(runs) + 0.6), sharex=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, run in zip(axes[:, 0], runs, strict=True):
        t = np.array([h.t_end for h in run.hops])
        speech = np.array([h.is_speech for h in run.hops], dtype=bool)
        ax.fill_between(t, 0, 1, where=speech, color="0.92", step="pre", label="speech")
        if run.plan.analysed:
            for i, label in enumerate(labels):
                y = np.array([(h.smoothed or {}).get(label, np.nan) if h.is_speech else np.nan for h in run.hops])
                ax.plot(t, y, color=colors(i % 10), lw=1.2, label=label)
            for start, end in alert_spans(run.alerts, summary["duration_s"]):
                ax.axvspan(start, end, color="red", alpha=0.15)
        else:
            ax.text(0.5, 0.5, f"{run.plan.role}: not analysed", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0, 1)
        ax.set_xlim(0, summary["duration_s"])
        ax.set_ylabel(run.plan.name, fontsize=8)
    axes[0, 0].legend(loc="upper right", fontsize=6, ncol=5)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"{summary['call']} ({summary['duration_s']:.0f} s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def alert_spans(alerts: Sequence[dict[str, Any]], duration_s: float) -> list[tuple[float, float]]:
    """(start, end) of each fired alert: from its run's start until it cleared (or the end of the call)."""
    spans: list[tuple[float, float]] = []
    open_at: dict[str, float] = {}
    for alert in alerts:
        if alert["state"] == "fired":
            open_at[alert["rule"]] = alert["t_start"]
        elif alert["rule"] in open_at:
            spans.append((open_at.pop(alert["rule"]), alert["t_end"]))
    return spans + [(start, duration_s) for start in open_at.values()]


# ---------------------------------------------------------------- worker processes

_ANALYZER: CallAnalyzer | None = None


def _init_worker(options: BatchOptions) -> None:
    global _ANALYZER  # noqa: PLW0603 - one analyzer (and model) per worker process
    _ANALYZER = CallAnalyzer(options)


def _run_job(job: CallJob) -> tuple[CallJob, dict[str, Any] | None, str | None]:
    """Analyse one call in a worker, write its JSON (and PNG); returns (job, summary, error)."""
    if _ANALYZER is None:
        raise RuntimeError("worker not initialised")
    return process_call(_ANALYZER, job)


def process_call(analyzer: CallAnalyzer, job: CallJob) -> tuple[CallJob, dict[str, Any] | None, str | None]:
    """Analyse and write one call; an unreadable input becomes an error message, not an exception."""
    try:
        summary, runs = analyzer.analyze(job)
    except (EmoStreamError, OSError) as exc:
        return job, None, str(exc)
    out = analyzer.options.out_dir
    if analyzer.options.png:
        plot_call(summary, runs, analyzer.model.labels, out / f"{job.key}.png")
    _write_json_atomic(out / f"{job.key}.json", summary)
    return job, summary, None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- the batch


def find_calls(inputs: Sequence[str | Path]) -> list[CallJob]:
    """Call files named or found (recursively, by audio suffix) under ``inputs``, with unique output keys.

    A named path that does not exist raises ConfigError; an empty result too.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder; give call recordings or folders holding them")
    if not files:
        raise ConfigError(
            f"no call recordings found in {', '.join(map(str, inputs))} (looked for {sorted(AUDIO_SUFFIXES)})"
        )
    jobs: list[CallJob] = []
    used: set[str] = set()
    for path in dict.fromkeys(files):
        key = base = path.stem
        n = 1
        while key in used:
            n += 1
            key = f"{base}-{n}"
        used.add(key)
        jobs.append(CallJob(path=path, key=key))
    return jobs


def settings_fingerprint(options: BatchOptions) -> str:
    """Hash of what determines a summary: the model file, the analysis settings and the timeline bin."""
    meta = ModelMetadata.load(resolve_model(options.cfg.model.name))
    relevant = {k: v for k, v in config_summary(options.cfg).items() if k in FINGERPRINT_SECTIONS}
    blob = json.dumps({"model": meta.sha256, "cfg": relevant, "bin_s": options.bin_s}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_done(job: CallJob, out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The existing summary of ``job`` if it was made from the input's current size and mtime with
    the same model and settings (``fingerprint``), else None."""
    try:
        summary = json.loads((out_dir / f"{job.key}.json").read_text(encoding="utf-8"))
        stat = job.path.stat()
        ident = summary["input"]
        same_input = (ident["size"], ident["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
        if summary.get("version") == SUMMARY_VERSION and same_input and summary.get("settings") == fingerprint:
            return dict(summary)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


@dataclass
class BatchResult:
    """Outcome of a batch: summaries by key, skipped (resumed) keys and failures (path, error)."""

    summaries: dict[str, dict[str, Any]]
    skipped: list[str]
    failed: list[tuple[str, str]]
    elapsed_s: float

    @property
    def exit_code(self) -> int:
        """0 when every call was summarised, else the unreadable-audio code (3)."""
        return AudioInputError.exit_code if self.failed else 0


def run_batch(
    inputs: Sequence[str | Path],
    options: BatchOptions,
    jobs: int = 1,
    progress: bool = True,
    in_process: bool | None = None,
) -> BatchResult:
    """Analyse every call, resume finished ones, write the CSV and the batch summary.

    ``jobs`` worker processes, each with one BLAS thread; ``in_process`` (default: when
    ``jobs == 1``) analyses in this process instead, with its BLAS threading as it is.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs is {jobs}; expected 1 or more worker processes")
    calls = find_calls(inputs)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    if options.png and importlib.util.find_spec("matplotlib") is None:
        print(f"emostream: warning: {PNG_HINT}", file=sys.stderr, flush=True)
        options = dataclasses.replace(options, png=False)
    started = time.perf_counter()
    fingerprint = settings_fingerprint(options)
    options = dataclasses.replace(options, fingerprint=fingerprint)
    summaries: dict[str, dict[str, Any]] = {}
    todo: list[CallJob] = []
    for job in calls:
        done = load_done(job, options.out_dir, fingerprint)
        if done is None:
            todo.append(job)
        else:
            summaries[job.key] = done
    skipped = list(summaries)
    failed: list[tuple[str, str]] = []
    with _progress(len(calls), len(skipped), progress) as advance:
        local = jobs == 1 if in_process is None else in_process
        for job, summary, error in _execute(todo, options, jobs, local):
            if summary is not None:
                summaries[job.key] = summary
            else:
                failed.append((str(job.path), error or "unknown error"))
                print(f"emostream: error: {job.path}: skipped ({error})", file=sys.stderr, flush=True)
            advance()
    result = BatchResult(summaries, skipped, failed, time.perf_counter() - started)
    write_reports(calls, result, options, jobs)
    return result


def _execute(
    todo: Sequence[CallJob], options: BatchOptions, jobs: int, in_process: bool
) -> Iterator[tuple[CallJob, dict[str, Any] | None, str | None]]:
    if not todo:
        return
    if in_process:
        analyzer = CallAnalyzer(options)
        for job in todo:
            yield process_call(analyzer, job)
        return
    context = get_context("spawn")  # no fork: the parent may run threads (progress bar)
    with (
        _single_threaded_children(),
        ProcessPoolExecutor(
            min(jobs, len(todo)), mp_context=context, initializer=_init_worker, initargs=(options,)
        ) as pool,
    ):
        futures = [pool.submit(_run_job, job) for job in todo]
        for future in as_completed(futures):
            yield future.result()


@contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Workers inherit one BLAS/OpenMP thread each (N workers = N cores; no oversubscription)."""
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    for key in THREAD_ENV:
        os.environ.setdefault(key, "1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _progress:  # noqa: N801 - used like a function
    """A rich progress bar on stderr (or nothing); ``advance()`` after each call."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total, self.done = total, done

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

        self._bar = Progress(
            TextColumn("calls"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=Console(stderr=True)
        )
        self._bar.__enter__()
        task = self._bar.add_task("calls", total=self.total, completed=self.done)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(None, None, None)


CSV_FIXED = (
    "call",
    "path",
    "status",
    "error",
    "duration_s",
    "channel",
    "role",
    "analysed",
    "speech_s",
    "dominant",
    "alerts",
)


def write_reports(calls: Sequence[CallJob], result: BatchResult, options: BatchOptions, jobs: int) -> None:
    """``calls.csv`` (one row per call and channel, failures included) and ``batch_summary.json``."""
    labels = _labels(result.summaries.values())
    failed = dict(result.failed)
    rows: list[dict[str, Any]] = []
    for job in calls:
        summary = result.summaries.get(job.key)
        if summary is None:
            rows.append({"call": job.key, "path": str(job.path), "status": "error", "error": failed.get(str(job.path))})
            continue
        status = "skipped" if job.key in result.skipped else "ok"
        for ch in summary["channels"]:
            row = {
                "call": job.key,
                "path": str(job.path),
                "status": status,
                "error": "",
                "duration_s": summary["duration_s"],
                "channel": ch["channel"],
                "role": ch["role"],
                "analysed": ch["analysed"],
                "speech_s": ch["speech_s"],
                "dominant": ch["dominant"] or "",
                "alerts": sum(1 for a in ch["alerts"] if a["state"] == "fired"),
            }
            row |= {f"share_{k}": ch["shares"].get(k, 0.0) if ch["analysed"] else "" for k in labels}
            row |= {f"peak_{k}": ch["peaks"][k]["score"] if k in ch["peaks"] else "" for k in labels}
            rows.append(row)
    columns = [*CSV_FIXED, *(f"share_{k}" for k in labels), *(f"peak_{k}" for k in labels)]
    with (options.out_dir / "calls.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    processed = len(result.summaries) - len(result.skipped)
    batch = {
        "inputs": len(calls),
        "processed": processed,
        "skipped": len(result.skipped),
        "failed": [{"path": p, "error": e} for p, e in result.failed],
        "jobs": jobs,
        "model": options.cfg.model.name,
        "elapsed_s": round(result.elapsed_s, 3),
        "calls_per_minute": round(60.0 * processed / result.elapsed_s, 3) if processed and result.elapsed_s else None,
        "png": options.png,
        "calls": [
            {"call": j.key, "path": str(j.path), "json": f"{j.key}.json" if j.key in result.summaries else None}
            for j in calls
        ],
    }
    _write_json_atomic(options.out_dir / "batch_summary.json", batch)


def _labels(summaries: Any) -> list[str]:
    labels: dict[str, None] = {}
    for summary in summaries:
        for ch in summary["channels"]:
            labels |= dict.fromkeys(ch["peaks"])
            labels |= dict.fromkeys(ch["shares"])
    from emostream.inference.metadata import EMOTIONS  # noqa: PLC0415

    return [e for e in EMOTIONS if e in labels] + sorted(k for k in labels if k not in EMOTIONS)


# ---------------------------------------------------------------- command line


def register(sub: Any) -> None:
    """Add ``emostream calls`` to the CLI (entry point of the ``emostream.commands`` group)."""
    parser = sub.add_parser(
        "calls",
        help="batch-analyse recorded calls (one summary per call, CSV, PNG)",
        description=CLI_DESCRIPTION,
        epilog="Exit status 3 if any call could not be read (listed in batch_summary.json). See docs/call_center.md.",
    )
    parser.add_argument("inputs", nargs="+", metavar="DIR_OR_FILE", help="call recordings or folders of them")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the summaries, PNGs and CSV")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--bin-s", type=float, default=10.0, help="seconds per timeline bin in the summaries")
    parser.add_argument("--no-png", action="store_true", help="do not draw timeline PNGs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--model", help="shipped model name or path to a model .json/.tflite")
    parser.add_argument("--threads", type=int, help="CPU threads per worker's model (default 1)")
    parser.add_argument("--config", help="settings file ([[channels]], [privacy], [[alerts]], ...)")
    parser.set_defaults(func=cmd_calls)


def cmd_calls(args: argparse.Namespace) -> int:
    """``emostream calls``: run the batch and print a one-line result; exit 3 if any call failed."""
    from emostream.apps.cli import config_from_args  # noqa: PLC0415

    if args.bin_s <= 0:
        raise ConfigError(f"--bin-s is {args.bin_s}; expected a positive number of seconds such as 10")
    options = BatchOptions(cfg=config_from_args(args), out_dir=Path(args.out), bin_s=args.bin_s, png=not args.no_png)
    # Always in worker processes: one BLAS thread each (faster than a multi-threaded BLAS on small matrices).
    result = run_batch(args.inputs, options, jobs=args.jobs, progress=not args.no_progress, in_process=False)
    processed = len(result.summaries) - len(result.skipped)
    print(
        f"{processed} call(s) analysed, {len(result.skipped)} already done, {len(result.failed)} failed "
        f"in {result.elapsed_s:.1f} s -> {options.out_dir}/calls.csv"
    )
    return result.exit_code
