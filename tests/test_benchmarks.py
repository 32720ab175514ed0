"""Smoke tests of the benchmark harness: every benchmark runs on a tiny input and reports its figures.

No timing is asserted here; the figures themselves are for `python -m benchmarks`.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder of the checkout, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.__main__ import bench_modules, parse_args  # noqa: E402
from benchmarks.common import FIGURE_KEYS, RESULT_KEYS, available_models, demo_path, figure  # noqa: E402

MODELS = available_models()
needs_model = pytest.mark.skipif(not MODELS, reason="no shipped model in models/ yet")


def test_figure_status_against_target() -> None:
    assert figure("rtf", 0.001, target=0.002)["status"] == "PASS"
    assert figure("rtf", 0.003, target=0.002)["status"] == "MISS"
    assert figure("speed", 400.0, target=500.0, better="higher")["status"] == "MISS"
    assert figure("speed", 600.0, target=500.0, better="higher")["status"] == "PASS"
    assert figure("missing", None, target=1.0)["status"] == "MISS"
    assert figure("nan", float("nan"), target=1.0)["status"] == "MISS"
    assert figure("flag", False)["status"] == "MISS"
    assert figure("info", 3.0)["status"] == "INFO"
    assert set(FIGURE_KEYS) <= set(figure("x", 1.0))


def test_benchmarks_are_discovered() -> None:
    names = bench_modules()
    assert {"bench_pipeline", "bench_runtime"} <= set(names)
    assert bench_modules(["pipeline"]) == ["bench_pipeline"]


@needs_model
@pytest.mark.parametrize("module", bench_modules())
def test_benchmark_runs_and_reports(module: str) -> None:
    args = parse_args(["--quick", "--seconds", "2", "--startup-runs", "1", "--model", MODELS[0]])
    res = importlib.import_module(f"benchmarks.{module}").run(args)
    assert set(RESULT_KEYS) <= set(res)
    assert res["figures"]
    for fig in res["figures"]:
        assert set(FIGURE_KEYS) <= set(fig), fig
        assert fig["status"] in {"PASS", "MISS", "INFO"}


@needs_model
def test_probe_runs_with_tensorflow_blocked() -> None:
    cmd = [sys.executable, "-m", "benchmarks.probe", "--model", MODELS[0], "--file", str(demo_path())]
    done = subprocess.run(
        [*cmd, "--block-tensorflow"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert lines[0]["type"] == "hop"
    report = lines[-1]
    assert report["type"] == "probe" and report["blocked"]
    assert report["hops"] > 100  # the 77 s demo gives one hop per 0.5 s
    assert not report["tensorflow_imported"] and not report["keras_imported"]
    assert report["vmhwm_kb"] > 0
