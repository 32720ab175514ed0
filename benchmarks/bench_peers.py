"""emostream beside its peers: the same file, one core, whole processes, CPU time (user + sys) and wall time.

The file is the demo looped to ``--cli-seconds`` (default 1800: a 30-min file; ``--quick``:
10 s) or ``--file`` (16 kHz mono). Each entry runs as its own process, launch to exit, pinned
to the one core ``python -m benchmarks`` runs on:

* ``floor``: decode + webrtcvad on every 30 ms frame (``benchmarks/peers.py``);
* ``openSMILE``: eGeMAPS v02 low-level descriptors streamed once, pooled per 2 s window every 0.5 s;
* ``librosa``: the earlier projects' features per 2 s window every 0.5 s;
* ``emostream fast`` / ``emostream accurate``: the whole CLI, ``--file F --fast --no-dashboard
  --jsonl FILE --model M``.

Figures: each entry's CPU and wall real-time factor (seconds per second of audio), and each
emostream model's ratio to each peer (how many times less CPU time emostream takes; the
floor's is below 1: emostream costs more than decoding). Targets (issue 16): whole CLI
``fast`` <= 0.0015, ``accurate`` <= 0.0025; ratio to openSMILE >= 12 (fast) and >= 8 (accurate).
openSMILE and librosa are optional (``pip install -e '.[bench]'`` or ``pip install opensmile
librosa``): a peer that is not installed is reported as such.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_runtime import REPO, _cli_command
from benchmarks.common import byte_compile_sources, demo_path, figure, looped_signal, result

SAMPLE_RATE_HZ = 16000
RTF_TARGETS = {"fast": 0.0015, "accurate": 0.0025}
OPENSMILE_RATIO_TARGETS = {"fast": 12.0, "accurate": 8.0}
PEER_LABELS = {"floor": "floor (decode + webrtcvad)", "opensmile": "openSMILE eGeMAPS LLD", "librosa": "librosa"}
MODELS = ("fast", "accurate")


def _measure(cmd: list[str], audio_s: float) -> dict[str, Any]:
    """Run ``cmd`` to completion; CPU (user + sys of the child) and wall seconds, and its last stdout line."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=7200, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": tail}
    return {"ok": True, "cpu_s": cpu, "wall_s": wall, "cpu_rtf": cpu / audio_s, "wall_rtf": wall / audio_s}


def _installed(module: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, check=False)
    return probe.returncode == 0


def run(args: Any) -> dict[str, Any]:
    import soundfile as sf

    seconds = float(getattr(args, "cli_seconds", None) or 1800.0)
    given = getattr(args, "file", None)
    figures: list[dict[str, Any]] = []
    details: dict[str, Any] = {"byte_compiled": byte_compile_sources()}  # as installed: see byte_compile_sources
    with tempfile.TemporaryDirectory() as tmp:
        if given:
            path = Path(given)
        else:
            path = Path(tmp) / "peers.flac"
            sf.write(path, looped_signal(demo_path(), seconds, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ)
        audio_s = sf.info(str(path)).duration
        details["file"] = str(given or f"demo looped to {audio_s:.0f} s")
        runs: dict[str, dict[str, Any]] = {}
        for peer in PEER_LABELS:
            module = {"floor": "webrtcvad", "opensmile": "opensmile", "librosa": "librosa"}[peer]
            if not _installed(module):
                runs[peer] = {"ok": False, "error": f"not installed: pip install {module}"}
                continue
            runs[peer] = _measure([sys.executable, "-m", "benchmarks.peers", peer, str(path)], audio_s)
        for model in MODELS:
            out = Path(tmp) / f"{model}.jsonl"
            cmd = [*_cli_command(model, path)[:-4], "--jsonl", str(out), "--model", model]
            runs[model] = _measure(cmd, audio_s)
    details["runs"] = runs
    details["audio_s"] = audio_s
    for name, run_ in runs.items():
        label = PEER_LABELS.get(name, f"emostream {name}")
        if not run_["ok"]:
            figures.append(figure(f"{label}: CPU RTF", "failed", note=run_["error"]))
            continue
        figures.append(
            figure(
                f"{label}: CPU RTF (user+sys)",
                run_["cpu_rtf"],
                target=RTF_TARGETS.get(name),
                note=f"{run_['cpu_s']:.2f} s CPU, wall RTF {run_['wall_rtf']:.4f}, {audio_s:.0f} s file",
            )
        )
    for model in MODELS:
        own = runs[model]
        for peer, peer_label in PEER_LABELS.items():
            other = runs[peer]
            if not (own["ok"] and other["ok"]):
                continue
            ratio = other["cpu_s"] / own["cpu_s"]
            figures.append(
                figure(
                    f"emostream {model}: CPU ratio to {peer_label}",
                    ratio,
                    "x",
                    target=OPENSMILE_RATIO_TARGETS[model] if peer == "opensmile" else None,
                    better="higher",
                    note="peer CPU time / emostream CPU time (higher = emostream cheaper)",
                )
            )
    return result("peers", figures, details)
