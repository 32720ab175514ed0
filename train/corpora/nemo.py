"""nEMO: acted emotional speech in Polish (9 actors, 6 emotions), CC BY-NC-SA 4.0.

Layout (what `emostream fetch-nemo` writes): ``samples/{speaker}_{emotion}_{sentence}.flac``
and ``data.tsv`` with the columns ``file``, ``emotion``, ``speaker_id``, ``gender``, ...
Labels: anger -> angry, fear -> fearful, happiness -> happy, neutral, sadness -> sad,
surprised (no calm, no disgust).
"""

from __future__ import annotations

from pathlib import Path

from emostream.errors import DatasetError
from emostream.train.corpora.base import Clip, Corpus, CorpusClip
from emostream.train.corpora.tsv import read_rows

LABEL_MAP: dict[str, str] = {
    "anger": "angry",
    "fear": "fearful",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprised": "surprised",
}
SPEAKER_OFFSET = 100


def list_clips(root: Path) -> list[Clip]:
    """Every clip listed in ``root/data.tsv`` (files under ``root/samples``), sorted by path."""
    rows = read_rows(root, ("file", "emotion", "speaker_id", "gender"), "nEMO", "fetch-nemo")
    speakers = {s: i + 1 for i, s in enumerate(sorted({r["speaker_id"] for r in rows}))}
    clips: list[Clip] = []
    for row in rows:
        emotion = LABEL_MAP.get(row["emotion"])
        if emotion is None:
            raise DatasetError(f"{root / 'data.tsv'}: emotion {row['emotion']!r}; expected one of {sorted(LABEL_MAP)}")
        path = root / "samples" / row["file"]
        if not path.is_file():
            raise DatasetError(f"{path}: listed in data.tsv but missing; fetch it again (`emostream fetch-nemo`)")
        clips.append(
            CorpusClip(
                path=path,
                corpus="nemo",
                speaker=row["speaker_id"],
                actor=SPEAKER_OFFSET + speakers[row["speaker_id"]],
                emotion=emotion,
                gender=row["gender"],
                sentence=row.get("sentence_id", ""),
            )
        )
    return sorted(clips, key=lambda c: str(c.path))


CORPUS = Corpus(
    name="nemo",
    title="nEMO (Christop 2024), acted Polish speech, 9 actors",
    licence="CC BY-NC-SA 4.0",
    source="https://github.com/amu-cai/nEMO",
    labels=tuple(sorted(set(LABEL_MAP.values()))),
    speaker_offset=SPEAKER_OFFSET,
    env_var="EMOSTREAM_NEMO",
    fetch_command="fetch-nemo",
    redistributable=True,
    lister=list_clips,
)
