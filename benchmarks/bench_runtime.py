"""Runtime footprint in fresh processes: peak RSS, start-up to first event, no TensorFlow.

* RSS: ``python -m benchmarks.probe`` (imports only emostream, loads the model, streams the
  demo file through ``ChannelPipeline``) reads its own VmHWM from /proc/self/status.
* Start-up: wall time from launching ``emostream --file DEMO --fast --no-dashboard --jsonl -``
  to its first ``hop`` line (median of ``--startup-runs``, default 3); falls back to the
  probe when the CLI fails.
* Whole CLI (the headline): ``emostream --file LONG --fast --no-dashboard --jsonl FILE`` on
  the demo looped to ``--cli-seconds`` (default 1800 s, a 30-min file): the child's CPU time
  (user + system, from ``getrusage(RUSAGE_CHILDREN)``; start-up included) and its wall time
  per audio second, its minor page faults, and the engine's own ``realtime_factor``.
* No TensorFlow: after a full probe run neither ``tensorflow`` nor ``keras`` is in
  ``sys.modules``, and a run with both made unimportable (meta-path blocker) still works.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks.common import (
    available_models,
    byte_compile_sources,
    demo_path,
    figure,
    looped_signal,
    result,
    rtf_target,
)

RSS_TARGET_MB = 100.0
STARTUP_TARGET_S = 1.5
REPO = Path(__file__).resolve().parent.parent


def _probe(model: str, audio: Path, block: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.probe", "--model", model, "--file", str(audio)]
    if block:
        cmd.append("--block-tensorflow")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    lines = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    report = next((ln for ln in lines if ln.get("type") == "probe"), None)
    if done.returncode != 0 or report is None:
        return {"ok": False, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return {"ok": True, **report}


def _cli_command(model: str, audio: Path) -> list[str]:
    script = shutil.which("emostream") or str(Path(sys.executable).parent / "emostream")
    base = [script] if Path(script).exists() else [sys.executable, "-m", "emostream"]
    return [*base, "--file", str(audio), "--fast", "--no-dashboard", "--jsonl", "-", "--model", model]


def _time_to_first_hop(cmd: list[str]) -> float | None:
    """Seconds from launch to the first JSONL ``hop`` line on stdout; None if none came."""
    started = time.perf_counter()
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.startswith("{") and json.loads(line).get("type") == "hop":
                    return time.perf_counter() - started
            return None
        finally:
            proc.kill()


def _startup(model: str, audio: Path, runs: int) -> tuple[float | None, str, list[float]]:
    for how, cmd in (
        ("emostream CLI", _cli_command(model, audio)),
        (
            "benchmarks.probe (CLI failed)",
            [sys.executable, "-m", "benchmarks.probe", "--model", model, "--file", str(audio)],
        ),
    ):
        times = [t for t in (_time_to_first_hop(cmd) for _ in range(runs)) if t is not None]
        if times:
            return median(times), how, times
    return None, "no first hop", []


def _engine_rtf(model: str, seconds: float) -> dict[str, Any]:
    """The whole CLI (--fast --no-dashboard, JSONL to a file) on the demo looped to ``seconds``.

    CPU time (user + system) of the child process and its wall time, launch to exit,
    per second of audio; the engine's own ``realtime_factor`` (pipeline time only) from
    the end record.
    """
    import resource
    import tempfile

    import soundfile as sf

    rate = 16000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        out = Path(tmp) / "events.jsonl"
        sf.write(path, looped_signal(demo_path(), seconds, rate), rate)
        cmd = [*_cli_command(model, path)[:-4], "--jsonl", str(out), "--model", model]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=3600, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = out.read_text(encoding="utf-8").splitlines() if out.is_file() else []
    record = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or record.get("type") != "end":
        return {"ok": False, "error": (done.stderr.decode().strip().splitlines() or ["no output"])[-1]}
    audio_s = float(record["duration_s"])
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {
        "ok": True,
        "cpu_rtf": (user + system) / audio_s,
        "user_s": user,
        "system_s": system,
        "wall_rtf": wall / audio_s,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "engine_rtf": record.get("realtime_factor"),
        "audio_s": audio_s,
        "hops": record.get("hops"),
    }


def run(args: Any) -> dict[str, Any]:
    """Fresh-process figures for each model; ``args.file`` overrides the demo recording."""
    models = available_models(getattr(args, "models", None))
    audio = Path(getattr(args, "file", None) or demo_path())
    runs = int(getattr(args, "startup_runs", 3))
    figs: list[dict[str, Any]] = []
    details: dict[str, Any] = {"byte_compiled": byte_compile_sources()}  # as installed: see byte_compile_sources
    for name in models:
        plain = _probe(name, audio, block=False)
        blocked = _probe(name, audio, block=True)
        startup_s, how, times = _startup(name, audio, runs)
        label = Path(name).stem
        rss = plain["vmhwm_kb"] / 1024 if plain["ok"] else float("nan")
        no_tf = plain["ok"] and not plain["tensorflow_imported"] and not plain["keras_imported"]
        figs += [
            figure(
                f"{label}: peak RSS (VmHWM)", rss, "MB", target=RSS_TARGET_MB, note=f"backend {plain.get('backend')}"
            ),
            figure(
                f"{label}: start-up to first hop",
                startup_s,
                "s",
                target=STARTUP_TARGET_S,
                note=f"{how}, median of {len(times)}",
            ),
            figure(f"{label}: tensorflow/keras not imported", no_tf),
            figure(
                f"{label}: runs with tensorflow blocked",
                bool(blocked["ok"] and blocked["hops"] > 0),
                note=blocked.get("error", f"{blocked.get('hops')} hops"),
            ),
        ]
        engine = _engine_rtf(name, float(getattr(args, "cli_seconds", None) or 1800.0))
        cli_target = rtf_target(name)
        if engine["ok"]:
            headline = [
                figure(
                    f"{label}: whole CLI real-time factor, CPU time (user+sys)",
                    engine["cpu_rtf"],
                    "",
                    target=cli_target,
                    note=f"{engine['user_s']:.2f} s user + {engine['system_s']:.2f} s sys for a "
                    f"{engine['audio_s']:.0f} s file, --fast --no-dashboard --jsonl FILE, launch to exit; "
                    f"{engine['minor_faults']} minor page faults",
                ),
                figure(
                    f"{label}: whole CLI real-time factor, wall time",
                    engine["wall_rtf"],
                    "",
                    target=cli_target,
                    note="launch to exit (other processes on the core count here)",
                ),
                figure(
                    f"{label}: CLI engine's own realtime_factor",
                    engine["engine_rtf"],
                    "",
                    note="pipeline time only (wall), from the JSONL end record",
                ),
            ]
            figs = headline + figs
        else:
            figs.insert(0, figure(f"{label}: whole CLI", "failed", target=cli_target, note=engine["error"]))
        details[label] = {
            "probe": plain,
            "blocked_probe": blocked,
            "startup_s": times,
            "startup_via": how,
            "engine": engine,
        }
    if not models:
        figs.append(figure("models", "none found", note="no shipped model; pass --model PATH"))
    return result("runtime", figs, details)
