"""The RAVDESS speech and song sets: file names, folder listing, folds and audio loading.

File names are ``MM-VV-EE-II-SS-RR-AA.ext`` (seven two-digit fields: modality, vocal
channel, emotion, intensity, statement, repetition, actor), inside ``Actor_AA/``
folders. Odd actors are male, even actors female. Vocal channel 01 is speech, 02 song
(six emotions, no actor 18; :func:`list_song_clips`). The actors are the same people in
both sets, so an actor-independent split splits by actor over speech and song together.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from emostream.audio.files import FloatArray, load_mono
from emostream.errors import DatasetError
from emostream.inference.metadata import EMOTIONS

ENV_VAR = "EMOSTREAM_RAVDESS"
SONG_ENV_VAR = "EMOSTREAM_RAVDESS_SONG"
SONG_EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful")
"""The six emotions RAVDESS song has (no disgust, no surprised)."""
PATTERN = "MM-VV-EE-II-SS-RR-AA.flac|wav (seven two-digit fields, e.g. 03-01-05-02-01-01-07.flac)"
AUDIO_SUFFIXES: tuple[str, ...] = (".flac", ".wav")
N_ACTORS = 24
_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_VALID: dict[str, range] = {
    "modality": range(1, 4),
    "vocal_channel": range(1, 3),
    "emotion_code": range(1, 9),
    "intensity": range(1, 3),
    "statement": range(1, 3),
    "repetition": range(1, 3),
    "actor": range(1, N_ACTORS + 1),
}


@dataclass(frozen=True)
class Clip:
    """One RAVDESS recording; the integer fields are the file-name codes."""

    path: Path
    modality: int
    vocal_channel: int
    emotion_code: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def emotion(self) -> str:
        """Emotion name (one of :data:`emostream.inference.metadata.EMOTIONS`)."""
        return EMOTIONS[self.emotion_code - 1]

    @property
    def label(self) -> int:
        """Class index in EMOTIONS order (0 = neutral … 7 = surprised)."""
        return self.emotion_code - 1

    @property
    def gender(self) -> str:
        """ "male" for odd actors, "female" for even ones."""
        return "male" if self.actor % 2 else "female"

    @property
    def sentence(self) -> str:
        """The statement code as a sentence id: "01" (kids are talking...) or "02" (dogs are sitting...)."""
        return f"{self.statement:02d}"

    @property
    def corpus(self) -> str:
        """The corpus name (:mod:`emostream.train.corpora`): always "ravdess" (song clips have vocal channel 2)."""
        return "ravdess"

    @property
    def speaker(self) -> str:
        """The actor as a two-digit id ("01" .. "24")."""
        return f"{self.actor:02d}"


def parse_filename(path: str | Path) -> Clip:
    """Parse a RAVDESS file name; :class:`DatasetError` names the file and the expected pattern."""
    file = Path(path)
    if file.suffix.lower() not in AUDIO_SUFFIXES:
        raise DatasetError(f"{file.name}: not a .flac or .wav file; expected {PATTERN}")
    match = _NAME_RE.match(file.stem)
    if match is None:
        raise DatasetError(f"{file.name}: not a RAVDESS file name; expected {PATTERN}")
    values = [int(g) for g in match.groups()]
    for (name, valid), value in zip(_VALID.items(), values, strict=True):
        if value not in valid:
            raise DatasetError(
                f"{file.name}: field {name} is {value:02d}, expected {valid.start:02d}..{valid.stop - 1:02d}; "
                f"file names follow {PATTERN}"
            )
    return Clip(file, *values)


def default_song_dir() -> Path | None:
    """The song folder named by the EMOSTREAM_RAVDESS_SONG environment variable, if set."""
    value = os.environ.get(SONG_ENV_VAR)
    return Path(value) if value else None


def list_song_clips(root: str | Path) -> list[Clip]:
    """All song clips (vocal channel 02) in ``root/Actor_XX/``, sorted by path.

    :class:`DatasetError` when the folder is missing, holds no song clip, holds a speech
    clip (a speech folder passed by mistake) or a song clip of an emotion song lacks.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(
            f"RAVDESS song folder {folder} does not exist; pass --song DIR (the Audio_Song_Actors_01-24 clips "
            f"as 16 kHz FLAC, e.g. ../shared/datasets/ravdess-song-16k) or set {SONG_ENV_VAR}"
        )
    files = sorted(p for p in folder.glob("Actor_*/*") if p.suffix.lower() in AUDIO_SUFFIXES)
    clips = [parse_filename(p) for p in files]
    speech = [c for c in clips if c.vocal_channel != 2]
    if speech:
        raise DatasetError(
            f"{speech[0].path}: vocal channel {speech[0].vocal_channel:02d} in a song folder; --song takes the "
            "song clips (vocal channel 02) only, the speech clips come from --data"
        )
    if not clips:
        raise DatasetError(
            f"RAVDESS song folder {folder} holds no Actor_XX/*.flac|*.wav clips; expected the layout of "
            "Audio_Song_Actors_01-24 (file names 03-02-EE-II-SS-RR-AA)"
        )
    for clip in clips:
        if clip.emotion not in SONG_EMOTIONS:
            raise DatasetError(f"{clip.path}: emotion {clip.emotion} in a song folder; song has {SONG_EMOTIONS}")
        if clip.path.parent.name != f"Actor_{clip.actor:02d}":
            where = clip.path.parent.name
            raise DatasetError(f"{clip.path}: actor {clip.actor:02d} in the name but stored under {where}/")
    return clips


def default_data_dir() -> Path | None:
    """The data folder named by the EMOSTREAM_RAVDESS environment variable, if set."""
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def list_clips(root: str | Path, speech_only: bool = True) -> list[Clip]:
    """All clips in ``root/Actor_XX/``, sorted by path; speech clips (vocal channel 01) only by default."""
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(
            f"RAVDESS folder {folder} does not exist; pass --data DIR or set {ENV_VAR}, "
            "or download it with `emostream fetch-ravdess DEST`"
        )
    files = sorted(p for p in folder.glob("Actor_*/*") if p.suffix.lower() in AUDIO_SUFFIXES)
    clips = [parse_filename(p) for p in files]
    if speech_only:
        clips = [c for c in clips if c.vocal_channel == 1]
    if not clips:
        raise DatasetError(
            f"RAVDESS folder {folder} holds no Actor_XX/*.flac|*.wav speech clips; "
            "expected the layout of Audio_Speech_Actors_01-24 (see `emostream fetch-ravdess`)"
        )
    for clip in clips:
        folder_actor = clip.path.parent.name
        if folder_actor != f"Actor_{clip.actor:02d}":
            raise DatasetError(f"{clip.path}: actor {clip.actor:02d} in the name but stored under {folder_actor}/")
    return clips


def count_by(clips: list[Clip], field: str) -> dict[str, int]:
    """Number of clips per value of ``field`` ("actor", "emotion", "gender", ...), keys as strings, sorted."""
    counts = Counter(str(getattr(c, field)) for c in clips)
    return dict(sorted(counts.items()))


def describe(clips: list[Clip]) -> str:
    """One-paragraph summary of what was found: clips (speech/song), actors and counts per emotion."""
    per_emotion = Counter(c.emotion for c in clips)
    emotions = ", ".join(f"{e} {per_emotion.get(e, 0)}" for e in EMOTIONS)
    actors = sorted({c.actor for c in clips})
    song = sum(1 for c in clips if c.vocal_channel == 2)
    parts = f" ({len(clips) - song} speech, {song} song)" if song else ""
    return f"{len(clips)} clips{parts} from {len(actors)} actors ({emotions})"


def load_clip(clip: Clip, rate_hz: int = 16000) -> FloatArray:
    """The clip's audio as float32 mono at ``rate_hz`` (resampled once, whole-signal)."""
    return load_mono(clip.path, rate_hz)


def load_folds(path: str | Path) -> dict[int, tuple[int, ...]]:
    """EmoBox folds from folds.json: fold number -> test actors. Checks 6 folds × 4 actors covering 1..24 once."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        folds = {int(k): tuple(int(a) for a in v) for k, v in data["test_actors"].items()}
    except FileNotFoundError as exc:
        raise DatasetError(f"{file}: no folds file; expected folds.json beside the Actor_XX folders") from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"{file}: not a folds file ({exc}); expected {{'test_actors': {{'1': [1, 11, ...]}}}}"
        ) from exc
    actors = sorted(a for v in folds.values() for a in v)
    if actors != list(range(1, N_ACTORS + 1)):
        raise DatasetError(f"{file}: test actors {actors} do not cover actors 1..{N_ACTORS} exactly once")
    return dict(sorted(folds.items()))


def folds_file(root: str | Path) -> Path:
    """Where folds.json is expected for a data folder."""
    return Path(root) / "folds.json"
