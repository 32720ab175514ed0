"""`emostream fetch-ased DEST`: ASED v1 (Amharic speech, 65 speakers, 2474 clips); no licence stated.

Downloads the archive of the pinned commit of github.com/Ethio2021/ASED_V1, checks every
WAV against its sha256, writes them as 16 kHz mono 16-bit FLAC (the originals are 16 kHz:
only the container changes) under ``DEST/01Neutral/ … 05Angry/`` and writes
``DEST/data.tsv`` (``file``, ``emotion``, ``speaker_id``, ``gender``, ``sentence_id``,
``repetition``), parsed from the names ``xn-yy-aa-gg-bb`` (the layout of the shared
``ased-16k``). The corpus states no licence: train and evaluate on it, never redistribute
its audio; the command says so each time it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from emostream.errors import DatasetError
from emostream.train.fetch_common import (
    CorpusSpec,
    Steps,
    add_common_options,
    fetch_corpus,
    packaged_sha_list,
    run_command,
)

COMMIT = "30fee0345cbd37e12dd725fbe69f90522cffb046"
URL = f"https://github.com/Ethio2021/ASED_V1/archive/{COMMIT}.zip"
SHA_LIST = "ased.sha256.gz"
FOLDERS: dict[str, str] = {
    "01Neutral": "neutral",
    "02Fearful": "fearful",
    "03Happy": "happy",
    "04Sad": "sad",
    "05Angry": "angry",
}
GENDERS = {"01": "female", "02": "male"}
HEADER = ["file", "emotion", "speaker_id", "gender", "sentence_id", "repetition"]
NOTICE = (
    "ASED v1 states no licence. Cite: E. A. Retta et al., 'A New Amharic Speech Emotion Dataset and "
    "Classification Benchmark', ACM TALLIP 2022, doi:10.1145/3529759. Use it to train and evaluate; "
    "do not redistribute its audio (not in a repository, a package or a demo)."
)


def build_table(written: Mapping[str, str], extras: Mapping[str, bytes]) -> list[list[str]]:
    """``data.tsv`` rows (header first), sorted by file; the label comes from the folder.

    A name ``xn-yy-aa-gg-bb``: emotion letter and folder number, sentence, repetition,
    gender (01 female, 02 male), speaker.
    """
    rows = [list(HEADER)]
    for source in sorted(written):
        path = PurePosixPath(source)
        emotion = FOLDERS.get(path.parent.as_posix())
        if emotion is None:
            raise DatasetError(f"ASED file {source} is not in one of the folders {sorted(FOLDERS)}")
        parts = path.stem.split("-")
        if len(parts) != 5 or not all(p.isdigit() for p in parts[1:]) or parts[3] not in GENDERS:
            raise DatasetError(f"ASED file {source}: expected a name xn-yy-aa-gg-bb (gg 01 or 02)")
        rows.append([written[source], emotion, parts[4], GENDERS[parts[3]], parts[1], parts[2]])
    return rows


SPEC = CorpusSpec(
    name="ASED",
    command="fetch-ased",
    url=URL,
    archive_name=f"ASED_V1-{COMMIT}.zip",
    member_prefix="",
    out_prefix="",
    outputs=tuple(FOLDERS),
    table=build_table,
    space="about 0.35 GB free in DEST while it runs (the archive and the FLAC files), 0.1 GB after",
    notice=NOTICE,
)


def fetch_ased(
    dest: Path,
    *,
    url: str | None = None,
    checksums: Mapping[str, str] | None = None,
    zip_file: Path | None = None,
    source_dir: Path | None = None,
    keep_zip: bool = False,
    steps: Steps | None = None,
) -> str:
    """Fetch ASED into ``dest`` (see the module doc); returns ``N clips from S speakers, ...``.

    ``checksums``: {``NNEmotion/name.wav``: sha256} (default: the packaged list of all 2474).
    """
    return fetch_corpus(
        dest,
        SPEC,
        listed=packaged_sha_list(SHA_LIST) if checksums is None else checksums,
        extras={},
        url=url,
        zip_file=zip_file,
        source_dir=source_dir,
        keep_zip=keep_zip,
        steps=steps,
    )


def _fetch(args: argparse.Namespace) -> int:
    return run_command(SPEC, args, fetch_ased)


def register(subparsers: Any) -> None:
    """Add `fetch-ased` (runtime dependencies only); a second call adds nothing."""
    if "fetch-ased" in getattr(subparsers, "choices", {}):
        return
    parser = subparsers.add_parser(
        "fetch-ased", help="download ASED (Amharic; no licence stated: train and evaluate only) as 16 kHz FLAC"
    )
    add_common_options(parser, SPEC)
    parser.set_defaults(func=_fetch, command="fetch-ased")
