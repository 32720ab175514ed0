"""RAVDESS speech and song as corpora (file names, folds and download live in :mod:`emostream.train.ravdess`)."""

from __future__ import annotations

from pathlib import Path

from emostream.inference.metadata import EMOTIONS
from emostream.train.corpora.base import Clip, Corpus
from emostream.train.ravdess import SONG_EMOTIONS, list_clips, list_song_clips


def _speech(root: Path) -> list[Clip]:
    return list(list_clips(root))


def _song(root: Path) -> list[Clip]:
    return list(list_song_clips(root))


SPEECH = Corpus(
    name="ravdess",
    title="RAVDESS speech (Livingstone & Russo 2018), acted North American English, 24 actors",
    licence="CC BY-NC-SA 4.0",
    source="https://zenodo.org/record/1188976",
    labels=EMOTIONS,
    speaker_offset=0,
    env_var="EMOSTREAM_RAVDESS",
    fetch_command="fetch-ravdess",
    redistributable=True,
    lister=_speech,
)
SONG = Corpus(
    name="ravdess_song",
    title="RAVDESS song (Livingstone & Russo 2018), the same 24 actors singing",
    licence="CC BY-NC-SA 4.0",
    source="https://zenodo.org/record/1188976",
    labels=SONG_EMOTIONS,
    speaker_offset=0,
    env_var="EMOSTREAM_RAVDESS_SONG",
    fetch_command="fetch-ravdess",
    redistributable=True,
    lister=_song,
)
