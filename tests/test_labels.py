"""[labels]: the reading over fewer labels than the model scores (known answers, the plan's checks,
the pipeline, analyze and the command line)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fixture_clip, run_cli

from emostream.alerts.rules import AlertRule
from emostream.apps.analyze import analyze_file
from emostream.config import Config, config_from_dict
from emostream.engine.labels import FOUR, LabelGrouping, LabelsConfig
from emostream.engine.plan import make_plan
from emostream.errors import ConfigError
from emostream.inference.metadata import EMOTIONS
from emostream.inference.model import EmotionModel

# the model's labels in their order: neutral, calm, happy, sad, angry, fearful, disgust, surprised
PROBS = np.array([0.1, 0.3, 0.1, 0.1, 0.2, 0.15, 0.0, 0.05])


def test_four_labels_add_calm_to_neutral_and_renormalise_without_the_rest() -> None:
    grouping = LabelGrouping.resolve(LabelsConfig(show=FOUR), EMOTIONS)
    assert grouping.labels == ("neutral", "happy", "sad", "angry")
    # neutral 0.1 + calm 0.3, happy 0.1, sad 0.1, angry 0.2 over their sum 0.8
    np.testing.assert_allclose(grouping.apply(PROBS), [0.5, 0.125, 0.125, 0.25], rtol=1e-6)
    assert grouping.folded == {"calm": "neutral"}
    assert grouping.dropped == ("fearful", "disgust", "surprised")
    batch = grouping.apply(np.stack([PROBS, np.eye(8)[5]]))  # a window of fearful only: nothing left, uniform
    assert batch.shape == (2, 4) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1], [0.25] * 4)


def test_every_label_is_the_identity_and_a_shown_calm_is_not_folded() -> None:
    identity = LabelGrouping.resolve(LabelsConfig(show="all"), EMOTIONS)
    assert identity.identity and identity.labels == EMOTIONS
    np.testing.assert_array_equal(identity.apply(PROBS), PROBS.astype(np.float32))
    calm_shown = LabelGrouping.resolve(LabelsConfig(show=("calm", "neutral", "angry")), EMOTIONS)
    np.testing.assert_allclose(calm_shown.apply(PROBS), np.array([0.3, 0.1, 0.2]) / 0.6, rtol=1e-6)
    no_fold = LabelGrouping.resolve(LabelsConfig(show=FOUR, fold={}), EMOTIONS)
    np.testing.assert_allclose(no_fold.apply(PROBS), np.array([0.1, 0.1, 0.1, 0.2]) / 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"show": "angry"}, ['expected "all" or a list']),
        ({"show": ["angry"]}, ["two or more"]),
        ({"show": ["angry", "angry", "sad"]}, ["two or more different"]),
        ({"show": 4}, ["expected a string or a list of strings"]),
        ({"fold": {"calm": "neutral", "neutral": "sad"}}, ["folded itself"]),
        ({"fold": {"calm": 3}}, ["expected a label name"]),
    ],
)
def test_bad_label_settings_are_refused_with_the_key(table: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"labels": table}, "my.toml")
    assert "my.toml: [labels]" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_the_plan_refuses_a_label_the_model_lacks_and_a_rule_on_a_hidden_label(model: EmotionModel) -> None:
    with pytest.raises(ConfigError, match=r"\['joy'\], which model .* does not score; its labels: neutral, calm"):
        make_plan(Config(labels=LabelsConfig(show=("joy", "sad"))), model)
    rule = AlertRule(name="distressed", emotions=("sad", "fearful"))
    with pytest.raises(ConfigError, match=r"\['fearful'\] are not shown .*add them to \[labels\] show"):
        make_plan(Config(labels=LabelsConfig(show=FOUR), alerts=(rule,)), model)
    plan = make_plan(Config(labels=LabelsConfig(show=FOUR), alerts=(AlertRule(name="a", emotions=("angry",)),)), model)
    assert plan.labels == FOUR and plan.alert_rules().rules[0].emotions == ("angry",)


def _hops(model: EmotionModel, labels: LabelsConfig) -> list:
    plan = make_plan(Config(labels=labels), model)
    pipeline = plan.pipeline(plan.channel_plans(1)[0])
    from emostream.audio.files import load_mono

    x = load_mono(fixture_clip(1, 5), 16000)
    return pipeline.process(x) + pipeline.flush()


def test_the_pipeline_reads_each_window_over_the_shown_labels(model: EmotionModel) -> None:
    every, four = _hops(model, LabelsConfig(show="all")), _hops(model, LabelsConfig())
    grouping = LabelGrouping.resolve(LabelsConfig(show=FOUR), model.labels)
    speech = [(a, b) for a, b in zip(every, four, strict=True) if a.scores is not None]
    assert speech, "the fixture clip has speech"
    for a, b in speech:
        assert list(b.scores) == list(FOUR) and b.emotion in FOUR
        expected = grouping.apply([a.scores[label] for label in model.labels])
        np.testing.assert_allclose([b.scores[label] for label in FOUR], expected, atol=1e-6)
        assert b.uncertain == a.uncertain  # judged on the model's own probabilities
        assert b.arousal == a.arousal  # read from every label the model scores, whatever is shown
    assert [a.scores is None for a in every] == [b.scores is None for b in four]


def test_analyze_reads_the_file_mean_over_the_shown_labels(model: EmotionModel) -> None:
    clip = fixture_clip(1, 6)
    every = analyze_file(clip, make_plan(Config(labels=LabelsConfig(show="all")), model))
    four = analyze_file(clip, make_plan(Config(labels=LabelsConfig(show=FOUR)), model))
    assert every.scores is not None and four.scores is not None
    grouping = LabelGrouping.resolve(LabelsConfig(show=FOUR), model.labels)
    expected = grouping.apply([every.scores[label] for label in model.labels])
    np.testing.assert_allclose([four.scores[label] for label in FOUR], expected, atol=1e-6)
    assert four.emotion == FOUR[int(np.argmax(expected))] and four.uncertain == every.uncertain
    assert four.arousal == every.arousal


def test_the_command_line_shows_the_labels_asked_for_and_names_a_wrong_one(model_arg: str) -> None:
    clip = str(fixture_clip(2, 5))
    run = ("--file", clip, "--fast", "--no-dashboard", "--jsonl", "-", "--model", model_arg)
    proc = run_cli(*run, "--labels", "neutral,happy,sad,angry")
    assert proc.returncode == 0, proc.stderr.decode()
    recs = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert recs[0]["labels"] == list(FOUR) and recs[0]["config"]["labels"]["show"] == list(FOUR)
    hops = [r for r in recs if r["type"] == "hop" and r["scores"] is not None]
    assert hops and all(set(h["scores"]) == set(FOUR) and h["emotion"] in (*FOUR, None) for h in hops)
    bad = run_cli(*run, "--labels", "neutral,joy")
    assert bad.returncode == 2 and not bad.stdout
    assert b"['joy']" in bad.stderr and b"Fix [labels] show (or --labels)" in bad.stderr
    assert b"Traceback" not in bad.stderr


def test_fold_pairs_are_read_from_the_command_line_and_a_bad_pair_is_refused() -> None:
    import argparse

    from emostream.apps.options import parse_fold, parse_labels

    assert parse_fold("calm=neutral, fearful=sad") == {"calm": "neutral", "fearful": "sad"}
    assert parse_fold("") == {}
    with pytest.raises(argparse.ArgumentTypeError, match="LABEL=SHOWN"):
        parse_fold("calm")
    assert parse_labels(" all ") == "all" and parse_labels("sad, angry") == ("sad", "angry")
    grouping = LabelGrouping.resolve(LabelsConfig(fold=parse_fold("calm=neutral,fearful=sad")), EMOTIONS)
    # fearful 0.15 added to sad 0.1; disgust and surprised (0.05) dropped: total 0.95
    np.testing.assert_allclose(grouping.apply(PROBS), np.array([0.4, 0.1, 0.25, 0.2]) / 0.95, rtol=1e-6)
