"""Batch call analysis (``emostream calls``): calls per minute with ``--jobs 1``, ``--jobs 2`` and ``--ray``.

Builds synthetic two-party calls from the demo recording: 8 kHz G.711 μ-law stereo WAVs
(the usual call-center format), channel 0 = customer and channel 1 = agent taking turns
of 5 s, each call a different stretch of the demo. Runs :func:`emostream.apps.calls.run_batch`
on them as the real command, ``emostream calls DIR --jobs N --no-png`` in a fresh process
(default config: the agent channel is metered, not analysed), once with one worker and
once with two (spawned worker processes, each loading the model once; process start-up
included), then as ``--ray --jobs 2`` (a local Ray instance of 2 CPUs, one task per call; Ray's
start-up and shutdown included), on two CPUs, and reports calls per minute and the speed-up.
CPU time covers every process of a run: ``RUSAGE_CHILDREN`` for the ``--jobs`` runs; for Ray,
whose raylet reaps its workers without passing their CPU time on, the sum over all descendant
processes sampled from ``/proc`` every 20 ms (both measures of every run are in the details).
Other load on the machine skews the wall-clock figures: the 1-minute load average is recorded
in the details. The Ray run is left out (noted) when ray is not installed.

Standalone: ``python -m benchmarks.bench_calls [--calls 20] [--call-seconds 60] [--model M]``;
inside ``python -m benchmarks`` it uses 20 calls of 60 s (``--quick``: 4 calls of 20 s).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from benchmarks.common import available_models, demo_path, figure, looped_signal, result
from emostream.audio.files import resample

RATE_HZ = 8000
TURN_S = 5.0
SPEEDUP_TARGET = 1.5
SAMPLE_S = 0.02  # /proc sampling period of the processes' CPU time


def make_calls(folder: Path, n_calls: int, call_s: float) -> list[Path]:
    """``n_calls`` stereo μ-law 8 kHz calls of ``call_s`` seconds with alternating 5 s turns."""
    demo = resample(looped_signal(demo_path(), 2 * call_s + 60.0, 16000), 16000, RATE_HZ)
    n = int(call_s * RATE_HZ)
    turn = (np.arange(n) // int(TURN_S * RATE_HZ)) % 2 == 0
    paths = []
    for i in range(n_calls):
        start = (i * 3 * RATE_HZ) % (len(demo) - 2 * n)
        customer = demo[start : start + n] * turn
        agent = demo[start + n : start + 2 * n] * ~turn
        path = folder / f"call_{i:03d}.wav"
        sf.write(path, np.stack([customer, agent], axis=1).astype(np.float32), RATE_HZ, subtype="ULAW")
        paths.append(path)
    return paths


def _two_cpus() -> set[int] | None:
    """Allow this process (and its workers) two CPUs (the harness pins to one); returns the old set."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    old = os.sched_getaffinity(0)
    cpus = sorted(range(os.cpu_count() or 1))[:2]
    os.sched_setaffinity(0, set(cpus))
    return old


RAY_READY = "emostream: Ray:"  # the line the command prints once connected, before the first task


def _timed_batch(
    folder: Path, out: Path, model: str, jobs: int, ray: bool = False
) -> tuple[float, float, float, float | None]:
    """Wall seconds of a fresh ``emostream calls FOLDER --jobs N [--ray]`` (start-up included), its CPU
    seconds (all processes) from ``RUSAGE_CHILDREN`` and from sampling ``/proc`` (NaN without /proc), and
    with ``ray`` the seconds until Ray was up (the command's ``emostream: Ray:`` line)."""
    cmd = [sys.executable, "-m", "emostream", "calls", str(folder), "--out", str(out), "--jobs", str(jobs)]
    if ray:
        cmd.append("--ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cpu_before = _children_cpu_s()
    ready_s = None
    with _DescendantsCpu() as sampled:
        started = time.perf_counter()
        args = [*cmd, "--no-png", "--no-progress", "--model", model]
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True) as proc:
            assert proc.stderr is not None
            errors = []
            for line in proc.stderr:
                if ready_s is None and line.startswith(RAY_READY):
                    ready_s = time.perf_counter() - started
                errors.append(line)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"emostream calls failed ({proc.returncode}): {''.join(errors)[-500:]}")
    return wall, _children_cpu_s() - cpu_before, sampled.total_s, ready_s


class _DescendantsCpu(threading.Thread):
    """Samples the CPU time (user + sys, /proc/PID/stat) of every descendant of this process every
    ``SAMPLE_S``; ``total_s``: the sum of each one's last reading. Ray reaps its workers with SIGCHLD
    ignored, so their CPU never reaches ``RUSAGE_CHILDREN``; this sees it (less up to ``SAMPLE_S`` of each
    process's last moments, and processes shorter than that)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.latest: dict[int, float] = {}
        self.stopping = threading.Event()
        self.tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01

    @property
    def total_s(self) -> float:
        return sum(self.latest.values()) if Path("/proc/self/stat").exists() else float("nan")

    def __enter__(self) -> _DescendantsCpu:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_S):
            for pid in _descendants(os.getpid()):
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except (OSError, IndexError):
                    continue  # ended between listing and reading
                self.latest[pid] = max(self.latest.get(pid, 0.0), (int(fields[11]) + int(fields[12])) * self.tick_s)


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found |= {child, *_descendants(child)}
    return found


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Calls per minute with 1 and 2 workers and with Ray on 2 CPUs, and the speed-up."""
    quick = bool(getattr(args, "quick", False))
    n_calls = getattr(args, "calls", None) or (4 if quick else 20)
    call_s = getattr(args, "call_seconds", None) or (20.0 if quick else 60.0)
    models = available_models(getattr(args, "models", None))
    if not models:
        return result("calls", [figure("calls per minute", "no model", target=0.0, note="pass --model")])
    ray = importlib.util.find_spec("ray") is not None
    old = _two_cpus()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_calls_") as tmp:
            folder = Path(tmp) / "calls"
            folder.mkdir()
            make_calls(folder, n_calls, call_s)
            load_before = os.getloadavg()[0]
            wall1, cpu1, sampled1, _ = _timed_batch(folder, Path(tmp) / "out1", models[0], 1)
            wall2, cpu2, sampled2, _ = _timed_batch(folder, Path(tmp) / "out2", models[0], 2)
            nan = float("nan")
            wall_ray, rusage_ray, cpu_ray, ready_ray = (
                _timed_batch(folder, Path(tmp) / "out_ray", models[0], 2, ray=True) if ray else (nan, nan, nan, None)
            )
            load_after = os.getloadavg()[0]
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)
    per_min1, per_min2 = 60.0 * n_calls / wall1, 60.0 * n_calls / wall2
    audio_min = n_calls * call_s / 60.0
    figures = [
        figure("calls/min, --jobs 1", round(per_min1, 1), "calls/min", note=f"{call_s:g} s stereo μ-law calls"),
        figure("calls/min, --jobs 2", round(per_min2, 1), "calls/min"),
        figure("speed-up --jobs 2 / --jobs 1", round(wall1 / wall2, 2), "×", target=SPEEDUP_TARGET, better="higher"),
        figure("call audio per wall minute, --jobs 2", round(audio_min / (wall2 / 60.0), 1), "min/min"),
        figure("CPU per call, --jobs 1", round(cpu1 / n_calls, 3), "s", note="all processes; load-independent"),
        figure("CPU per call, --jobs 2", round(cpu2 / n_calls, 3), "s"),
    ]
    if ray:
        cpu_note = "all processes, Ray's included (/proc samples)"
        ready = ready_ray if ready_ray is not None else nan
        figures += [
            figure(
                "calls/min, --ray (local, 2 CPUs)",
                round(60.0 * n_calls / wall_ray, 1),
                "calls/min",
                note="Ray start-up and shutdown included",
            ),
            figure(
                "calls/min, --ray, once Ray is up",
                round(60.0 * n_calls / (wall_ray - ready), 1),
                "calls/min",
                note="workers' start-up and Ray shutdown included",
            ),
            figure("Ray start-up (command start to connected)", round(ready, 1), "s"),
            figure("CPU per call, --ray", round(cpu_ray / n_calls, 3), "s", note=cpu_note),
        ]
    else:
        figures.append(figure("calls/min, --ray", "ray not installed", note="pip install 'emostream[cluster]'"))
    details = {
        "model": models[0],
        "calls": n_calls,
        "call_seconds": call_s,
        "wall_s_jobs1": round(wall1, 3),
        "wall_s_jobs2": round(wall2, 3),
        "wall_s_ray": round(wall_ray, 3) if ray else None,
        "ray_ready_s": round(ready_ray, 3) if ready_ray is not None else None,
        "cpu_s_jobs1": round(cpu1, 3),
        "cpu_s_jobs2": round(cpu2, 3),
        "cpu_s_ray": round(cpu_ray, 3) if ray else None,
        "cpu_s_ray_rusage_children": round(rusage_ray, 3) if ray else None,
        "cpu_s_sampled_jobs1_jobs2": [round(sampled1, 3), round(sampled2, 3)],
        "cpus": 2,
        "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
    }
    return result("calls", figures, details)


def main(argv: list[str] | None = None) -> int:
    """Standalone run: print the figures."""
    from benchmarks.common import print_results

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_calls", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int)
    parser.add_argument("--call-seconds", type=float)
    parser.add_argument("--model", dest="models", action="append", help="model name or .json path")
    parser.add_argument("--quick", action="store_true")
    res = run(parser.parse_args(argv))
    print_results([res])
    print(res["details"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
