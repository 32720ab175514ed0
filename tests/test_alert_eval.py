"""benchmarks.alert_eval: calls built from corpus clips, run through `emostream calls`' analysis, scored per rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmarks.alert_eval import main, outcomes, trim
from benchmarks.corpus import corpus_name
from emostream.alerts.rules import AlertRule
from emostream.errors import DatasetError

FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"


def _rule(name: str) -> AlertRule:
    return AlertRule(name=name, emotions=("angry",), threshold=0.6, min_duration_s=2.0)


def test_outcomes_split_firings_at_the_angry_start() -> None:
    alerts = [
        {"rule": "a", "state": "fired", "t_end": 12.0},
        {"rule": "a", "state": "cleared", "t_end": 14.0},
        {"rule": "a", "state": "fired", "t_end": 37.5},
        {"rule": "b", "state": "fired", "t_end": 41.0},
    ]
    got = outcomes(alerts, [_rule("a"), _rule("b"), _rule("c")], angry_start_s=30.0)
    assert got["a"] == {"calm_fired": True, "angry_fired": True, "delay_s": 7.5}
    assert got["b"] == {"calm_fired": False, "angry_fired": True, "delay_s": 11.0}
    assert got["c"] == {"calm_fired": False, "angry_fired": False, "delay_s": None}


def test_trim_drops_leading_and_trailing_silence() -> None:
    rate = 16000
    tone = (0.3 * np.sin(np.arange(rate) * 2 * np.pi * 200 / rate)).astype(np.float32)
    padded = np.concatenate([np.zeros(rate, np.float32), tone, np.zeros(2 * rate, np.float32)])
    trimmed = trim(padded, rate)
    assert rate <= trimmed.size <= rate + round(0.2 * rate) + 2 * 320


def test_corpus_layouts_are_told_apart(tmp_path: Path) -> None:
    assert corpus_name(FIXTURES) == "ravdess"
    nemo = tmp_path / "nemo"
    (nemo / "samples").mkdir(parents=True)
    (nemo / "data.tsv").write_text("file\temotion\tspeaker_id\tgender\tage\tsentence_id\tnormalized_text\n")
    assert corpus_name(nemo) == "nemo"
    ased = tmp_path / "ased"
    (ased / "05Angry").mkdir(parents=True)
    (ased / "data.tsv").write_text("file\temotion\tspeaker_id\tgender\tsentence_id\trepetition\n")
    assert corpus_name(ased) == "ased"
    with pytest.raises(DatasetError, match="RAVDESS, nEMO or ASED"):
        corpus_name(tmp_path)


@pytest.mark.parametrize("phone", [False, True])
def test_a_run_on_the_fixture_actors_writes_the_report(tmp_path: Path, phone: bool) -> None:
    out = tmp_path / "report.json"
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[alerts]]\nname = "readme"\nemotions = ["angry"]\nthreshold = 0.6\nmin_duration_s = 2.0\n'
        'roles = ["customer"]\n[[alerts]]\nname = "never"\nemotions = ["angry"]\nthreshold = 2.0\n'
        "min_duration_s = 1.0\n"
    )
    args = ["--data", str(FIXTURES), "--speakers", "01,02", "--calm-s", "6", "--angry-s", "6"]
    args += ["--config", str(rules), "--out", str(out)] + (["--phone"] if phone else [])
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == ("phone_alerts" if phone else "alerts")
    assert report["speakers"] == ["ravdess:01", "ravdess:02"]
    assert set(report["rules"]) == {"readme", "never"}
    assert report["mean"]["rule"] == "readme"
    for key in ("angry_fired", "calm_fired", "delay_median_s", "delay_p90_s", "uncertain_share"):
        assert key in report["mean"]
    never = report["rules"]["never"]
    assert never["angry_fired"] == 0.0 and never["calm_fired"] == 0.0 and never["delay_median_s"] is None
    assert all(call["angry_start_s"] == pytest.approx(6.0, abs=0.01) for call in report["calls"])


def test_the_built_phone_call_is_stereo_mulaw_8k(tmp_path: Path) -> None:
    from benchmarks.alert_eval import build_call, write_call
    from benchmarks.corpus import load_clips

    clips = load_clips(FIXTURES)
    mine = [c for c in clips if c.speaker == "01"]
    agent = [c for c in clips if c.speaker == "02" and c.emotion == "neutral"]
    import random

    call = build_call("ravdess:01", mine, agent, calm_s=4, angry_s=4, pause_s=0.3, rng=random.Random(0))
    info = sf.info(str(write_call(call, tmp_path, phone=True)))
    assert (info.channels, info.samplerate, info.subtype) == (2, 8000, "ULAW")
    assert info.duration == pytest.approx(8.0, abs=0.01)


def test_the_first_stretch_takes_the_emotions_asked_for() -> None:
    import random

    from benchmarks.alert_eval import RATE_HZ, build_call, pick_speakers, read_clip, trim
    from benchmarks.corpus import load_clips

    clips = load_clips(FIXTURES)
    mine = [c for c in clips if c.speaker == "01"]
    fearful = [c for c in mine if c.emotion == "fearful"]
    assert fearful, "the fixtures have a fearful clip of actor 01"
    lengths = {"calm_s": 1.0, "angry_s": 1.0, "pause_s": 0.3}
    call = build_call("ravdess:01", mine, None, **lengths, rng=random.Random(0), first=("fearful",))
    first = trim(read_clip(fearful[0].path, RATE_HZ))[:RATE_HZ]
    np.testing.assert_array_equal(call.customer[: first.size], first)  # the fearful clip opens the call
    assert [k for k, _ in pick_speakers(clips, "all", 8, random.Random(0), first=("joy",))] == []
