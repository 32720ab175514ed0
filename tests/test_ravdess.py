"""RAVDESS file names, folder listing, folds and the fetch logic (on a tiny self-made zip)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.errors import DatasetError
from emostream.train.fetch import EMOBOX_FOLDS, RAVDESS_MD5, fetch_ravdess, unpack_and_convert, write_folds
from emostream.train.ravdess import count_by, describe, list_clips, load_clip, load_folds, parse_filename

FIXTURES = Path(__file__).parent / "fixtures" / "ravdess"
REPO = Path(__file__).resolve().parent.parent


def full_data_dir() -> Path | None:
    env = os.environ.get("EMOSTREAM_RAVDESS")
    path = Path(env) if env else REPO.parent / "shared" / "datasets" / "ravdess-speech-16k"
    return path if (path / "Actor_01").is_dir() else None


def test_parse_all_fields_and_gender():
    clip = parse_filename("Actor_12/03-01-06-02-01-02-12.flac")
    assert (clip.modality, clip.vocal_channel, clip.emotion_code) == (3, 1, 6)
    assert (clip.intensity, clip.statement, clip.repetition, clip.actor) == (2, 1, 2, 12)
    assert clip.emotion == "fearful"
    assert clip.label == 5
    assert clip.gender == "female"
    assert parse_filename("03-01-01-01-02-01-07.wav").gender == "male"
    assert parse_filename("03-01-08-01-01-01-01.WAV").emotion == "surprised"


@pytest.mark.parametrize(
    "name",
    [
        "03-01-09-01-01-01-01.flac",  # emotion 09 does not exist
        "03-01-01-01-01-01-25.flac",  # actor 25
        "03-01-01-03-01-01-01.flac",  # intensity 03
        "03-01-01-01-01-01.flac",  # six fields
        "3-1-1-1-1-1-1.flac",  # one-digit fields
        "hello.flac",
        "03-01-01-01-01-01-01.mp3",
    ],
)
def test_malformed_names_are_rejected_with_the_pattern(name):
    with pytest.raises(DatasetError) as info:
        parse_filename(name)
    assert name in str(info.value)
    assert "MM-VV-EE-II-SS-RR-AA" in str(info.value)


def test_list_fixture_folder():
    clips = list_clips(FIXTURES)
    assert len(clips) == 16
    assert count_by(clips, "actor") == {"1": 8, "2": 8}
    assert count_by(clips, "emotion") == {e: 2 for e in count_by(clips, "emotion")}
    assert len(count_by(clips, "emotion")) == 8
    assert count_by(clips, "gender") == {"female": 8, "male": 8}
    assert describe(clips).startswith("16 clips from 2 actors")
    audio = load_clip(clips[0], 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 16000


def test_load_clip_resamples(tmp_path):
    folder = tmp_path / "Actor_03"
    folder.mkdir()
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    sf.write(folder / "03-01-02-01-01-01-03.wav", tone, 48000)
    (clip,) = list_clips(tmp_path)
    audio = load_clip(clip, 16000)
    assert audio.size == 16000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_clips(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no Actor_XX"):
        list_clips(tmp_path)


def test_clip_in_the_wrong_actor_folder(tmp_path):
    folder = tmp_path / "Actor_01"
    folder.mkdir()
    sf.write(folder / "03-01-02-01-01-01-03.wav", np.zeros(160), 16000)
    with pytest.raises(DatasetError, match="Actor_01"):
        list_clips(tmp_path)


def test_folds_roundtrip_and_validation(tmp_path):
    path = write_folds(tmp_path)
    assert load_folds(path) == EMOBOX_FOLDS
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"test_actors": {"1": [1, 2], "2": [2, 3]}}))
    with pytest.raises(DatasetError, match="exactly once"):
        load_folds(bad)
    with pytest.raises(DatasetError, match="no folds file"):
        load_folds(tmp_path / "missing.json")


def _make_zip(tmp_path: Path) -> tuple[Path, str]:
    """A zip laid out like Audio_Speech_Actors_01-24.zip: two 48 kHz WAVs of two actors."""
    rate = 48000
    t = np.arange(rate // 2) / rate
    path = tmp_path / "mini.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for actor, freq in ((1, 220.0), (2, 330.0)):
            wav = tmp_path / f"src{actor}.wav"
            sf.write(wav, 0.2 * np.sin(2 * np.pi * freq * t), rate, subtype="PCM_16")
            archive.write(wav, f"Actor_{actor:02d}/03-01-03-01-01-01-{actor:02d}.wav")
    return path, hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_fetch_from_zip_converts_to_16k_flac(tmp_path):
    archive, md5 = _make_zip(tmp_path)
    dest = tmp_path / "ravdess"
    summary = fetch_ravdess(dest, zip_file=archive, md5=md5)
    assert summary.startswith("2 clips from 2 actors")
    flac = dest / "Actor_02" / "03-01-03-01-01-01-02.flac"
    info = sf.info(str(flac))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert load_folds(dest / "folds.json") == EMOBOX_FOLDS
    assert not list(dest.glob(".fetch-*"))


def test_fetch_download_path_with_checksum(tmp_path):
    """The streaming download + verify path, fed from a file:// URL (no network here)."""
    archive, md5 = _make_zip(tmp_path)
    dest = tmp_path / "ravdess"
    seen: list[int] = []
    fetch_ravdess(dest, url=archive.as_uri(), md5=md5, progress=lambda done, total: seen.append(done))
    assert seen and seen[-1] == archive.stat().st_size
    assert len(list_clips(dest)) == 2
    assert not (dest / "Audio_Speech_Actors_01-24.zip").exists()  # deleted after unpacking


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path):
    archive, _ = _make_zip(tmp_path)
    dest = tmp_path / "ravdess"
    with pytest.raises(DatasetError, match="MD5"):
        fetch_ravdess(dest, url=archive.as_uri(), md5=RAVDESS_MD5)
    assert sorted(p.name for p in dest.iterdir()) == []
    with pytest.raises(DatasetError, match="MD5"):
        fetch_ravdess(dest, zip_file=archive, md5="0" * 32)
    assert sorted(p.name for p in dest.iterdir()) == []


def test_bad_member_name_leaves_no_half_written_folder(tmp_path):
    path = tmp_path / "bad.zip"
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(4800), 48000)
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(wav, "Actor_01/03-01-03-01-01-01-01.wav")
        archive.write(wav, "Actor_01/not-a-ravdess-name.wav")
    dest = tmp_path / "out"
    with pytest.raises(DatasetError, match="not-a-ravdess-name"):
        unpack_and_convert(path, dest)
    assert list(dest.iterdir()) == []


@pytest.mark.full_data
def test_full_data_counts():
    root = full_data_dir()
    if root is None:
        pytest.skip("full RAVDESS set not found (set EMOSTREAM_RAVDESS)")
    clips = list_clips(root)
    assert len(clips) == 1440
    assert len({c.actor for c in clips}) == 24
    per_emotion = count_by(clips, "emotion")
    assert per_emotion.pop("neutral") == 96
    assert set(per_emotion.values()) == {192}


@pytest.mark.full_data
def test_full_data_folds():
    root = full_data_dir()
    if root is None:
        pytest.skip("full RAVDESS set not found (set EMOSTREAM_RAVDESS)")
    folds = load_folds(root / "folds.json")
    assert len(folds) == 6
    assert all(len(actors) == 4 for actors in folds.values())
    assert sorted(a for actors in folds.values() for a in actors) == list(range(1, 25))
    assert folds == EMOBOX_FOLDS
