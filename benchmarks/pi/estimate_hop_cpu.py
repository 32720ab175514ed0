"""Estimate emostream's CPU time per hop on a Raspberry Pi 4 and 5 from this machine's figures.

    nice -n 10 python benchmarks/pi/estimate_hop_cpu.py [--passes 3] [--seconds 300]

An estimate, not a measurement on a Pi. It measures two things here, one after the other, so that
both see the same machine load:

* the pipeline's CPU time per 500 ms hop for the ``accurate`` and ``fast`` models
  (``python -m benchmarks --only pipeline --model M``: "real-time factor, CPU time" x 500 ms);
* the single-core 7-Zip benchmark (``7za b -mmt1``, Debian package p7zip-full), pinned to the core the
  benchmarks pin to; the usage-normalised rating (R/U MIPS of the "Tot:" line) is used, which on an
  idle core equals the rating sbc-bench publishes;

and scales the hop time by the ratio of this machine's 7-Zip single-core rating to the one sbc-bench
published for each Pi (the constants below, with their sources). 7-Zip's integer, branchy, cache-bound
work is a fair proxy for the Python and numpy parts of a hop; the int8 TFLite and FFT parts use SIMD,
where a Pi's 128-bit NEON is relatively weaker than this machine's AVX-512, so treat the result as
+-50 %. Channels per core keep half the core free and add the whole command line's overhead over the
pipeline alone (x1.3, README Performance).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOP_MS = 500.0
CLI_OVER_PIPELINE = 1.3  # README Performance: the whole CLI costs about 1.3x its pipeline
HEADROOM = 0.5  # use at most half a core

# 7-Zip single-threaded MIPS published by sbc-bench (github.com/ThomasKaiser/sbc-bench, Sorted-Results.md)
PI_7ZIP_SINGLE = {
    "Raspberry Pi 4 B (Cortex-A72, 1.8 GHz)": (1769.0, "sbc-bench results/3OBF.txt, Pi OS Bullseye arm64"),
    "Raspberry Pi 5 B (Cortex-A76, 2.4 GHz)": (
        3250.0,
        "sbc-bench results/Au3jaA.txt and 8-NK.txt, Bookworm arm64: 3196 and 3305",
    ),
}


def seven_zip_mips(cpu: int, runs: int) -> float:
    """Best usage-normalised 7-Zip single-thread rating (MIPS) of ``runs`` runs pinned to ``cpu``."""
    exe = shutil.which("7za") or shutil.which("7z")
    if exe is None:
        raise SystemExit("estimate_hop_cpu: 7za is missing; apt-get install p7zip-full")
    best = 0.0
    for _ in range(runs):
        out = subprocess.run(
            ["taskset", "-c", str(cpu), exe, "b", "-mmt1"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"^Tot:\s+(\d+)\s+(\d+)\s+(\d+)", out, re.MULTILINE)
        if match is None:
            raise SystemExit(f"estimate_hop_cpu: no 'Tot:' line in the output of {exe} b -mmt1")
        best = max(best, float(match.group(2)))
    return best


def hop_cpu_ms(model: str, seconds: float, passes: int) -> tuple[float, float]:
    """(CPU ms per hop, CPU-time hop p99 ms) of ``model`` from the pipeline benchmark."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pipeline.json"
        cmd = [sys.executable, "-m", "benchmarks", "--only", "pipeline", "--model", model]
        cmd += ["--seconds", str(seconds), "--passes", str(passes), "--json", str(out)]
        done = subprocess.run(cmd, cwd=REPO, check=False, capture_output=True, text=True)  # 1 = a target missed
        if not out.exists():
            raise SystemExit(f"estimate_hop_cpu: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        figures = {f["name"]: f["value"] for r in json.loads(out.read_text())["results"] for f in r["figures"]}
    return figures[f"{model}: real-time factor, CPU time"] * HOP_MS, figures[f"{model}: hop latency p99, CPU time"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=300.0, help="audio per pipeline run")
    parser.add_argument("--passes", type=int, default=3, help="pipeline passes (the fastest counts)")
    parser.add_argument("--zip-runs", type=int, default=3, help="7-Zip runs (the best counts)")
    parser.add_argument("--cpu", type=int, default=0, help="core for 7-Zip (python -m benchmarks pins to 0)")
    args = parser.parse_args()
    load = os.getloadavg()
    hops = {m: hop_cpu_ms(m, args.seconds, args.passes) for m in ("accurate", "fast")}
    here = seven_zip_mips(args.cpu, args.zip_runs)
    print(f"this machine: 7-Zip single-thread {here:.0f} MIPS (usage-normalised); load average {load[0]:.1f}")
    for model, (hop, p99) in hops.items():
        print(f"this machine: {model}: {hop:.2f} ms CPU per hop (p99 {p99:.2f} ms)")
    print()
    print(
        "| device | 7-Zip 1-core MIPS | model | est. CPU per hop | est. share of one core per channel |"
        " channels per core (half a core, whole CLI) |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for device, (mips, _source) in PI_7ZIP_SINGLE.items():
        for model, (hop, _) in hops.items():
            pi_hop = hop * here / mips
            share = pi_hop * CLI_OVER_PIPELINE / HOP_MS
            channels = int(HEADROOM / share)
            print(f"| {device} | {mips:.0f} | {model} | {pi_hop:.1f} ms | {100 * share:.1f} % | {channels} |")
    print()
    for device, (mips, source) in PI_7ZIP_SINGLE.items():
        print(f"{device}: {mips:.0f} MIPS from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
