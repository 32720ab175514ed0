"""Issue 9, items 6 and 7: a full --jsonl disk, and alert delivery (counts, start-up check, stamps, no stderr)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip, run_cli

from emostream.alerts.delivery import AlertDelivery, AlertOutput
from emostream.alerts.rules import AlertEvent
from emostream.audio.files import load_mono
from emostream.errors import ConfigError
from emostream.outputs.jsonl import JsonlSink, JsonlWriteError

RUN = ("--fast", "--no-dashboard")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 kB tmpfs (needs root); skips cleanly where mounting is refused."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def _complete_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a half-written line is left at the end"
    return [json.loads(line) for line in data.decode().splitlines()]


def test_sink_on_a_full_disk_keeps_whole_records_and_raises_a_clear_error(tiny_disk: Path) -> None:
    path = tiny_disk / "events.jsonl"
    sink = JsonlSink(path, {"type": "start"})
    record = {"type": "hop", "pad": "x" * 700}
    with pytest.raises(JsonlWriteError, match="disk is full") as err:
        for _ in range(10000):
            sink.write(record)
    assert err.value.exit_code == 3
    lines = _complete_lines(path)
    assert len(lines) == sink.records and lines[0] == {"type": "start"} and lines[-1] == record
    sink.write(record)  # after the failure: silently nothing
    sink.close()
    assert len(_complete_lines(path)) == len(lines)


def test_sink_on_dev_full_raises_at_the_first_record() -> None:
    with pytest.raises(JsonlWriteError, match="after 0 complete records"):
        JsonlSink("/dev/full", {"type": "start"})


def _long_file(tmp_path: Path, seconds: float) -> Path:
    clip = load_mono(fixture_clip(1, 5), 16000)
    audio = np.tile(clip, int(np.ceil(seconds * 16000 / clip.size)))
    path = tmp_path / "long.wav"
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def test_cli_disk_full_mid_run_exits_3_with_the_summary_and_whole_records(
    tiny_disk: Path, tmp_path: Path, model_arg: str
) -> None:
    audio = _long_file(tmp_path, 240)
    out = tiny_disk / "events.jsonl"
    proc = run_cli("--file", str(audio), *RUN, "--jsonl", str(out), "--model", model_arg)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "disk is full" in err and "Traceback" not in err
    assert "session summary" in proc.stdout.decode()
    lines = _complete_lines(out)
    assert lines[0]["type"] == "start" and all(r["type"] == "hop" for r in lines[1:])
    assert len(lines) > 10


# ---------------------------------------------------------------- alert delivery


def _alert(i: int = 0) -> AlertEvent:
    return AlertEvent("a", "fired", 0, "customer", 1.0 + i, 6.0 + i, ("angry",), 0.6, 0.8, 0.9, {"angry": 0.8})


def test_missing_alert_command_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match="no-such-alert-program") as err:
        AlertDelivery(AlertOutput(command="no-such-alert-program --flag"))
    assert err.value.exit_code == 2


def test_failed_deliveries_are_counted_shown_as_messages_and_never_logged_to_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    delivery = AlertDelivery(AlertOutput(command=(sys.executable, "-c", "raise SystemExit(1)"), retries=0))
    delivery.on_event(_alert(0))
    delivery.on_event(_alert(1))
    counts = delivery.settle()
    assert counts == {"delivered": 0, "failed": 2, "dropped": 0, "pending": 0}
    assert delivery.messages and "2 failed" in delivery.messages[0]
    delivery.on_end(object())  # idempotent after settle
    assert capfd.readouterr().err == ""


def test_pending_deliveries_are_counted_when_settling_gives_up() -> None:
    slow = (sys.executable, "-c", "import time; time.sleep(3)")
    delivery = AlertDelivery(AlertOutput(command=slow, timeout_s=10.0, queue_size=2), settle_timeout_s=0.3)
    for i in range(4):
        delivery.on_event(_alert(i))
    counts = delivery.settle()
    assert counts["delivered"] == 0 and counts["failed"] == 0 and counts["dropped"] >= 1
    assert counts["pending"] >= 1 and counts["dropped"] + counts["pending"] == 4


def _alert_config(tmp_path: Path, command: list[str]) -> Path:
    cfg = tmp_path / "alerts.toml"
    cfg.write_text(
        '[[alerts]]\nname = "any"\nemotions = ["neutral", "happy", "sad", "angry"]\n'
        "threshold = 0.1\nmin_duration_s = 0.5\n\n"
        f"[alerts_output]\ncommand = {json.dumps(command)}\nretries = 0\n",
        encoding="utf-8",
    )
    return cfg


def test_cli_alert_payloads_and_hops_carry_source_session_and_time_and_end_counts(
    tmp_path: Path, model_arg: str
) -> None:
    got = tmp_path / "got.jsonl"
    script = f"import sys; open({str(got)!r}, 'a').write(sys.stdin.read() + '\\n')"
    cfg = _alert_config(tmp_path, [sys.executable, "-c", script])
    clip = fixture_clip(1, 5)
    proc = run_cli("--file", str(clip), *RUN, "--jsonl", "-", "--config", str(cfg), "--model", model_arg)
    assert proc.returncode == 0, proc.stderr.decode()
    recs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    start, hops, end = recs[0], [r for r in recs if r["type"] == "hop"], recs[-1]
    sid = start["session_id"]
    assert uuid.UUID(sid).version == 4
    assert all(h["session_id"] == sid and h["source"] == f"file {clip.name}" for h in hops)
    assert all(h["time"].endswith("+00:00") and "T" in h["time"] for h in hops)
    payloads = [json.loads(line) for line in got.read_text().splitlines()]
    assert payloads and all(
        p["session_id"] == sid and p["source"] == f"file {clip.name}" and p["time"] for p in payloads
    )
    assert end["session_id"] == sid
    assert end["alert_delivery"] == {"delivered": len(payloads), "failed": 0, "dropped": 0, "pending": 0}
    assert b"delivered" in proc.stderr  # the printed summary (on stderr: stdout carries JSONL)


def test_cli_missing_alert_command_exits_2_naming_it_before_writing(tmp_path: Path, model_arg: str) -> None:
    cfg = _alert_config(tmp_path, ["/nonexistent/notify-team"])
    out = tmp_path / "events.jsonl"
    proc = run_cli("--file", str(fixture_clip(1, 5)), *RUN, "--jsonl", str(out), "--config", str(cfg))
    assert proc.returncode == 2, proc.stderr.decode()
    assert b"/nonexistent/notify-team" in proc.stderr and b"Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_failed_deliveries_are_in_the_end_record_and_summary_not_warnings(tmp_path: Path, model_arg: str) -> None:
    cfg = _alert_config(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"])
    proc = run_cli("--file", str(fixture_clip(1, 5)), *RUN, "--jsonl", "-", "--config", str(cfg), "--model", model_arg)
    assert proc.returncode == 0, proc.stderr.decode()
    end = json.loads(proc.stdout.decode().splitlines()[-1])
    assert end["alert_delivery"]["failed"] >= 1 and end["alert_delivery"]["delivered"] == 0
    err = proc.stderr.decode()
    assert "failed" in err and "WARNING" not in err and "attempt" not in err
