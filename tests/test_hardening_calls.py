"""Issue 9 hardening of `emostream calls`: unusable models (3), crashed workers (3), Ctrl-C / SIGTERM (8)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from conftest import fixture_clip, run_cli

from emostream.apps.calls import batch
from emostream.apps.calls.analysis import CallAnalyzer, CallJob
from emostream.apps.calls.batch import BatchOptions, run_batch
from emostream.config import Config, apply_overrides
from emostream.inference.metadata import resolve_model


def broken_model(tmp_path: Path, model_arg: str, kind: str) -> Path:
    json_path = resolve_model(model_arg)
    meta = json.loads(json_path.read_text())
    tflite = json_path.with_name(meta["tflite_file"]).read_bytes()
    target = tmp_path / kind
    target.mkdir()
    if kind == "truncated":
        tflite = tflite[: len(tflite) // 3]
    elif kind == "hash":
        tflite = tflite[:-1] + bytes([tflite[-1] ^ 1])
    elif kind == "labels":
        meta["labels"] = meta["labels"][:-1]
    (target / meta["tflite_file"]).write_bytes(tflite)
    (target / json_path.name).write_text(json.dumps(meta))
    return target / json_path.name


@pytest.mark.parametrize("kind", ["truncated", "hash", "labels"])
def test_an_unusable_model_exits_5_once_with_live_modes_message(tmp_path: Path, model_arg: str, kind: str) -> None:
    model = str(broken_model(tmp_path, model_arg, kind))
    calls = run_cli("calls", str(fixture_clip(1, 5)), "--out", str(tmp_path / "out"), "--jobs", "2", "--model", model)
    live = run_cli("--file", str(fixture_clip(1, 5)), "--fast", "--no-dashboard", "--model", model)
    assert calls.returncode == live.returncode == 5
    err = calls.stderr.decode()
    assert err == live.stderr.decode() and err.count("emostream: error:") == 1 and "Traceback" not in err


def test_a_crashed_worker_is_a_per_call_error() -> None:
    job = CallJob(Path("a.wav"), "a")
    crashed: Future[object] = Future()
    crashed.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
    _, summary, error = batch._outcome(crashed, job)
    assert summary is None and error is not None and "worker process stopped unexpectedly" in error
    raised: Future[object] = Future()
    raised.set_exception(ValueError("bad"))
    assert "ValueError: bad" in (batch._outcome(raised, job)[2] or "")


def test_an_exception_while_analysing_fails_that_call_only(
    tmp_path: Path, model_arg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = CallAnalyzer.analyze

    def flaky(self: CallAnalyzer, job: CallJob) -> object:
        if job.key == "bad":
            raise RuntimeError("unexpected")
        return original(self, job)

    monkeypatch.setattr(CallAnalyzer, "analyze", flaky)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("bad", "good"):
        (folder / f"{name}.flac").write_bytes(fixture_clip(1, 5).read_bytes())
    cfg = apply_overrides(Config(), {"model": {"name": model_arg}})
    options = BatchOptions(cfg=cfg, out_dir=tmp_path / "out", png=False)
    result = run_batch([folder], options, progress=False, in_process=True)
    assert list(result.summaries) == ["good"] and result.exit_code == 3
    assert "internal error while analysing it (RuntimeError: unexpected)" in result.failed[0][1]


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found |= {int(p) for p in text.split()}
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupting_a_batch_stops_the_workers_and_writes_partial_reports(
    tmp_path: Path, model_arg: str, sig: signal.Signals, code: int
) -> None:
    demo = Path(__file__).parents[1] / "streamer" / "assets" / "demo.flac"
    folder = tmp_path / "in"
    folder.mkdir()
    n_calls = 48  # enough that the batch is still running when the signal comes, even on a fast idle machine
    for i in range(n_calls):
        (folder / f"call{i}.flac").write_bytes(demo.read_bytes())
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "emostream", "calls", str(folder), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(
        [*argv, "--no-png", "--no-progress", "--model", model_arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ,
    )
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while time.monotonic() < deadline and len(workers) < 2:  # the resource tracker + two workers
        workers = children(proc.pid)
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(sig)
    out_bytes, err_bytes = proc.communicate(timeout=60)
    err = err_bytes.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "interrupted:" in out_bytes.decode()
    time.sleep(0.5)
    assert not [pid for pid in workers if alive(pid)], "workers outlived the batch"
    rows = list(csv.DictReader((out / "calls.csv").open()))
    assert len({r["call"] for r in rows}) == n_calls and any(r["status"] == "not analysed" for r in rows)
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["interrupted"] is True and summary["not_analysed"] >= 1
