"""Soak: 1 h of audio through the live monitor's path with the dashboard renderer on.

The demo recording, looped to ``--soak-seconds`` (default 3600 s; ``--quick``: 60 s), is
written to a temporary FLAC and run in this process the way ``emostream --file X --fast
--jsonl FILE`` runs it (``FileSource`` -> ``Session`` -> ``Engine`` with the JSONL sink),
while the main thread renders the dashboard (``outputs.dashboard.render``) to a null
console at the live refresh rate, 8 times a second (wall clock, as ``LiveDashboard``
does; rendering 8 times per *audio* second at ~300x real time would load the core
300 times more than a live run ever does). Figures:

* RSS growth after warm-up (the RSS at 10 % of the audio against the highest RSS later): <= 5 MB;
* no dropped samples and every hop present (hops = audio / hop length, give or take one);
* hop latency p99 (the engine's ``latency_ms``) with the renderer competing for the core: <= 5 ms;
* CPU time (user + system) per audio second, renders included (INFO).
"""

from __future__ import annotations

import io
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import demo_path, figure, looped_signal, result

RSS_GROWTH_TARGET_MB = 5.0
HOP_P99_TARGET_MS = 5.0
REFRESH_PER_S = 8.0
WARM_UP_SHARE = 0.1


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(seconds: float, model: str | None = None) -> dict[str, Any]:
    """Run the soak on ``seconds`` of audio; returns the measurements."""
    import soundfile as sf
    from rich.console import Console

    from emostream.apps.live import _observers
    from emostream.audio.sources import FileSource
    from emostream.config import apply_overrides, load_config
    from emostream.engine.plan import make_plan
    from emostream.engine.runner import Engine
    from emostream.engine.session import Session
    from emostream.outputs.dashboard import render

    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "soak.flac"
        sf.write(audio, looped_signal(demo_path(), seconds, 16000), 16000)
        cfg = apply_overrides(
            load_config(None), {"model": {"name": model}, "output": {"jsonl": str(Path(tmp) / "events.jsonl")}}
        )
        plan = make_plan(cfg)
        source = FileSource(audio, cfg.audio.block_ms, fast=True)
        session = Session(plan, input_rate_hz=source.rate_hz, channels=source.channels, source=source.name)
        engine = Engine(source, session, _observers(plan, source, False, session.session_id))
        console = Console(file=io.StringIO(), width=100, height=40, color_system="truecolor", force_terminal=True)
        total_s = source.duration_s
        warm_at = WARM_UP_SHARE * total_s
        rss_warm: float | None = None
        rss_max = 0.0
        renders = 0
        next_render = 0.0
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        engine.start()
        while engine.running:
            now = time.perf_counter() - started
            if now < next_render:
                engine.wait(next_render - now)
                continue
            audio_s = session.audio_s
            console.print(render(engine.state))
            console.file = io.StringIO()  # a null console: drop what was drawn
            renders += 1
            next_render += 1.0 / REFRESH_PER_S
            if rss_warm is None and audio_s >= warm_at:
                rss_warm = _rss_mb()
            elif rss_warm is not None:
                rss_max = max(rss_max, _rss_mb())
        rss_max = max(rss_max, _rss_mb())
        summary = engine.finish()
        wall = time.perf_counter() - started
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    expected_hops = summary.duration_s / plan.timing.hop_s
    return {
        "audio_s": summary.duration_s,
        "hops": summary.hops,
        "expected_hops": expected_hops,
        "dropped_samples": summary.dropped_samples,
        "overflow_count": summary.overflow_count,
        "latency_p50_ms": summary.latency_p50_ms,
        "latency_p99_ms": summary.latency_p99_ms,
        "rss_warm_mb": rss_warm,
        "rss_max_mb": max(rss_max, rss_warm or 0.0),
        "renders": renders,
        "cpu_s": cpu,
        "wall_s": wall,
        "page_faults": usage1.ru_minflt - usage0.ru_minflt,
    }


def run(args: Any) -> dict[str, Any]:
    """The soak with the first requested model (default: the shipped default)."""
    quick = bool(getattr(args, "quick", False))
    seconds = float(getattr(args, "soak_seconds", None) or (60.0 if quick else 3600.0))
    models = getattr(args, "models", None)
    m = soak(seconds, models[0] if models else None)
    growth = m["rss_max_mb"] - (m["rss_warm_mb"] or float("nan"))
    complete = m["dropped_samples"] == 0 and abs(m["hops"] - m["expected_hops"]) <= 2
    figs = [
        figure(
            "RSS growth after warm-up",
            growth,
            "MB",
            target=RSS_GROWTH_TARGET_MB,
            note=f"{m['rss_warm_mb']:.1f} MB at {WARM_UP_SHARE:.0%} of {m['audio_s']:.0f} s "
            f"-> max {m['rss_max_mb']:.1f} MB",
        ),
        figure(
            "no dropped samples, every hop",
            complete,
            note=f"{m['dropped_samples']} dropped, {m['hops']} hops of {m['expected_hops']:.0f}",
        ),
        figure(
            "hop latency p99 under render load",
            m["latency_p99_ms"],
            "ms",
            target=HOP_P99_TARGET_MS,
            note=f"p50 {m['latency_p50_ms']} ms; {m['renders']} dashboard renders",
        ),
        figure(
            "CPU-time RTF with the dashboard renderer",
            m["cpu_s"] / m["audio_s"],
            "",
            note=f"{m['cpu_s']:.1f} s CPU (user+sys), {m['wall_s']:.1f} s wall, {m['page_faults']} minor faults",
        ),
    ]
    return result("soak", figs, m)
