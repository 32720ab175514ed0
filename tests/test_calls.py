"""Batch mode for recorded calls: stereo fixtures, roles, resume, corrupt files, G.711, CLI."""

from __future__ import annotations

import csv
import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip, run_cli

from emostream.apps import calls
from emostream.apps.calls import BatchOptions, run_batch
from emostream.audio.files import load_mono, resample
from emostream.config import Config, config_from_dict
from emostream.engine.labels import FOUR
from emostream.errors import ConfigError
from emostream.inference.model import EmotionModel

RATE = 16000
ANGRY, SAD = 5, 4  # RAVDESS emotion codes


def stereo_call(
    left_emotion: int = ANGRY, right_emotion: int = SAD, actor: int = 1, left_repeats: int = 1
) -> np.ndarray:
    """A two-party call, float32 (n, 2) at 16 kHz: the left party speaks (its clip ``left_repeats``
    times in a row), then the right, with silence around."""
    left = np.concatenate([load_mono(fixture_clip(actor, left_emotion), RATE)] * left_repeats)
    right = load_mono(fixture_clip(actor, right_emotion), RATE)
    gap = np.zeros(RATE, dtype=np.float32)
    ch0 = np.concatenate([gap, left, gap, np.zeros_like(right), gap])
    ch1 = np.concatenate([gap, np.zeros_like(left), gap, right, gap])
    return np.stack([ch0, ch1], axis=1)


def config(text: str = "", model_arg: str = "resnet_mlp") -> Config:
    return config_from_dict(tomllib.loads(f'[model]\nname = "{model_arg}"\n' + text), "test.toml")


BOTH_ANALYSED = """
[[channels]]
index = 0
role = "customer"
[[channels]]
index = 1
role = "customer_b"
"""


def options(tmp_path: Path, model_arg: str, text: str = "", png: bool = False) -> BatchOptions:
    return BatchOptions(cfg=config(text, model_arg), out_dir=tmp_path / "out", bin_s=2.0, png=png)


def test_channels_are_analysed_independently_and_differ(tmp_path: Path, model: EmotionModel, model_arg: str):
    call = stereo_call()
    sf.write(tmp_path / "call.wav", call, RATE, subtype="PCM_16")
    sf.write(tmp_path / "left_only.wav", call[:, 0], RATE, subtype="PCM_16")
    opts = options(tmp_path, model_arg, BOTH_ANALYSED)
    result = run_batch([tmp_path / "call.wav", tmp_path / "left_only.wav"], opts, progress=False)
    assert result.failed == [] and result.exit_code == 0
    stereo, mono = result.summaries["call"], result.summaries["left_only"]
    left, right = stereo["channels"]
    assert (left["role"], right["role"], mono["channels"][0]["role"]) == ("customer", "customer_b", "customer")
    # Channel 0 of the stereo call gives exactly what the left party alone gives: no cross-talk.
    for key in ("speech_s", "shares", "peaks", "timeline", "emotion_s"):
        assert left[key] == mono["channels"][0][key], key
    # Each party speaks in its own turn: speech lies in different timeline bins.
    speech_bins = [[b["speech_s"] > 0 for b in ch["timeline"]] for ch in (left, right)]
    assert speech_bins[0] != speech_bins[1]
    assert left["speech_s"] > 1.0 and right["speech_s"] > 1.0
    assert left["shares"] != right["shares"]

    # The angry party scores higher on angry, the sad party on sad over their speech (fixture clips the
    # model was trained on; a party's first, partly silent window may read otherwise).
    def mean_score(channel: dict, label: str) -> float:
        return float(np.mean([b["scores"][label] for b in channel["timeline"] if b["scores"]]))

    assert mean_score(left, "angry") > mean_score(right, "angry")
    assert mean_score(right, "sad") > mean_score(left, "sad")


def test_agent_channel_is_metered_not_analysed_by_default(tmp_path: Path, model: EmotionModel, model_arg: str):
    sf.write(tmp_path / "call.flac", stereo_call(), RATE)
    result = run_batch([tmp_path], options(tmp_path, model_arg), progress=False)
    customer, agent = result.summaries["call"]["channels"]
    assert (customer["role"], customer["analysed"]) == ("customer", True)
    assert (agent["role"], agent["analysed"]) == ("agent", False)
    assert agent["speech_s"] > 1.0  # metered
    assert agent["shares"] == {} and agent["peaks"] == {} and agent["dominant"] is None
    assert all("scores" not in b and "emotion" not in b for b in agent["timeline"])
    allowed = options(tmp_path / "allowed", model_arg, "[privacy]\nallow_agent_analysis = true\n")
    agent2 = run_batch([tmp_path / "call.flac"], allowed, progress=False).summaries["call"]["channels"][1]
    assert agent2["analysed"] and agent2["peaks"]


def test_alert_rules_run_per_channel(tmp_path: Path, model: EmotionModel, model_arg: str):
    # Sum of all labels is 1 on every speech hop: a rule at 0.5 over 1 s must fire on speech, once per turn.
    # The turn is two clips long: a stream's first readings may be uncertain (alerts skip those),
    # and one 3.5 s clip leaves the default model less than 1 s of certain readings.
    labels = json.dumps(list(FOUR))  # the shown labels ([labels] default)
    rule = f"""
[[alerts]]
name = "any_emotion"
emotions = {labels}
threshold = 0.5
min_duration_s = 1.0
max_gap_s = 0.75
roles = ["customer"]
"""
    sf.write(tmp_path / "call.wav", stereo_call(left_repeats=2), RATE)
    summary = run_batch([tmp_path / "call.wav"], options(tmp_path, model_arg, rule), progress=False).summaries["call"]
    customer, agent = summary["channels"]
    fired = [a for a in customer["alerts"] if a["state"] == "fired"]
    assert len(fired) == 1 and fired[0]["rule"] == "any_emotion" and fired[0]["channel"] == 0
    assert fired[0]["t_end"] - fired[0]["t_start"] >= 1.0
    assert agent["alerts"] == []  # agent channel: no scores, and the rule is for customers


def test_resume_skips_finished_calls_and_redoes_changed_ones(tmp_path: Path, model: EmotionModel, model_arg: str):
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    for i in range(2):
        sf.write(calls_dir / f"c{i}.wav", stereo_call(actor=1 + i), RATE)
    opts = options(tmp_path, model_arg)
    first = run_batch([calls_dir], opts, progress=False)
    assert sorted(first.summaries) == ["c0", "c1"] and first.skipped == []
    stamp = (opts.out_dir / "c0.json").stat().st_mtime_ns
    second = run_batch([calls_dir], opts, progress=False)
    assert sorted(second.skipped) == ["c0", "c1"]
    assert (opts.out_dir / "c0.json").stat().st_mtime_ns == stamp
    assert second.summaries == first.summaries
    batch = json.loads((opts.out_dir / "batch_summary.json").read_text())
    assert (batch["processed"], batch["skipped"], batch["failed"]) == (0, 2, [])
    os.utime(calls_dir / "c1.wav", ns=(1, 1))  # the recording changed: summarise it again
    third = run_batch([calls_dir], opts, progress=False)
    assert third.skipped == ["c0"]
    # Other settings (here: the smoothing, off its default) make every summary stale.
    changed = options(tmp_path, model_arg, "[smoothing]\ntime_constant_s = 0.5\n")
    assert run_batch([calls_dir], changed, progress=False).skipped == []
    assert run_batch([calls_dir], changed, progress=False).skipped == ["c0", "c1"]


def test_corrupt_files_are_reported_and_skipped(tmp_path: Path, model: EmotionModel, model_arg: str):
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    sf.write(calls_dir / "good.wav", stereo_call(), RATE)
    (calls_dir / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(200))
    (calls_dir / "empty.flac").write_bytes(b"")
    opts = options(tmp_path, model_arg)
    result = run_batch([calls_dir], opts, progress=False)
    assert list(result.summaries) == ["good"]
    assert sorted(Path(p).name for p, _ in result.failed) == ["broken.wav", "empty.flac"]
    assert all("cannot be decoded" in e for _, e in result.failed)
    assert result.exit_code == 3
    batch = json.loads((opts.out_dir / "batch_summary.json").read_text())
    assert sorted(Path(f["path"]).name for f in batch["failed"]) == ["broken.wav", "empty.flac"]
    rows = list(csv.DictReader((opts.out_dir / "calls.csv").open()))
    assert sorted((r["call"], r["status"]) for r in rows) == [
        ("broken", "error"),
        ("empty", "error"),
        ("good", "ok"),
        ("good", "ok"),
    ]
    assert not (opts.out_dir / "broken.json").exists()


def test_g711_8khz_stereo_call(tmp_path: Path, model: EmotionModel, model_arg: str):
    call = stereo_call()
    narrow = np.asarray(resample(call, RATE, 8000), dtype=np.float32)
    sf.write(tmp_path / "ulaw.wav", narrow, 8000, subtype="ULAW")
    sf.write(tmp_path / "alaw.wav", narrow, 8000, subtype="ALAW")
    result = run_batch([tmp_path / "ulaw.wav", tmp_path / "alaw.wav"], options(tmp_path, model_arg), progress=False)
    assert result.failed == []
    for key in ("ulaw", "alaw"):
        summary = result.summaries[key]
        assert summary["rate_hz"] == 8000
        assert summary["duration_s"] == pytest.approx(call.shape[0] / RATE, abs=1e-3)
        assert summary["channels"][0]["speech_s"] > 1.0 and summary["channels"][0]["peaks"]


@pytest.mark.slow
def test_two_jobs_give_the_same_summaries_as_one(tmp_path: Path, model: EmotionModel, model_arg: str):
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    for i in range(3):
        sf.write(calls_dir / f"c{i}.wav", stereo_call(ANGRY if i != 1 else SAD, SAD, actor=1 + i % 2), RATE)
    one = run_batch([calls_dir], options(tmp_path / "one", model_arg), jobs=1, progress=False)
    two = run_batch([calls_dir], options(tmp_path / "two", model_arg), jobs=2, progress=False)
    strip = lambda s: {k: v for k, v in s.items() if k != "input"}  # noqa: E731
    assert {k: strip(v) for k, v in one.summaries.items()} == {k: strip(v) for k, v in two.summaries.items()}


def test_png_per_call_and_warning_without_matplotlib(tmp_path, model, model_arg, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    sf.write(tmp_path / "call.wav", stereo_call(), RATE)
    opts = options(tmp_path, model_arg, png=True)
    run_batch([tmp_path / "call.wav"], opts, progress=False)
    png = (opts.out_dir / "call.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    real_find_spec = calls.batch.importlib.util.find_spec
    monkeypatch.setattr(
        calls.batch.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real_find_spec(name)
    )
    opts2 = options(tmp_path / "nompl", model_arg, png=True)
    result = run_batch([tmp_path / "call.wav"], opts2, progress=False)
    assert "pip install 'emostream[calls]'" in capsys.readouterr().err
    assert (opts2.out_dir / "call.json").exists() and not (opts2.out_dir / "call.png").exists()
    assert result.exit_code == 0


def test_duplicate_names_get_distinct_outputs(tmp_path: Path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "call.wav").write_bytes(b"")
    keys = [j.key for j in calls.find_calls([tmp_path])]
    assert keys == ["call", "call-2"]
    with pytest.raises(ConfigError, match="no such file"):
        calls.find_calls([tmp_path / "missing"])


@pytest.mark.slow
def test_cli_calls_command(tmp_path: Path, model: EmotionModel, model_arg: str):
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    sf.write(calls_dir / "one.wav", stereo_call(), RATE)
    (calls_dir / "bad.wav").write_bytes(b"not audio at all")
    out = tmp_path / "out"
    proc = run_cli("calls", str(calls_dir), "--out", str(out), "--no-png", "--no-progress", "--model", model_arg)
    assert proc.returncode == 3, proc.stderr.decode()
    assert b"bad.wav: cannot be decoded" in proc.stderr and b"(call skipped)" in proc.stderr
    assert b"1 call(s) analysed, 0 already done, 1 failed" in proc.stdout
    assert json.loads((out / "one.json").read_text())["channels"][1]["analysed"] is False
    again = run_cli("calls", str(calls_dir), "--out", str(out), "--no-png", "--no-progress", "--model", model_arg)
    assert b"0 call(s) analysed, 1 already done, 1 failed" in again.stdout


def test_timeline_bin_ties_do_not_depend_on_string_hashing():
    from emostream.engine.events import HopResult

    def hop(t_end: float, emotion: str) -> HopResult:
        return HopResult(t_end - 2, t_end, 1.0, True, None, {"sad": 0.5, "angry": 0.5}, emotion, 0.5, 0.1)

    hops = [hop(2.0, "sad"), hop(2.5, "angry"), hop(3.0, "sad"), hop(3.5, "angry")]
    bins = calls.analysis._timeline(hops, ["sad", "angry"], 10.0, 4.0, hop_s=0.5, analysed=True)
    assert bins[0]["emotion"] == "angry"  # a 2-2 tie goes to the label shown last
