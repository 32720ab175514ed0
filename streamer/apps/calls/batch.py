"""The batch runner of ``emostream calls``: finding calls, resuming, worker processes, progress.

Each call is analysed by :class:`~emostream.apps.calls.analysis.CallAnalyzer` (one per
worker process, the model loaded once), written as ``OUT/<call>.json`` (and ``.png``),
and the batch ends with ``OUT/calls.csv`` and ``OUT/batch_summary.json``. A call whose
JSON exists and records the input's current size and mtime and the same settings is
skipped (resume). An unreadable file is reported, skipped and listed.

Where the calls run is an :class:`Executor`: worker processes on this machine
(:class:`ProcessPool`, ``--jobs N``) or Ray tasks (:mod:`~emostream.apps.calls.cluster`,
``--ray``); finding, resuming, progress, interruption and the reports are the same for both.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from emostream.apps.calls.analysis import SUMMARY_VERSION, CallAnalyzer, CallJob
from emostream.apps.calls.reports import plot_call, write_json_atomic, write_reports
from emostream.audio.files import AUDIO_SUFFIXES, audio_files_in, suffix_list
from emostream.config import Config
from emostream.config import summary as config_summary
from emostream.engine.plan import make_plan
from emostream.errors import AudioInputError, ConfigError, EmoStreamError
from emostream.inference.metadata import ModelMetadata, resolve_model

__all__ = [
    "AUDIO_SUFFIXES",
    "BatchOptions",
    "BatchResult",
    "Executor",
    "Outcome",
    "ProcessPool",
    "analyse_call",
    "find_calls",
    "process_call",
    "run_batch",
    "save_call",
]
EXIT_INTERRUPTED = 130
PR_SET_PDEATHSIG = 1  # Linux prctl: a signal for this process when its parent dies
WORKER_STOP_S = 3.0
FINGERPRINT_SECTIONS = (
    "model",
    "labels",
    "vad",
    "windowing",
    "smoothing",
    "calibration",
    "channels",
    "privacy",
    "alerts",
)
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


_ANALYZER: CallAnalyzer | None = None
_OPTIONS: BatchOptions | None = None


def _init_worker(options: BatchOptions) -> None:
    global _ANALYZER, _OPTIONS  # noqa: PLW0603 - one analyzer (and model) per worker process
    _follow_parent()
    _ANALYZER = CallAnalyzer(options.cfg, options.bin_s, options.fingerprint)
    _OPTIONS = options


def _follow_parent() -> None:
    """In a worker: Ctrl-C is the parent's to handle, and the worker dies with its parent (no orphans)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() == 1:  # the parent is already gone
                os._exit(1)


Outcome = tuple[CallJob, dict[str, Any] | None, str | None]  # (job, summary, error): one of the last two is None


def _run_job(job: CallJob) -> Outcome:
    """Analyse one call in a worker, write its JSON (and PNG); returns (job, summary, error)."""
    if _ANALYZER is None or _OPTIONS is None:
        raise RuntimeError("worker not initialised")
    return process_call(_ANALYZER, job, _OPTIONS)


def process_call(analyzer: CallAnalyzer, job: CallJob, options: BatchOptions) -> Outcome:
    """Analyse and write one call; an unreadable input becomes an error message, not an exception."""
    summary, png, error = analyse_call(analyzer, job, png=options.png)
    if summary is None:
        return job, None, error
    return save_call(job, summary, png, options.out_dir)


def analyse_call(
    analyzer: CallAnalyzer, job: CallJob, *, png: bool
) -> tuple[dict[str, Any] | None, bytes | None, str | None]:
    """(summary, timeline PNG bytes or None, None), or (None, None, error message) if the call cannot be analysed.

    Writes nothing: the caller saves the result (:func:`save_call`), in the worker or, on Ray, in the driver.
    """
    try:
        summary, runs = analyzer.analyze(job)
        image = None
        if png:
            buffer = io.BytesIO()
            plot_call(summary, runs, analyzer.labels, buffer)
            image = buffer.getvalue()
    except (EmoStreamError, OSError) as exc:
        return None, None, str(exc)
    except Exception as exc:  # a bug must not end the batch: this call fails, the others go on
        return None, None, f"internal error while analysing it ({type(exc).__name__}: {exc}); please report it"
    return summary, image, None


def save_call(job: CallJob, summary: dict[str, Any], png: bytes | None, out_dir: Path) -> Outcome:
    """Write ``OUT/<key>.png`` (if drawn) and then ``OUT/<key>.json`` (atomically: a JSON means the call is done)."""
    try:
        if png is not None:
            (out_dir / f"{job.key}.png").write_bytes(png)
        write_json_atomic(out_dir / f"{job.key}.json", summary)
    except OSError as exc:
        return job, None, str(exc)
    return job, summary, None


def find_calls(inputs: Sequence[str | Path]) -> list[CallJob]:
    """Call files named or found (recursively, by audio suffix) under ``inputs``, with unique output keys.

    A named path that does not exist raises ConfigError; an empty result too.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += audio_files_in(path)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder; give call recordings or folders holding them")
    if not files:
        raise ConfigError(f"no call recordings found in {', '.join(map(str, inputs))} (looked for {suffix_list()})")
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
    interrupted: bool = False
    total: int = 0  # calls in the batch

    @property
    def exit_code(self) -> int:
        """0 when every call was summarised, 130 when interrupted, else the unreadable-audio code (3)."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        return AudioInputError.exit_code if self.failed else 0


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and check that files can be written there; ConfigError (exit 2) if not."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is an existing file; expected a folder for the summaries: give a new path")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"--out {out_dir} cannot be used as the output folder ({reason}); "
            "expected a folder you can write to: give another path"
        ) from exc


class Executor(Protocol):
    """Where the calls of a batch run: yields one :data:`Outcome` per call of ``todo`` as each finishes.

    ``jobs`` is how many calls it analyses at once (recorded in ``batch_summary.json``). On
    KeyboardInterrupt, or when the generator is closed, it stops its workers before it returns.
    """

    jobs: int

    def run(self, todo: Sequence[CallJob], options: BatchOptions) -> Generator[Outcome, None, None]:
        """Analyse and save every call of ``todo`` (none of them done yet)."""
        ...


@dataclass
class ProcessPool:
    """``jobs`` spawned worker processes on this machine (one BLAS thread each), or this process (``in_process``)."""

    jobs: int = 1
    in_process: bool = False

    def run(self, todo: Sequence[CallJob], options: BatchOptions) -> Generator[Outcome, None, None]:
        """See :class:`Executor`."""
        return _execute(todo, options, self.jobs, self.in_process)


def run_batch(
    inputs: Sequence[str | Path],
    options: BatchOptions,
    jobs: int = 1,
    progress: bool = True,
    in_process: bool | None = None,
    *,
    executor: Executor | None = None,
) -> BatchResult:
    """Analyse every call, resume finished ones, write the CSV and the batch summary.

    ``jobs`` worker processes, each with one BLAS thread; ``in_process`` (default: when
    ``jobs == 1``) analyses in this process instead, with its BLAS threading as it is.
    ``executor`` runs the calls elsewhere instead (e.g. on Ray); ``jobs`` and ``in_process`` are then unused.
    """
    if executor is None:
        if jobs < 1:
            raise ConfigError(f"--jobs is {jobs}; expected 1 or more worker processes")
        executor = ProcessPool(jobs, jobs == 1 if in_process is None else in_process)
    calls = find_calls(inputs)
    make_plan(options.cfg)  # the model and settings checked once here (ModelError: exit 5, as live) before any worker
    prepare_out_dir(options.out_dir)
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
    interrupted = False
    try:
        with (
            _progress(len(calls), len(skipped), progress) as advance,
            contextlib.closing(executor.run(todo, options)) as outcomes,
        ):
            for job, summary, error in outcomes:
                if summary is not None:
                    summaries[job.key] = summary
                else:
                    message = error or "unknown error"
                    failed.append((str(job.path), message))
                    named = message if message.startswith(f"{job.path}:") else f"{job.path}: {message}"
                    print(f"emostream: error: {named} (call skipped)", file=sys.stderr, flush=True)
                advance()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the CLI's handler: workers stopped, partial reports
        interrupted = True
    result = BatchResult(summaries, skipped, failed, time.perf_counter() - started, interrupted, len(calls))
    model = options.cfg.model.name
    write_reports(calls, result, out_dir=options.out_dir, model=model, png=options.png, jobs=executor.jobs)
    return result


def _execute(
    todo: Sequence[CallJob], options: BatchOptions, jobs: int, in_process: bool
) -> Generator[Outcome, None, None]:
    if not todo:
        return
    if in_process:
        analyzer = CallAnalyzer(options.cfg, options.bin_s, options.fingerprint)
        for job in todo:
            yield process_call(analyzer, job, options)
        return
    context = get_context("spawn")  # no fork: the parent may run threads (progress bar)
    with _single_threaded_children(), _sigint_ignored():  # workers start ignoring Ctrl-C: the parent stops them
        pool = ProcessPoolExecutor(
            min(jobs, len(todo)), mp_context=context, initializer=_init_worker, initargs=(options,)
        )
        futures = {pool.submit(_run_job, job): job for job in todo}
    try:
        for future in as_completed(futures):
            yield _outcome(future, futures[future])
    except BaseException:  # Ctrl-C, SIGTERM or the consumer stopping: no worker outlives the batch
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _outcome(future: Future[Any], job: CallJob) -> Outcome:
    """A worker's result, or a per-call error when the worker crashed or raised."""
    try:
        result: Outcome = future.result()
    except BrokenProcessPool as exc:
        return (
            job,
            None,
            (
                f"the worker process stopped unexpectedly ({exc}); the call was not analysed: run the batch again "
                "(finished calls are kept), or with --jobs 1"
            ),
        )
    except Exception as exc:
        return job, None, f"analysis failed in the worker ({type(exc).__name__}: {exc}); please report it"
    return result


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel queued calls and end the worker processes now (terminate, then kill)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    deadline = time.monotonic() + WORKER_STOP_S
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while worker processes are started (they inherit it); the parent's handler after."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
