"""ASED v1: Amharic emotional speech (65 speakers in rooms of their choice, 5 emotions); no licence stated.

Layout (what `emostream fetch-ased` writes): ``01Neutral/ 02Fearful/ 03Happy/ 04Sad/ 05Angry/``
with FLAC files and ``data.tsv`` (``file``, ``emotion``, ``speaker_id``, ``gender``,
``sentence_id``, ``repetition``). The label comes from the folder. Train and evaluate on
it; never ship its audio. Most of its sentences were spoken in one emotion only, so a model
that hears words can learn the sentence instead of the emotion (see the corpus README).
"""

from __future__ import annotations

from pathlib import Path

from emostream.errors import DatasetError
from emostream.train.corpora.base import Clip, Corpus, CorpusClip
from emostream.train.corpora.tsv import read_rows

FOLDERS: dict[str, str] = {
    "01Neutral": "neutral",
    "02Fearful": "fearful",
    "03Happy": "happy",
    "04Sad": "sad",
    "05Angry": "angry",
}
SPEAKER_OFFSET = 200


def list_clips(root: Path) -> list[Clip]:
    """Every clip listed in ``root/data.tsv``, label from its folder, sorted by path."""
    rows = read_rows(root, ("file", "speaker_id", "gender"), "ASED", "fetch-ased")
    clips: list[Clip] = []
    for row in rows:
        folder = row["file"].split("/", 1)[0]
        emotion = FOLDERS.get(folder)
        if emotion is None:
            raise DatasetError(f"{root / 'data.tsv'}: file {row['file']!r} is not under one of {sorted(FOLDERS)}")
        path = root / row["file"]
        if not path.is_file():
            raise DatasetError(f"{path}: listed in data.tsv but missing; fetch it again (`emostream fetch-ased`)")
        try:
            number = int(row["speaker_id"])
        except ValueError as exc:
            raise DatasetError(f"{root / 'data.tsv'}: speaker_id {row['speaker_id']!r}; expected 01..99") from exc
        clips.append(
            CorpusClip(
                path=path,
                corpus="ased",
                speaker=row["speaker_id"],
                actor=SPEAKER_OFFSET + number,
                emotion=emotion,
                gender=row["gender"],
                sentence=row.get("sentence_id", ""),
            )
        )
    return sorted(clips, key=lambda c: str(c.path))


CORPUS = Corpus(
    name="ased",
    title="ASED v1 (Retta et al. 2022), Amharic speech, 65 speakers in their own rooms",
    licence="none stated (cite the paper; train and evaluate, do not redistribute its audio)",
    source="https://github.com/Ethio2021/ASED_V1",
    labels=tuple(sorted(set(FOLDERS.values()))),
    speaker_offset=SPEAKER_OFFSET,
    env_var="EMOSTREAM_ASED",
    fetch_command="fetch-ased",
    redistributable=False,
    lister=list_clips,
)
