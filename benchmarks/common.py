"""Shared helpers of the benchmarks: figures with targets, test signals, one-core pinning, a stage-timed chain.

Every ``bench_*.py`` module has ``run(args) -> dict`` returning
``{"benchmark": name, "figures": [figure(...), ...], "details": {...}}``; ``__main__`` prints
them with :func:`print_results` and writes them as JSON.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import emostream
from emostream.audio.files import load_mono
from emostream.engine.pipeline import ChannelPipeline
from emostream.engine.smoothing import SmoothingConfig
from emostream.inference.metadata import bundled_models_dir
from emostream.inference.model import EmotionModel

SHIPPED_MODELS = ("accurate", "fast")
RESULT_KEYS = ("benchmark", "figures", "details")
FIGURE_KEYS = ("name", "value", "unit", "target", "status")


def figure(
    name: str,
    value: float | int | str | bool | None,
    unit: str = "",
    *,
    target: float | None = None,
    better: str = "lower",
    note: str = "",
) -> dict[str, Any]:
    """One measured figure beside its target; status PASS/MISS when there is a target, INFO otherwise."""
    status = "INFO"
    target_text = ""
    if target is not None:
        target_text = ("≤ " if better == "lower" else "≥ ") + f"{target:g}"
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            ok = value <= target if better == "lower" else value >= target
            status = "PASS" if ok else "MISS"
        else:
            status = "MISS"
    if isinstance(value, bool):
        status = "PASS" if value else "MISS"
        target_text = target_text or "yes"
    return {"name": name, "value": value, "unit": unit, "target": target_text, "status": status, "note": note}


def byte_compile_sources() -> bool:
    """Write the bytecode of emostream and of the benchmarks (``__pycache__``, git-ignored); True if all compiled.

    A wheel install byte-compiles its modules; an editable install run with
    ``PYTHONDONTWRITEBYTECODE=1`` (this development environment) compiles every emostream
    module from source at each start: about 0.13 s of CPU per process here (a third of the
    CLI's start-up), which no installed emostream pays. Benchmarks that time whole processes
    call this first so that they measure an installed start-up.
    """
    import compileall
    import importlib.util

    ok = True
    for package in ("emostream", "benchmarks"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            ok = bool(compileall.compile_dir(folder, quiet=1)) and ok
    return ok


def result(name: str, figures: list[dict[str, Any]], details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A benchmark's return value."""
    return {"benchmark": name, "figures": figures, "details": details or {}}


def pin_one_core() -> int | None:
    """Pin this process (and its future children) to one CPU; returns the CPU or None where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def demo_path() -> Path:
    """The bundled 77 s demo recording."""
    return Path(emostream.__file__).resolve().parent / "assets" / "demo.flac"


def looped_signal(path: Path, min_seconds: float, rate_hz: int = 16000) -> np.ndarray:
    """``path`` as float32 mono at ``rate_hz``, repeated to at least ``min_seconds`` (one copy if shorter)."""
    one = load_mono(path, rate_hz)
    repeats = max(1, math.ceil(min_seconds * rate_hz / len(one)))
    return np.tile(one, repeats).astype(np.float32)


RTF_TARGET_PLAIN = 0.002  # models on the handcrafted statistics alone (the fast model)
RTF_TARGET_EMBEDDING = 0.005  # models that also run the speech embedding (the accurate model; issue 8's budget)


def rtf_target(name: str) -> float:
    """The CPU real-time-factor budget of a model: 0.005 with the speech embedding, else 0.002."""
    from emostream.inference.metadata import ModelMetadata, resolve_model

    meta = ModelMetadata.load(resolve_model(name))
    return RTF_TARGET_EMBEDDING if meta.feature_config.embedding is not None else RTF_TARGET_PLAIN


def available_models(requested: Iterable[str] | None = None) -> list[str]:
    """Requested models, or the shipped pair (accurate, fast) where present; others by --model NAME."""
    if requested:
        return list(requested)
    folder = bundled_models_dir()
    return [name for name in SHIPPED_MODELS if (folder / f"{name}.json").is_file()]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of ``values``; NaN when empty."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def _timed(fn: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        sink.append(time.perf_counter() - t0)
        return out

    return wrapper


def make_pipeline(model: EmotionModel, smoothing: SmoothingConfig | None = None) -> ChannelPipeline:
    """ENGINE's ChannelPipeline for one channel with the model's own VAD and feature settings."""
    return ChannelPipeline(model, model.metadata.vad_config, smoothing or SmoothingConfig())


@dataclass
class PipelineRun:
    """Timings of one streamed pass: wall seconds, per-hop milliseconds and, if instrumented, per stage."""

    audio_s: float
    wall_s: float
    cpu_s: float
    hops: int
    hop_ms: list[float]
    hop_cpu_ms: list[float]
    engine_latency_ms: list[float]
    stage_ms: dict[str, list[float]] = field(default_factory=dict)


STAGES = ("vad", "features", "windowing", "model", "smoothing", "other")


def _instrument(pipeline: ChannelPipeline) -> dict[str, list[float]]:
    sinks: dict[str, list[float]] = {stage: [] for stage in ("vad", "features", "extract", "model", "smoothing")}
    extractor = pipeline._extractor
    extractor._vad.process = _timed(extractor._vad.process, sinks["vad"])  # type: ignore[method-assign]
    extractor._featurizer.compute = _timed(extractor._featurizer.compute, sinks["features"])  # type: ignore[method-assign]
    extractor._featurizer.power = _timed(extractor._featurizer.power, sinks["features"])  # type: ignore[method-assign]
    extractor.process = _timed(extractor.process, sinks["extract"])  # type: ignore[method-assign]
    pipeline.model.predict = _timed(pipeline.model.predict, sinks["model"])  # type: ignore[method-assign]
    pipeline._smoother.process = _timed(pipeline._smoother.process, sinks["smoothing"])  # type: ignore[method-assign]
    return sinks


def stream_through(pipeline: ChannelPipeline, signal: np.ndarray, block: int, instrument: bool = False) -> PipelineRun:
    """Feed ``signal`` in ``block``-sample chunks as fast as possible.

    A hop's time (``hop_ms``) is all the processing since the previous hop was emitted,
    i.e. the cost of one window hop of audio, on the wall clock (``hop_ms``) and in this
    thread's CPU time (``hop_cpu_ms``, insensitive to other processes taking the core).
    With ``instrument`` the pipeline's stages are wrapped with timers (a little overhead) and
    ``stage_ms`` holds, per hop,
    the milliseconds spent in ``vad``, ``features`` (per-frame front-end), ``windowing``
    (window assembly and summary statistics), ``model`` (normalise + TFLite invoke),
    ``smoothing`` and ``other`` (level meter, HopResult, accounting).
    """
    sinks = _instrument(pipeline) if instrument else {}
    rate = pipeline.feature_cfg.sample_rate_hz
    hop_ms: list[float] = []
    hop_cpu_ms: list[float] = []
    engine_ms: list[float] = []
    stage_ms: dict[str, list[float]] = {stage: [] for stage in STAGES} if instrument else {}
    pending = pending_cpu = 0.0
    t_start, cpu_start = time.perf_counter(), time.thread_time()
    for start in range(0, len(signal), block):
        t0, c0 = time.perf_counter(), time.thread_time()
        hops = pipeline.process(signal[start : start + block])
        pending += time.perf_counter() - t0
        pending_cpu += time.thread_time() - c0
        if hops:
            for hop in hops:
                hop_ms.append(1000.0 * pending / len(hops))
                hop_cpu_ms.append(1000.0 * pending_cpu / len(hops))
                engine_ms.append(hop.latency_ms)
            if instrument:
                _close_stages(sinks, stage_ms, 1000.0 * pending, len(hops))
            pending = pending_cpu = 0.0
    wall_s, cpu_s = time.perf_counter() - t_start, time.thread_time() - cpu_start
    return PipelineRun(len(signal) / rate, wall_s, cpu_s, len(hop_ms), hop_ms, hop_cpu_ms, engine_ms, stage_ms)


def _close_stages(sinks: dict[str, list[float]], stage_ms: dict[str, list[float]], total_ms: float, n: int) -> None:
    ms = {name: 1000.0 * sum(values) for name, values in sinks.items()}
    parts = {
        "vad": ms["vad"],
        "features": ms["features"],
        "windowing": ms["extract"] - ms["vad"] - ms["features"],
        "model": ms["model"],
        "smoothing": ms["smoothing"],
    }
    parts["other"] = total_ms - sum(parts.values())
    for stage, value in parts.items():
        stage_ms[stage].extend([value / n] * n)
    for values in sinks.values():
        values.clear()


def print_results(results: list[dict[str, Any]]) -> None:
    """Print every benchmark's figures as one table (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="emostream benchmarks", show_lines=False)
    for col in ("benchmark", "figure", "value", "target", "status", "note"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    colours = {"PASS": "green", "MISS": "bold red", "INFO": "dim", "SKIP": "yellow"}
    for res in results:
        for fig in res["figures"]:
            value = fig["value"]
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            status = fig["status"]
            table.add_row(
                res["benchmark"],
                fig["name"],
                f"{shown} {fig['unit']}".strip(),
                fig["target"],
                f"[{colours.get(status, '')}]{status}[/]",
                fig.get("note", ""),
            )
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    console.print(table)
