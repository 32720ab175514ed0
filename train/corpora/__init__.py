"""Training corpora, each a small module of one shape (:class:`~emostream.train.corpora.base.Corpus`).

``ravdess`` (speech), ``ravdess_song``, ``nemo`` and ``ased``. Training and evaluation speak of
corpora and speakers; :data:`CORPORA` is the registry, :func:`get` looks one up by name.
"""

from __future__ import annotations

from emostream.errors import ConfigError
from emostream.train.corpora import ased, nemo, ravdess
from emostream.train.corpora.base import Clip, Corpus, CorpusClip, describe_clips

CORPORA: dict[str, Corpus] = {c.name: c for c in (ravdess.SPEECH, ravdess.SONG, nemo.CORPUS, ased.CORPUS)}
LOCO_CORPORA: tuple[str, ...] = ("ravdess", "nemo", "ased")
"""The corpora the leave-one-corpus-out protocol tests on, in report order."""


def get(name: str) -> Corpus:
    """The corpus named ``name``; :class:`ConfigError` listing the known names otherwise."""
    try:
        return CORPORA[name]
    except KeyError:
        raise ConfigError(f"unknown corpus {name!r}; expected one of {', '.join(CORPORA)}") from None


def corpus_of(clip: Clip) -> Corpus:
    """The corpus a clip comes from (RAVDESS song clips: ``ravdess_song``)."""
    if clip.corpus == "ravdess" and clip.vocal_channel == 2:
        return CORPORA["ravdess_song"]
    return get(clip.corpus)


__all__ = ["CORPORA", "LOCO_CORPORA", "Clip", "Corpus", "CorpusClip", "corpus_of", "describe_clips", "get"]
