"""Runtime footprint in fresh processes: peak RSS, start-up to first event, no TensorFlow.

* RSS: ``python -m benchmarks.probe`` (imports only emostream, loads the model, streams the
  demo file through ``ChannelPipeline``) reads its own VmHWM from /proc/self/status.
* Start-up: wall time from launching ``emostream --file DEMO --fast --no-dashboard --jsonl -``
  to its first ``hop`` line (median of ``--startup-runs``, default 3); falls back to the
  probe when the CLI fails.
* Whole CLI engine: ``emostream --file LONG --fast --no-dashboard --jsonl -`` on the demo
  looped to ``--seconds``: wall time from the first hop to the end record per audio second.
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

from benchmarks.common import available_models, demo_path, figure, looped_signal, result

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
    """The whole CLI engine (--fast --no-dashboard, JSONL to a pipe) on the demo looped to ``seconds``.

    Returns the wall time from the first hop line to the end record per second of audio, and
    the engine's own ``realtime_factor`` (its pipeline time only) from the end record.
    """
    import tempfile

    import soundfile as sf

    rate = 16000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        sf.write(path, looped_signal(demo_path(), seconds, rate), rate)
        cmd = _cli_command(model, path)
        first = end = None
        record: dict[str, Any] = {}
        with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                event = json.loads(line)
                if event.get("type") == "hop" and first is None:
                    first = time.perf_counter()
                elif event.get("type") == "end":
                    end, record = time.perf_counter(), event
        if first is None or end is None:
            return {"ok": False}
        audio_s = float(record["duration_s"])
        return {
            "ok": True,
            "wall_rtf": (end - first) / audio_s,
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
    details: dict[str, Any] = {}
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
        engine = _engine_rtf(name, float(getattr(args, "seconds", 300.0)))
        if engine["ok"]:
            figs += [
                figure(
                    f"{label}: CLI engine real-time factor (wall)",
                    engine["wall_rtf"],
                    "",
                    target=0.002,
                    note=f"first hop to end record, {engine['audio_s']:.0f} s file, --fast --no-dashboard",
                ),
                figure(
                    f"{label}: CLI engine's own realtime_factor",
                    engine["engine_rtf"],
                    "",
                    note="pipeline time only, from the JSONL end record",
                ),
            ]
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
