"""Smoke tests of the benchmark harness: every benchmark runs on a tiny input and reports its figures.

No timing is asserted here; the figures themselves are for `python -m benchmarks`.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is a top-level folder of the checkout, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.__main__ import bench_modules, parse_args  # noqa: E402
from benchmarks.common import FIGURE_KEYS, RESULT_KEYS, available_models, demo_path, figure  # noqa: E402

# The shipped models, else $EMOSTREAM_TEST_MODEL (a .json path), as in conftest.py.
MODELS = available_models() or [m for m in [os.environ.get("EMOSTREAM_TEST_MODEL")] if m]
# several seconds each: marked slow
SLOW_BENCHMARKS = ("bench_runtime", "bench_calls", "bench_serve", "bench_peers", "bench_fleet")
needs_model = pytest.mark.skipif(not MODELS, reason="no shipped model and no EMOSTREAM_TEST_MODEL")


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
@pytest.mark.parametrize(
    "module", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_BENCHMARKS else m for m in bench_modules()]
)
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


# ---------------------------------------------------------------- streaming evaluation: known answers

from benchmarks.streaming_eval import (  # noqa: E402
    GAP,
    Recording,
    Tally,
    Utterance,
    score,
    speech_fraction,
    trim_silence,
    window_truth,
)
from emostream.engine.events import HopResult  # noqa: E402

RATE = 100  # samples per second in the synthetic recordings below (keeps them tiny)


def _hop(t_start: float, t_end: float, scored: bool = True) -> HopResult:
    scores = {"a": 1.0, "b": 0.0} if scored else None
    return HopResult(t_start, t_end, 1.0, scored, scores, scores, None, None, 0.0)


def _recording() -> Recording:
    # 0-2 s gap, 2-6 s "a", 6-7 s gap, 7-11 s "b", 11-12 s gap
    labels = np.full(12 * RATE, GAP, np.int8)
    labels[2 * RATE : 6 * RATE] = 0
    labels[7 * RATE : 11 * RATE] = 1
    utts = [Utterance(2.0, 6.0, "a"), Utterance(7.0, 11.0, "b")]
    return Recording(np.zeros(labels.size, np.float32), labels, utts, RATE)


def test_trim_silence_keeps_the_voiced_span() -> None:
    rate = 16000
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)
    x = np.concatenate([np.zeros(rate), tone, np.zeros(rate)]).astype(np.float32)
    trimmed = trim_silence(x, rate, margin_s=0.0)
    assert abs(trimmed.size - rate) <= rate // 50  # within one 20 ms frame


def test_window_truth_and_speech_fraction() -> None:
    rec = _recording()
    hops = [_hop(0.0, 2.0), _hop(1.5, 3.5), _hop(5.0, 7.0), _hop(6.0, 8.0), _hop(8.0, 10.0)]
    assert window_truth(hops, rec, 2).tolist() == [GAP, 0, GAP, GAP, 1]  # ties go to GAP
    assert np.allclose(speech_fraction(hops, rec), [0.0, 0.75, 0.5, 0.5, 1.0])


def test_score_counts_accuracy_delay_and_changes() -> None:
    rec = _recording()
    hops = [_hop(t - 2.0, t) for t in np.arange(2.5, 12.5, 0.5)]  # window ends 2.5 .. 12.0 s
    ends = [h.t_end for h in hops]
    shown = ["a" if e < 9.0 else "b" for e in ends]  # switches to "b" 2 s after "b" starts at 7 s
    truth = window_truth(hops, rec, 2)
    tally = Tally(np.zeros((2, 3), np.int64))
    score(tally, hops, shown=shown, truth=truth, recording=rec, labels=("a", "b"))
    row = tally.row()
    assert tally.transitions == 1 and tally.reached == 1
    assert row["delay_median_s"] == pytest.approx(2.0)
    assert tally.shown_changes == 1 and tally.true_changes == 1
    expected = sum(1 for s, t in zip(shown, truth.tolist(), strict=True) if t != GAP and s == "ab"[t])
    assert row["accuracy"] == pytest.approx(expected / int((truth != GAP).sum()))
    assert row["accuracy"] < 1.0  # the "b" window ending at 8.5 s still shows "a"


def test_streaming_ua4_reads_calm_as_neutral_and_other_labels_as_wrong() -> None:
    from benchmarks.streaming_eval import ua4_of

    labels = ("neutral", "calm", "angry", "fearful")
    confusion = np.zeros((4, 5), np.int64)  # truth rows, shown columns (+ none shown)
    confusion[0, 1] = 3  # neutral shown as calm: right
    confusion[0, 4] = 1  # neutral, nothing shown: wrong
    confusion[1, 0] = 2  # calm shown as neutral: right
    confusion[1, 2] = 2  # calm shown as angry: wrong
    confusion[2, 3] = 4  # angry shown as fearful: wrong
    confusion[2, 2] = 4  # angry: right
    confusion[3, 3] = 9  # fearful is not one of the four: left out
    assert ua4_of(confusion, labels) == pytest.approx(((3 + 2) / (4 + 4) + 4 / 8) / 2)
    assert np.isnan(ua4_of(np.zeros((1, 2), np.int64), ("fearful",)))


def test_the_replay_chooses_among_the_labels_the_pipeline_showed() -> None:
    from benchmarks.streaming_eval import replay
    from emostream.engine.smoothing import SmoothingConfig

    every = {"neutral": 0.1, "calm": 0.3, "happy": 0.1, "sad": 0.1, "angry": 0.2, "fearful": 0.2}
    four = {"neutral": 0.5, "happy": 0.125, "sad": 0.125, "angry": 0.25}  # the same window with [labels] four
    plain = SmoothingConfig(time_constant_s=0.0, hysteresis=0.0, min_dwell_s=0.0)
    assert replay([HopResult(0.0, 2.0, 1.0, True, every, every, None, None, 0.0)], list(every), plain, 0.5) == ["calm"]
    assert replay([HopResult(0.0, 2.0, 1.0, True, four, four, None, None, 0.0)], list(four), plain, 0.5) == ["neutral"]


def test_recommend_picks_best_ua_within_flicker_and_delay_limits() -> None:
    from benchmarks.streaming_eval import recommend

    def row(ua: float, changes: float, delay: float) -> dict[str, float]:
        return {"ua": ua, "changes_per_min": changes, "true_changes_per_min": 4.0, "delay_median_s": delay}

    rows = {
        "flickers": row(0.9, 9.0, 1.0),
        "slow": row(0.8, 4.0, 2.5),
        "steady": row(0.7, 8.0, 2.0),
        "dull": row(0.5, 1.0, 1.0),
    }
    assert recommend(rows) == "steady"
    assert recommend({"flickers": rows["flickers"]}) is None


def _ravdess_dir() -> Path | None:
    root = Path(os.environ.get("EMOSTREAM_RAVDESS") or REPO.parent / "shared" / "datasets" / "ravdess-speech-16k")
    return root if (root / "folds.json").is_file() else None


@pytest.mark.full_data
@needs_model
def test_streaming_eval_runs_on_one_fold(tmp_path: Path) -> None:
    from benchmarks import streaming_eval

    data = _ravdess_dir()
    if data is None:
        pytest.skip("RAVDESS not found (set EMOSTREAM_RAVDESS)")
    out = tmp_path / "eval.json"
    argv = ["--data", str(data), "--model", MODELS[0], "--folds", "1", "--max-clips", "12", "--grid", "small"]
    assert streaming_eval.main([*argv, "--json", str(out)]) == 0  # stops if the replay disagrees with the pipeline
    report = json.loads(out.read_text())
    assert not report["actor_independent"]
    assert len(report["settings"]) == 3
    for row in report["settings"].values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["ua"] <= 1.0
        assert row["true_changes_per_min"] > 0
    assert 0.0 <= report["no_speech_unlabelled"] <= 1.0


def test_streaming_eval_averages_corpora_not_hops() -> None:
    from benchmarks.streaming_eval import mean_rows

    small = {"ua": 0.2, "delay_median_s": float("nan")}
    large = {"ua": 0.6, "delay_median_s": 3.0}
    assert mean_rows([small, large]) == pytest.approx({"ua": 0.4, "delay_median_s": 3.0})
    assert np.isnan(mean_rows([small])["delay_median_s"])


def test_streaming_eval_on_a_corpus_wants_the_fold_that_never_heard_it(tmp_path: Path) -> None:
    from benchmarks import streaming_eval

    fixtures = REPO / "tests" / "fixtures" / "ravdess"
    (tmp_path / "fold_nemo").mkdir()  # a loco fold model for another corpus only
    argv = ["--corpus", str(fixtures), "--fold-models", str(tmp_path), "--model", "fast"]
    with pytest.raises(SystemExit, match="fold_ravdess"):
        streaming_eval.main([*argv, "--json", str(tmp_path / "eval.json")])


@needs_model
def test_streaming_eval_streams_each_speaker_of_a_corpus_through_its_fold_model(tmp_path: Path) -> None:
    import shutil

    from benchmarks import streaming_eval
    from emostream.inference.model import EmotionModel

    shipped = EmotionModel.load(MODELS[0]).metadata
    fold = tmp_path / "folds" / "fold_ravdess"
    fold.mkdir(parents=True)
    for name in (f"{shipped.name}.json", shipped.tflite_file):
        shutil.copy(REPO / "models" / name, fold / name)
    out = tmp_path / "eval.json"
    fixtures = REPO / "tests" / "fixtures" / "ravdess"
    argv = ["--corpus", str(fixtures), "--fold-models", str(tmp_path / "folds"), "--model", shipped.name]
    argv += ["--grid", "small", "--max-clips", "4", "--snr-db", "inf", "--json", str(out)]
    assert streaming_eval.main(argv) == 0  # stops if the replay disagrees with the pipeline
    report = json.loads(out.read_text())
    assert report["actor_independent"] and report["per_actor"]
    assert list(report["corpora"]) == ["ravdess"]
    (unit,) = report["corpora"]["ravdess"]["units"]
    assert unit.startswith("ravdess: 2 speakers, 8 clips")
    assert report["settings"] == report["corpora"]["ravdess"]["settings"]  # one corpus: its own figures
    assert len(report["settings"]) == 3


@needs_model
def test_soak_reports_rss_growth_drops_and_latency_and_the_cli_is_the_headline() -> None:
    assert bench_modules()[0] == "bench_runtime"
    args = parse_args(["--quick", "--soak-seconds", "20", "--model", MODELS[0]])
    res = importlib.import_module("benchmarks.bench_soak").run(args)
    names = [f["name"] for f in res["figures"]]
    assert names[:3] == [
        "RSS growth after warm-up",
        "no dropped samples, every hop",
        "hop latency p99 under render load",
    ]
    assert res["details"]["dropped_samples"] == 0 and res["details"]["renders"] >= 1


def test_stability_pairs_are_the_inaudible_changes_they_name() -> None:
    from benchmarks.bench_stability import LSB, PAIRS

    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000)
    for name, (make_ref, make_new) in PAIRS.items():
        ref, new = make_ref(x), make_new(x)
        assert 0 < np.abs(new - ref).max() <= 1.001e-3, name  # at most 0.1 % of full scale: inaudible
    ref, new = (make(x) for make in PAIRS["int16 by truncation"])
    assert np.array_equal(ref * 32768, np.round(ref * 32768)) and np.array_equal(new * 32768, np.round(new * 32768))
    assert np.abs(new - ref).max() <= LSB and (np.abs(new) <= np.abs(ref)).all()  # toward zero, one step at most
    np.testing.assert_allclose(PAIRS["DC +1 LSB"][1](x) - x, LSB)


def test_serve_worker_interleaves_the_calls_requests_in_arrival_order() -> None:
    from benchmarks.serve_worker import MESSAGE_FRAMES, RATE_HZ, interleaved

    tracks = {"inbound": bytes(range(256)) * 40, "outbound": bytes(reversed(range(256))) * 40}
    bounds = [(0, 4000), (4000, 8000)]  # a call's two requests: 0.5 s each
    requests = interleaved(tracks, bounds, 6)  # calls 0.1 s apart: call 5's first ends after call 0's second
    assert [(round(r.at_s, 3), r.call) for r in requests] == [
        (0.5, 0), (0.6, 1), (0.7, 2), (0.8, 3), (0.9, 4), (1.0, 0), (1.0, 5), (1.1, 1),
        (1.2, 2), (1.3, 3), (1.4, 4), (1.5, 5),
    ]  # fmt: skip
    second = requests[5]  # call 0's second request: its 25 messages of 20 ms, per track
    assert len(second.chunks) == 4000 // MESSAGE_FRAMES and second.audio_s == 4000 / RATE_HZ
    assert second.chunks[0] == (tracks["inbound"][4000:4160], tracks["outbound"][4000:4160])


@needs_model
@pytest.mark.slow
def test_serve_worker_feeds_calls_in_real_time_through_a_pool_worker(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.serve_worker import main

    assert main(["--model", MODELS[0], "--seconds", "2", "--calls", "2", "--pace", "real", "--via", "pool"]) == 0
    out = capsys.readouterr().out
    assert "2 call(s), real, pool:" in out and "CPU s per call-second" in out and "requests per call-second" in out


@needs_model
def test_serve_worker_pauses_before_each_request(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.serve_worker import main

    assert main(["--model", MODELS[0], "--seconds", "2", "--gap-ms", "1", "--spin"]) == 0
    assert "1 ms busy-waited before each request (feeds only)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a pause is for requests sent tight in this process
        main(["--model", MODELS[0], "--seconds", "2", "--gap-ms", "1", "--pace", "real"])


def test_streaming_eval_takes_the_label_choices_of_the_command_line() -> None:
    from benchmarks import streaming_eval

    def shown(*flag: str) -> object:
        return streaming_eval.shown_labels(streaming_eval.parse_args(["--data", "x", *flag])).show

    assert shown() == ("neutral", "happy", "sad", "angry")  # [labels]'s default
    assert shown("--show-labels", "all") == "all"
    assert shown("--show-labels", "neutral, angry") == ("neutral", "angry")
