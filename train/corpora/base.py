"""The one shape every training corpus takes: clips with a corpus, a speaker and one of our labels.

A :class:`Clip` is one recording: its file, the corpus it comes from, the speaker (an id
unique within the corpus, plus :attr:`Clip.actor`, an integer unique across all corpora so
that arrays can hold it), the emotion mapped to the eight RAVDESS labels
(:data:`emostream.inference.metadata.EMOTIONS`) and whether it is speech or song
(``vocal_channel`` 1 or 2: a speaker's speech and song are calibrated apart). A
:class:`Corpus` names its licence, the labels it has (the training loss scores only those)
and how to list its clips from a folder.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from emostream.inference.metadata import EMOTIONS


class Clip(Protocol):
    """What training and evaluation need of a clip (RAVDESS clips and :class:`CorpusClip` both have it)."""

    @property
    def path(self) -> Path: ...
    @property
    def corpus(self) -> str: ...
    @property
    def speaker(self) -> str: ...
    @property
    def actor(self) -> int: ...
    @property
    def vocal_channel(self) -> int: ...
    @property
    def label(self) -> int: ...
    @property
    def emotion(self) -> str: ...
    @property
    def gender(self) -> str: ...
    @property
    def sentence(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class CorpusClip:
    """One recording of a corpus other than RAVDESS (see :class:`Clip`).

    ``actor``: the corpus's speaker offset + the speaker's index within the corpus (1-based),
    unique across corpora. ``sentence``: the corpus's sentence id (ASED's sentences mostly
    predict the label; kept for analyses).
    """

    path: Path
    corpus: str
    speaker: str
    actor: int
    emotion: str
    gender: str
    sentence: str = ""
    vocal_channel: int = 1

    @property
    def label(self) -> int:
        """Class index in EMOTIONS order (0 = neutral … 7 = surprised)."""
        return EMOTIONS.index(self.emotion)


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """A training corpus: name, where it comes from, its licence, its labels and its clip lister.

    ``labels``: the EMOTIONS labels it has (the loss ignores the others for its clips).
    ``speaker_offset``: added to the within-corpus speaker index to make :attr:`Clip.actor`
    unique across corpora (RAVDESS: 0, its actors keep their numbers 1..24).
    ``redistributable``: whether derived audio may ship (fixtures, demo); a model trained on
    it is a separate question the licence answers.
    """

    name: str
    title: str
    licence: str
    source: str
    labels: tuple[str, ...]
    speaker_offset: int
    env_var: str
    fetch_command: str
    redistributable: bool
    lister: Callable[[Path], list[Clip]]

    def list_clips(self, root: str | Path) -> list[Clip]:
        """All clips in ``root``, sorted by path (:class:`emostream.errors.DatasetError` when unusable)."""
        return self.lister(Path(root))

    @property
    def label_mask(self) -> tuple[bool, ...]:
        """For each of EMOTIONS, whether this corpus has it."""
        return tuple(e in self.labels for e in EMOTIONS)


def describe_clips(clips: Sequence[Clip]) -> str:
    """One line per corpus: clips, speakers, counts per emotion."""
    lines = []
    for corpus in dict.fromkeys(c.corpus for c in clips):
        mine = [c for c in clips if c.corpus == corpus]
        per = Counter(c.emotion for c in mine)
        song = sum(1 for c in mine if c.vocal_channel == 2)
        parts = f" ({len(mine) - song} speech, {song} song)" if song else ""
        emotions = ", ".join(f"{e} {per[e]}" for e in EMOTIONS if per.get(e))
        speakers = len({c.actor for c in mine})
        lines.append(f"{corpus}: {len(mine)} clips{parts} from {speakers} speakers ({emotions})")
    return "\n".join(lines)
