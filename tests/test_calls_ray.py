"""`emostream calls --ray` (issue 11): Ray tasks give the `--jobs 1` summaries, resume, one error per bad file,
Ctrl-C / SIGTERM cancel the tasks, missing ray and bad addresses exit 2.

The Ray tests run against local instances on 127.0.0.1 that they start and stop (2 CPUs, no dashboard);
they skip when ray is not installed.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip, run_cli

from emostream.apps.calls import cluster
from emostream.apps.calls.analysis import CallJob
from emostream.apps.calls.batch import BatchOptions, run_batch
from emostream.apps.calls.cluster import RayExecutor, RaySettings
from emostream.apps.cli import main
from emostream.config import Config, apply_overrides
from emostream.errors import ConfigError

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'emostream[cluster]')")
DEMO = Path(__file__).parents[1] / "streamer" / "assets" / "demo.flac"
RAY_ENV = {cluster.USAGE_STATS_ENV: "0", cluster.LOOPBACK_ENV: "0"}  # no usage report; 127.0.0.1 only


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    """A local Ray instance on 127.0.0.1 (2 CPUs, no dashboard) for this module's in-process tests."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed")
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # read when ray is imported
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        object_store_memory=cluster.LOCAL_OBJECT_STORE_BYTES,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def call_folder(root: Path, n_demo: int = 0) -> Path:
    """``root/in``: four fixture clips (angry, sad, happy, neutral), a corrupt WAV and ``n_demo`` demo copies."""
    folder = root / "in"
    (folder / "sub").mkdir(parents=True)
    for emotion in (5, 4, 3):
        (folder / f"clip{emotion}.flac").write_bytes(fixture_clip(1, emotion).read_bytes())
    (folder / "sub" / "clip1.flac").write_bytes(fixture_clip(2, 1).read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    for i in range(n_demo):
        (folder / f"demo{i:02d}.flac").write_bytes(DEMO.read_bytes())
    return folder


def batch_options(out: Path, model_arg: str, png: bool = False) -> BatchOptions:
    return BatchOptions(cfg=apply_overrides(Config(), {"model": {"name": model_arg}}), out_dir=out, bin_s=2.0, png=png)


def summaries(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.json")) if p.name != "batch_summary.json"}


@pytest.mark.slow
def test_ray_gives_the_jobs_1_summaries_lists_bad_files_and_resumes(
    tmp_path: Path, model_arg: str, ray_instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative inputs: the workers get absolute paths, the summaries name them as given
    call_folder(tmp_path)
    one = run_batch(["in"], batch_options(Path("one"), model_arg), jobs=1, progress=False, in_process=True)
    executor = RayExecutor(RaySettings())
    on_ray = run_batch(["in"], batch_options(Path("ray"), model_arg, png=True), progress=False, executor=executor)
    assert len(one.summaries) == 4 and summaries(Path("ray")) == summaries(Path("one"))  # byte for byte
    assert on_ray.failed == one.failed and [p for p, _ in on_ray.failed] == ["in/broken.wav"]
    assert "in/broken.wav" in on_ray.failed[0][1] and str(tmp_path) not in on_ray.failed[0][1]
    assert on_ray.exit_code == 3 and executor.jobs == 2
    assert all((Path("ray") / f"{key}.png").read_bytes().startswith(b"\x89PNG") for key in on_ray.summaries)
    batch = json.loads((Path("ray") / "batch_summary.json").read_text())
    assert batch["failed"][0]["path"] == "in/broken.wav" and batch["processed"] == 4 and batch["jobs"] == 2
    again = run_batch(["in"], batch_options(Path("ray"), model_arg, png=True), progress=False, executor=executor)
    assert sorted(again.skipped) == sorted(one.summaries) and len(again.failed) == 1


@pytest.mark.slow
def test_a_task_whose_worker_dies_is_that_calls_error(tmp_path: Path, model_arg: str, ray_instance: Any) -> None:
    ray = ray_instance

    def die() -> None:
        os._exit(1)

    crashed = ray.remote(max_retries=0)(die).remote()
    job = CallJob(path=tmp_path / "a.wav", key="a")
    _, summary, error = cluster._saved(ray, crashed, job, batch_options(tmp_path, model_arg))
    assert summary is None and error is not None
    assert "the Ray task failed" in error and "run the batch again" in error


@pytest.mark.slow
def test_stopping_the_batch_cancels_queued_and_running_tasks(tmp_path: Path, model_arg: str, ray_instance: Any) -> None:
    ray = ray_instance
    folder = tmp_path / "long"
    folder.mkdir()
    audio, rate = sf.read(DEMO, dtype="float32")
    for i in range(6):  # 6 calls of 3 x 77 s: seconds of work each, more than the 2 CPUs finish in the test
        sf.write(folder / f"long{i}.flac", np.tile(audio, 3), rate)
    options = dataclasses.replace(batch_options(tmp_path / "out", model_arg), fingerprint="test")
    options.out_dir.mkdir()
    jobs = [CallJob(path=p, key=p.stem) for p in sorted(folder.glob("*.flac"))]
    outcomes = RayExecutor(RaySettings()).run(jobs, options)
    first = next(outcomes)  # one call done: the next ones run or wait in the queue
    assert first[1] is not None, first[2]
    assert ray.available_resources().get("CPU", 0) < 2
    outcomes.close()  # what Ctrl-C / SIGTERM do to the batch: the executor cancels its tasks
    # a running task stops at its next Python bytecode: within a second on an idle machine, several under load
    # (15 s ran out twice with two evaluation jobs sharing CI's two cores; the wait ends as soon as both are free)
    deadline = time.monotonic() + 45.0
    while time.monotonic() < deadline and ray.available_resources().get("CPU", 0) < 2:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 2, "tasks kept running after the batch stopped"
    time.sleep(1.0)  # nothing queued starts later either
    assert ray.available_resources().get("CPU", 0) == 2 and len(list((tmp_path / "out").glob("*.json"))) == 1


def _wait_for_free_cpus(ray: Any, cpus: float, timeout_s: float = 30.0) -> None:
    """Wait until the cluster has ``cpus`` CPUs free (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < cpus:
        if time.monotonic() > deadline:
            pytest.fail(f"the test cluster still has {ray.available_resources().get('CPU', 0)} of {cpus} CPUs free")
        time.sleep(0.1)


@pytest.mark.slow
def test_jobs_caps_the_calls_at_once_on_a_cluster(tmp_path: Path, model_arg: str, ray_instance: Any) -> None:
    ray = ray_instance
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"demo{i}.flac").write_bytes(DEMO.read_bytes())
    free: list[float] = []
    done = threading.Event()
    _wait_for_free_cpus(ray, 2.0)  # an earlier test's cancelled task may still be letting go of its CPU

    def watch() -> None:
        while not done.wait(0.05):
            free.append(ray.available_resources().get("CPU", 0.0))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        executor = RayExecutor(RaySettings(max_jobs=1))
        result = run_batch([folder], batch_options(tmp_path / "out", model_arg), progress=False, executor=executor)
    finally:
        done.set()
        watcher.join()
    assert len(result.summaries) == 4 and executor.jobs == 1
    assert 1.0 in free and min(free) == 1.0, "more than one call ran at once"  # one of the 2 CPUs stayed free


@pytest.mark.slow
def test_cli_on_an_existing_cluster_leaves_it_running(tmp_path: Path, model_arg: str, ray_instance: Any) -> None:
    ray = ray_instance
    folder = call_folder(tmp_path)
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    argv = ["calls", str(folder), "--ray", address, "--out", str(tmp_path / "out"), "--no-png", "--no-progress"]
    proc = run_cli(*argv, "--model", model_arg, timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    # one line for the run, one error for the corrupt file, no traceback and no Ray log lines
    assert err.count("emostream: error:") == 1 and "broken.wav" in err and "Traceback" not in err
    assert all(line.startswith("emostream: ") for line in err.splitlines()), err
    assert "4 call(s) analysed, 0 already done, 1 failed" in proc.stdout.decode()
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with_children = task / "children"
        for child in (int(p) for p in with_children.read_text().split()) if with_children.exists() else ():
            found |= {child, *descendants(child)}
    return found


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed")
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupting_cancels_the_tasks_stops_ray_and_writes_partial_reports(
    tmp_path: Path, model_arg: str, sig: signal.Signals, code: int
) -> None:
    folder = call_folder(tmp_path, n_demo=24)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "emostream", "calls", str(folder), "--out", str(out), "--ray", "--jobs", "2"]
    proc = subprocess.Popen(
        [*argv, "--no-png", "--no-progress", "--model", model_arg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **RAY_ENV},
        start_new_session=True,  # its own process group, as a command run from a terminal
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(out.glob("demo*.json")) and proc.poll() is None:
        time.sleep(0.2)  # until the first demo call is written: Ray is up and the tasks run
    ray_processes = descendants(proc.pid)
    assert ray_processes and proc.poll() is None
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal: the whole foreground group, Ray's processes included
    else:
        proc.send_signal(sig)  # kill / docker stop: the driver only
    out_bytes, err_bytes = proc.communicate(timeout=120)
    err = err_bytes.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "interrupted:" in out_bytes.decode()
    assert all(line.startswith("emostream: ") for line in err.splitlines()), err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in ray_processes):
        time.sleep(0.2)
    assert not [p for p in ray_processes if alive(p)], "Ray processes outlived the batch"
    rows = list(csv.DictReader((out / "calls.csv").open()))
    assert len({r["call"] for r in rows}) == 29 and any(r["status"] == "not analysed" for r in rows)
    batch = json.loads((out / "batch_summary.json").read_text())
    assert batch["interrupted"] is True and batch["not_analysed"] >= 1 and batch["processed"] >= 1
    assert all(f["path"].endswith("broken.wav") for f in batch["failed"]), batch["failed"]  # cancelled, not failed


def test_without_ray_the_command_exits_2_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    code = main(["calls", str(fixture_clip(1, 5)), "--out", str(tmp_path / "out"), "--ray"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("emostream: error:") == 1
    assert "needs the cluster extras" in err and "pip install 'emostream[cluster]'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["local", "auto", "head:6379", "ray://10.0.0.5:10001", "[::1]:6379"])
def test_ray_addresses(address: str) -> None:
    assert RaySettings(address=address).address == address


@pytest.mark.parametrize("address", ["/data/calls", "head", "head:port", "head:70000", "ray://", ":6379"])
def test_what_is_not_a_ray_address_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="is not a Ray address; expected nothing"):
        RaySettings(address=address)
    with pytest.raises(ConfigError, match="--jobs is 0"):
        RaySettings(max_jobs=0)


@needs_ray
def test_an_unreachable_or_malformed_address_exits_2_without_traceback(tmp_path: Path) -> None:
    clip = str(fixture_clip(1, 5))
    for address, message in [("127.0.0.1:1", "nothing answers at 127.0.0.1:1"), ("calls", "is not a Ray address")]:
        proc = run_cli("calls", clip, "--out", str(tmp_path / "out"), "--ray", address, env=RAY_ENV)
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        assert message in err and err.count("emostream: error:") == 1 and "Traceback" not in err


def test_auto_is_resolved_as_ray_resolves_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert RaySettings(address="auto").target == "auto"  # no cluster known: Ray looks for running processes
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.7:6379\n")  # what `ray start` leaves
    assert RaySettings(address="auto").target == "10.0.0.7:6379"
    assert not RaySettings(address="auto").loopback
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # the environment comes first
    settings = RaySettings(address="auto")
    assert settings.target == "127.0.0.1:1" and settings.loopback
    with pytest.raises(ConfigError, match=r"--ray auto: nothing answers at 127\.0\.0\.1:1"):
        settings.check_reachable()
    assert RaySettings(address="10.0.0.9:6379").target == "10.0.0.9:6379" and RaySettings().target == "local"


def test_a_worker_loads_the_model_once_and_refuses_a_different_one(
    tmp_path: Path, model_arg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "_WORKER", None)  # as in a fresh worker process
    made: list[object] = []
    original = cluster.CallAnalyzer.__init__

    def counting(self: cluster.CallAnalyzer, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(cluster.CallAnalyzer, "__init__", counting)
    options = dataclasses.replace(batch_options(tmp_path, model_arg), fingerprint="f1")
    sha = cluster._model_sha256(options)
    clips = [CallJob(path=fixture_clip(1, e), key=f"c{e}") for e in (3, 4, 5)]
    results = [cluster._analyse_on_worker(job, (options, sha)) for job in clips]
    assert all(summary is not None for summary, _, _ in results) and len(made) == 1
    monkeypatch.setattr(cluster, "_WORKER", None)
    summary, png, error = cluster._analyse_on_worker(clips[0], (options, "0" * 64))
    assert summary is None and png is None and error is not None
    assert "cannot analyse calls: its model file differs from the driver's" in error and len(made) == 1
