"""Multi-corpus training: corpora as one shape, the loss that scores only a corpus's labels, loco figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from emostream.errors import ConfigError, DatasetError
from emostream.inference.metadata import EMOTIONS
from emostream.train import loco
from emostream.train.corpora import CORPORA, get
from emostream.train.fit import balanced_weights, masked_targets

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _probs(**mass: float) -> np.ndarray:
    p = np.full(len(EMOTIONS), 1e-3, dtype=np.float32)
    for name, value in mass.items():
        p[EMOTIONS.index(name)] = value
    return p / p.sum()


def test_corpora_label_sets() -> None:
    assert get("ravdess").labels == EMOTIONS
    assert set(get("nemo").labels) == {"neutral", "happy", "sad", "angry", "fearful", "surprised"}
    assert set(get("ased").labels) == {"neutral", "happy", "sad", "angry", "fearful"}
    assert get("ased").redistributable is False
    assert get("nemo").label_mask == (True, False, True, True, True, True, False, True)
    offsets = {c.speaker_offset for c in CORPORA.values() if c.name != "ravdess_song"}
    assert len(offsets) == 3
    with pytest.raises(ConfigError, match="unknown corpus 'iemocap'"):
        get("iemocap")


def test_masked_loss_ignores_labels_the_corpus_lacks() -> None:
    keras = pytest.importorskip("keras")
    from emostream.train.fit import masked_cross_entropy

    # a nEMO window (no calm, no disgust) labelled neutral; the model puts 0.5 on calm
    p = _probs(neutral=0.3, calm=0.5, happy=0.1)
    mask = np.array(get("nemo").label_mask, dtype=np.float32)
    y = masked_targets(np.array([EMOTIONS.index("neutral")], dtype=np.int32), 8, mask[None, :])
    loss = float(keras.ops.convert_to_numpy(masked_cross_entropy(y, p[None, :], 0.0))[0])
    kept = p[mask.astype(bool)].sum()
    assert loss == pytest.approx(-math.log(p[0] / kept), rel=1e-4)
    # the same window with calm's mass moved to disgust (also absent) costs the same ...
    q = _probs(neutral=0.3, disgust=0.5, happy=0.1)
    loss_q = float(keras.ops.convert_to_numpy(masked_cross_entropy(y, q[None, :], 0.0))[0])
    assert loss_q == pytest.approx(loss, rel=1e-4)
    # ... but moved to happy (present in nEMO) it costs more
    r = _probs(neutral=0.3, happy=0.6)
    loss_r = float(keras.ops.convert_to_numpy(masked_cross_entropy(y, r[None, :], 0.0))[0])
    assert loss_r > loss + 0.5
    # with every label present it is plain cross-entropy, label smoothing as Keras's
    full = masked_targets(np.array([0], dtype=np.int32), 8, None)
    plain = float(keras.ops.convert_to_numpy(masked_cross_entropy(full, p[None, :], 0.1))[0])
    ref = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(8, dtype=np.float32)[:1], p[None, :])
    assert plain == pytest.approx(float(keras.ops.convert_to_numpy(ref)), rel=1e-4)


def test_masked_targets_refuse_a_label_outside_the_mask() -> None:
    mask = np.array([get("ased").label_mask], dtype=np.float32)
    with pytest.raises(ConfigError, match="label their corpus mask lacks"):
        masked_targets(np.array([EMOTIONS.index("calm")], dtype=np.int32), 8, mask)


def test_balanced_weights_equalise_corpus_and_class() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1, 1, 1], dtype=np.int32)
    groups = np.array(["a"] * 4 + ["b"] * 6)
    w = balanced_weights(y, groups)
    totals = {(g, c): w[(groups == g) & (y == c)].sum() for g in "ab" for c in (0, 1)}
    assert np.allclose(list(totals.values()), w.sum() / 4)
    assert w.mean() == pytest.approx(1.0)
    # one corpus: the classic n / (classes * count)
    w1 = balanced_weights(y)
    assert w1[0] == pytest.approx(len(y) / (2 * np.sum(y == 0)))
    # speakers within a (corpus, class) cell share it equally
    speakers = np.array([1, 1, 2, 3, 4, 4, 4, 5, 5, 6])
    ws = balanced_weights(y, groups, speakers)
    cell = (groups == "a") & (y == 0)
    assert ws[cell & (speakers == 1)].sum() == pytest.approx(ws[cell & (speakers == 2)].sum())


def test_four_class_ua_merges_calm_into_neutral_and_skips_other_labels() -> None:
    y = np.array([EMOTIONS.index(e) for e in ("calm", "neutral", "angry", "fearful", "sad", "happy")], dtype=np.int32)
    probs = np.stack(
        [
            _probs(calm=0.9),  # calm read as calm: counts as neutral, right
            _probs(calm=0.5, neutral=0.2, angry=0.6),  # neutral + calm 0.7 > angry 0.6: right
            _probs(angry=0.9),
            _probs(fearful=0.9),  # fearful: not one of the four, ignored
            _probs(happy=0.9),  # sad read as happy: wrong
            _probs(happy=0.9),
        ]
    )
    truth, pred = loco.four_class(probs, y)
    assert truth.tolist() == [0, 0, 3, 2, 1]
    assert pred.tolist() == [0, 0, 3, 1, 1]
    assert loco.ua4(probs, y) == pytest.approx((1.0 + 1.0 + 0.0 + 1.0) / 4)


def test_corpus_ua_restricts_the_prediction_to_the_corpus_labels() -> None:
    y = np.array([EMOTIONS.index("neutral")], dtype=np.int32)
    probs = _probs(calm=0.8, neutral=0.15)[None, :]
    assert loco.corpus_ua(probs, y, get("nemo").label_mask) == 1.0
    assert loco.corpus_ua(probs, y, get("ravdess").label_mask) == 0.0


def test_corpus_folder_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="fetch-nemo"):
        get("nemo").list_clips(tmp_path / "missing")
    (tmp_path / "data.tsv").write_text("file\temotion\nx.flac\tanger\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="speaker_id"):
        get("nemo").list_clips(tmp_path)


@pytest.mark.skipif(not (SHARED / "nemo-16k").is_dir(), reason="nEMO not available")
def test_full_corpora_list() -> None:
    nemo = get("nemo").list_clips(SHARED / "nemo-16k")
    assert len(nemo) == 1148 and len({c.actor for c in nemo}) == 9
    ased = get("ased").list_clips(SHARED / "ased-16k")
    assert len(ased) == 2474 and len({c.actor for c in ased}) == 65
    assert {c.label for c in ased} <= {i for i, m in enumerate(get("ased").label_mask) if m}


def _tiny_wset(corpora: list[tuple[str, int, str]]) -> object:
    """A WindowSet of fake clips: (corpus, actor, gender) per clip, two windows each; clip i says sentence
    "01", "02", "03", "01", ... (i % 3 + 1)."""

    from emostream.train.corpora import CorpusClip
    from emostream.train.dataset import WindowSet

    clips = []
    for i, (corpus, actor, gender) in enumerate(corpora):
        emotion = ("neutral", "angry", "sad", "happy")[i % 4]
        clips.append(
            CorpusClip(
                path=Path(f"/x/{corpus}_{i}.flac"),
                corpus=corpus,
                speaker=str(actor),
                actor=actor,
                emotion=emotion,
                gender=gender,
                sentence=f"{i % 3 + 1:02d}",
            )
        )
    n = len(clips)
    return WindowSet(
        clips,  # type: ignore[arg-type]
        np.arange(n * 2 * 3, dtype=np.float32).reshape(n * 2, 3),
        np.ones(n * 2, dtype=bool),
        np.repeat(np.arange(n, dtype=np.int32), 2),
        np.zeros(n * 2, dtype=np.int32),
    )


def test_loco_split_holds_out_one_corpus_and_validates_on_the_others() -> None:
    from emostream.train.evaluate import loco_split

    spec = [("nemo", 101 + k % 4, "male" if k % 2 else "female") for k in range(16)]
    spec += [("ased", 201 + k % 8, "male" if k % 2 else "female") for k in range(16)]
    wset = _tiny_wset(spec)
    train, val, test = loco_split(wset, "nemo", seed=1)  # type: ignore[arg-type]
    corpora = np.array([c.corpus for c in wset.clips])  # type: ignore[attr-defined]
    assert test.tolist() == (corpora == "nemo").tolist()
    assert not (train & test).any() and not (val & test).any() and not (train & val).any()
    assert set(corpora[val]) == {"ased"} and val.sum() > 0
    actors = np.array([c.actor for c in wset.clips])  # type: ignore[attr-defined]
    assert not set(actors[train]) & set(actors[val])
    with pytest.raises(DatasetError, match="no clip of 'ravdess'"):
        loco_split(wset, "ravdess", seed=1)  # type: ignore[arg-type]


def test_telephone_copy_joins_as_one_more_copy() -> None:
    from emostream.train.dataset import WindowSet
    from emostream.train.run import with_copy

    wset = _tiny_wset([("nemo", 101, "male"), ("nemo", 102, "female")])
    assert isinstance(wset, WindowSet)
    g711 = WindowSet(wset.clips, wset.features + 100, wset.is_speech, wset.clip_index, wset.copy)
    both = with_copy(wset, g711)
    assert both.copy.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert np.array_equal(both.features[both.copy == 1], g711.features)
    assert np.array_equal(both.windows_of(np.array([True, True]), copies=False), np.arange(4))
    other = _tiny_wset([("nemo", 101, "male")])
    assert isinstance(other, WindowSet)
    with pytest.raises(DatasetError, match="clips differ"):
        with_copy(wset, other)


def test_train_sentences_limit_one_corpus_and_keep_every_test_clip() -> None:
    from emostream.train.dataset import WindowSet
    from emostream.train.run import trainable_clips

    spec = [("nemo", 101 + k % 2, "male") for k in range(4)] + [("ased", 201 + k % 3, "female") for k in range(6)]
    wset = _tiny_wset(spec)
    assert isinstance(wset, WindowSet)
    # sentences by clip: 01 02 03 01 | 02 03 01 02 03 01: nEMO untouched, ASED keeps its 01 and 02 clips
    allowed = trainable_clips(wset, {"ased": ("01", "02")})
    assert allowed.tolist() == [True] * 4 + [True, False, True, True, False, True]
    assert trainable_clips(wset, {}).all()
    with pytest.raises(ConfigError, match=r"no clip of 'ravdess'.*--corpus ravdess=DIR"):
        trainable_clips(wset, {"ravdess": ("01",)})
    with pytest.raises(ConfigError, match=r"ased=07.*its sentence ids are 01, 02, 03"):
        trainable_clips(wset, {"ased": ("07",)})


def test_train_sentences_and_channel_options() -> None:
    from emostream.train.cli import _spec, build_parser, train_sentences

    assert train_sentences(["ased=01, 02", "nemo=5"]) == {"ased": ("01", "02"), "nemo": ("5",)}
    for bad in (["ased"], ["=01"], ["ased="], ["ased=01", "ased=02"]):
        with pytest.raises(ConfigError, match="--train-sentences"):
            train_sentences(bad)
    base = ["evaluate", "--data", "D", "--out", "R"]
    args = build_parser().parse_args([*base, "--train-sentences", "ased=01,02", "--channel", "g711"])
    spec = _spec(args)
    assert (spec.train_sentences, spec.channel, spec.telephone_copy) == ({"ased": ("01", "02")}, "g711", False)
    assert spec.to_dict()["train_sentences"] == {"ased": ["01", "02"]} and spec.to_dict()["channel"] == "g711"
    args = build_parser().parse_args([*base, "--channel", "g711", "--telephone-copy"])
    with pytest.raises(ConfigError, match="drop --telephone-copy"):
        _spec(args)


def test_probe_scores_four_classes_and_arousal_with_known_answers() -> None:
    from emostream.train.probe import four_index, score

    labels = np.array([EMOTIONS.index(e) for e in ("neutral", "calm", "happy", "sad", "angry", "fearful")], np.int32)
    assert four_index(labels).tolist() == [0, 0, 1, 2, 3, -1]
    # a four-class model (columns neutral, happy, sad, angry) that is right on every clip it can be
    probs = np.eye(4)[[0, 0, 1, 2, 3, 3]]
    ua4, aro = score(probs, [0, 1, 2, 3], True, labels)
    assert ua4 == 1.0 and aro == 1.0  # fearful read as angry: high arousal, right
    # an all-label model that always says sad: ua4 = 1/4 (sad's recall), arousal = 1/2 (low side only)
    sad = np.zeros((6, len(EMOTIONS)))
    sad[:, EMOTIONS.index("sad")] = 1.0
    ua4, aro = score(sad, list(range(len(EMOTIONS))), False, labels)
    assert ua4 == 0.25 and aro == 0.5


def test_probe_arousal_sides_and_binary_ua_known_answers() -> None:
    from emostream.train.probe import arousal_side, binary_ua

    names = ("neutral", "calm", "sad", "disgust", "happy", "surprised")
    labels = np.array([EMOTIONS.index(e) for e in names], np.int32)
    assert arousal_side(labels).tolist() == [0, 0, 0, -1, 1, 1]
    truth = np.array([0, 0, 0, 1, 1], np.int32)
    assert binary_ua(np.array([0, 0, 1, 1, 1], np.int32), truth) == (2 / 3 + 1.0) / 2
    assert binary_ua(np.ones(5, np.int32), truth) == 0.5  # always high: one side right
    assert np.isnan(binary_ua(np.zeros(3, np.int32), np.zeros(3, np.int32)))


def test_probe_clip_columns_are_speaker_z_scored_and_reach_every_window_of_their_clip() -> None:
    from types import SimpleNamespace

    from emostream.train.probe import CorpusWindows, with_clip_columns

    clips = [SimpleNamespace(speaker=s) for s in ("a", "a", "b", "b")]
    values = np.array([[1.0], [3.0], [10.0], [30.0]])  # each speaker's two clips z-score to -1, +1
    w = CorpusWindows(np.zeros((5, 2)), np.array([0, 0, 1, 2, 3], np.int32), np.zeros(4, np.int32))
    out = with_clip_columns(w, clips, values)  # type: ignore[arg-type]
    assert out.x.shape == (5, 3) and np.array_equal(out.x[:, :2], w.x)
    assert np.allclose(out.x[:, 2], [-1, -1, 1, -1, 1], atol=1e-5)


def test_probe_arousal_classes_reports_each_labels_share_read_high() -> None:
    from sklearn.linear_model import LogisticRegression

    from emostream.train.probe import CorpusWindows, run_arousal_classes

    # one column carries arousal; corpus "b" voices its sad clips high, as ASED's speakers do
    def corpus(names: list[str], x: list[float]) -> CorpusWindows:
        labels = np.array([EMOTIONS.index(n) for n in names], np.int32)
        return CorpusWindows(np.array(x)[:, None], np.arange(len(names), dtype=np.int32), labels)

    train = corpus(["angry", "happy", "sad", "neutral"] * 5, [2.0, 1.5, -1.5, -2.0] * 5)
    test = corpus(["angry", "sad", "sad", "neutral"], [2.0, 1.8, 1.2, -2.0])
    rows = dict(run_arousal_classes({"a": train, "b": test}, LogisticRegression))
    assert rows["b"] == {"neutral": 0.0, "sad": 1.0, "angry": 1.0}


def test_probe_egemaps_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    from types import SimpleNamespace

    from emostream.train.probe import egemaps_functionals

    wav = tmp_path / "a.flac"
    wav.write_bytes(b"0" * 10)
    monkeypatch.setitem(sys.modules, "opensmile", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[bench\]'"):
        egemaps_functionals([SimpleNamespace(path=wav)], tmp_path)  # type: ignore[list-item]


def test_random_protocols_test_ravdess_clips_only_and_train_on_the_other_corpora() -> None:
    from emostream.train.evaluate import ravdess_random_split

    spec = [("ravdess", 1 + k % 4, "male" if k % 2 else "female") for k in range(40)]
    spec += [("nemo", 101 + k % 4, "male" if k % 2 else "female") for k in range(12)]
    wset = _tiny_wset(spec)
    train, val, test = ravdess_random_split(wset, seed=1, speech_only=True)  # type: ignore[arg-type]
    corpora = np.array([c.corpus for c in wset.clips])  # type: ignore[attr-defined]
    assert set(corpora[test]) == {"ravdess"} and set(corpora[val]) == {"ravdess"}
    assert train[corpora == "nemo"].all()  # every clip of another corpus trains
    assert not (train & test).any() and not (val & test).any() and not (train & val).any()
    assert test.sum() == 8  # 20 % of the 40 RAVDESS clips
    with pytest.raises(DatasetError, match="RAVDESS"):
        ravdess_random_split(_tiny_wset(spec[40:]), seed=1, speech_only=False)  # type: ignore[arg-type]


def test_a_phone_line_model_trains_and_tests_on_the_g711_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from emostream.train import run as run_mod
    from emostream.train.dataset import WindowSet
    from emostream.train.run import _load_sets

    wide = _tiny_wset([("nemo", 101, "male"), ("nemo", 102, "female")])
    assert isinstance(wide, WindowSet)
    phone = WindowSet(wide.clips, wide.features + 100, wide.is_speech, wide.clip_index, wide.copy)
    monkeypatch.setattr(
        run_mod, "load_windows", lambda spec, progress, channel="wideband": {"g711": phone}.get(channel, wide)
    )
    monkeypatch.setattr(run_mod, "describe_clips", lambda clips: "")
    spec = dataclasses.replace(_spec_for_sets(), channel="g711")
    wset, g711 = _load_sets(spec, _Progress(), ("loco",))  # type: ignore[arg-type]
    assert wset is phone and g711 is None
    from emostream.train.run import loco_note

    assert loco_note(spec).startswith("A phone-line model (--channel g711)")  # type: ignore[arg-type]
    assert loco_note(dataclasses.replace(spec, channel="wideband")).startswith("leave one corpus out")  # type: ignore[arg-type]
    wset, g711 = _load_sets(dataclasses.replace(spec, channel="wideband", telephone_copy=True), _Progress(), ("loco",))  # type: ignore[arg-type]
    assert g711 is phone and wset.copy.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


class _Progress:
    class console:  # noqa: N801
        @staticmethod
        def print(*args: object) -> None:
            return None


def _spec_for_sets() -> object:
    from emostream.train.cli import _spec, build_parser

    return _spec(build_parser().parse_args(["evaluate", "--data", "D", "--out", "R"]))
