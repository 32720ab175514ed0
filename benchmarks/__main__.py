"""Run every ``benchmarks/bench_*.py`` on one core and print figures beside their targets.

Usage (from the repository root): ``python -m benchmarks [--seconds 300] [--model NAME_OR_PATH]...
[--only pipeline,runtime] [--quick]``. Writes ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import benchmarks
from benchmarks.common import figure, pin_one_core, print_results, result

RESULTS = Path(__file__).resolve().parent / "results"


def bench_modules(only: list[str] | None = None) -> list[str]:
    """Names of the benchmark modules (``bench_*``), optionally filtered by suffix (``pipeline``)."""
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    names.sort(key=lambda n: n != "bench_runtime")  # the whole CLI is the headline: its figures come first
    return [n for n in names if not only or n.removeprefix("bench_") in only]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="audio streamed per model (demo looped)")
    parser.add_argument("--model", dest="models", action="append", help="model name or .json path (repeatable)")
    parser.add_argument("--only", type=lambda s: s.split(","), help="comma-separated benchmarks, e.g. pipeline,runtime")
    parser.add_argument("--file", help="audio file for the fresh-process runs (default: the demo)")
    parser.add_argument("--cli-seconds", type=float, help="audio for the whole-CLI run (default 1800: a 30-min file)")
    parser.add_argument("--soak-seconds", type=float, help="audio for the soak (default 3600)")
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3, help="pipeline passes; the fastest is reported")
    parser.add_argument(
        "--data", action="append", type=Path, default=[], help="corpus folder for bench_stability (repeatable)"
    )
    parser.add_argument("--stability-clips", type=int, default=60, help="clips per --data corpus (bench_stability)")
    parser.add_argument("--quick", action="store_true", help="10 s of audio, one start-up run (smoke test)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.startup_runs = 10.0, 1
        args.cli_seconds = args.cli_seconds or 10.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = None if args.no_pin else pin_one_core()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: list[dict[str, Any]] = []
    for name in bench_modules(args.only):
        started = time.perf_counter()
        try:
            res = importlib.import_module(f"benchmarks.{name}").run(args)
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            res = result(name.removeprefix("bench_"), [figure("error", f"{type(exc).__name__}: {exc}", target=0.0)])
        res["seconds"] = round(time.perf_counter() - started, 2)
        results.append(res)
    print_results(results)
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_pinned": cpu,
        "seconds": args.seconds,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"written {args.json}")
    misses = [f for r in results for f in r["figures"] if f["status"] == "MISS"]
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
