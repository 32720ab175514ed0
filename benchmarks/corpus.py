"""Corpus folders for the evaluations here: RAVDESS, nEMO or ASED layout, told apart by what the folder holds.

``load_clips(DIR)`` lists a folder's clips with :mod:`emostream.train.corpora` (the training code's
listers; they import no TensorFlow):

* RAVDESS speech or song: ``Actor_NN/03-VV-EE-....flac`` folders (``ravdess`` / ``ravdess_song`` by the
  vocal channel of the first file);
* nEMO: ``data.tsv`` with a ``normalized_text`` column, audio under ``samples/``;
* ASED: ``data.tsv`` and the emotion folders ``01Neutral/`` ... ``05Angry/``.

Each clip has ``.path``, ``.speaker``, ``.emotion`` (one of the eight RAVDESS labels) and ``.corpus``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from emostream.errors import DatasetError
from emostream.train.corpora import Clip, get

FloatArray = npt.NDArray[np.float32]


def corpus_name(root: Path) -> str:
    """``ravdess``, ``ravdess_song``, ``nemo`` or ``ased`` from the folder's layout; DatasetError otherwise."""
    if not root.is_dir():
        raise DatasetError(f"--data {root} is not a folder; expected a RAVDESS, nEMO or ASED corpus folder")
    actors = sorted(root.glob("Actor_*/*.flac")) or sorted(root.glob("Actor_*/*.wav"))
    if actors:
        fields = actors[0].stem.split("-")
        return "ravdess_song" if len(fields) > 1 and fields[1] == "02" else "ravdess"
    tsv = root / "data.tsv"
    if tsv.is_file():
        header = tsv.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
        if "normalized_text" in header or (root / "samples").is_dir():
            return "nemo"
        if (root / "05Angry").is_dir() or (root / "01Neutral").is_dir():
            return "ased"
    raise DatasetError(
        f"--data {root} holds neither Actor_NN/ folders (RAVDESS) nor a data.tsv with samples/ (nEMO) or with the "
        "emotion folders 01Neutral/ ... 05Angry/ (ASED); expected a corpus folder in RAVDESS, nEMO or ASED layout "
        "(the layouts: benchmarks/corpus.py)"
    )


def load_clips(root: str | Path) -> list[Clip]:
    """Every clip of the corpus in ``root``, sorted by path."""
    folder = Path(root)
    return get(corpus_name(folder)).list_clips(folder)


def read_clip(path: Path, rate_hz: int = 16000) -> FloatArray:
    """A clip as float32 mono at ``rate_hz`` (mixed down and resampled if needed), shape (samples,)."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1).astype(np.float32)
    if rate != rate_hz:
        mono = soxr.resample(mono, rate, rate_hz).astype(np.float32)
    return mono
