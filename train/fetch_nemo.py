"""`emostream fetch-nemo DEST`: the nEMO corpus (Polish acted speech, 9 actors, 4481 clips), CC BY-NC-SA 4.0.

Downloads the archive of the pinned commit of github.com/amu-cai/nEMO, checks every WAV
in ``samples/`` and the original ``data.tsv`` against their sha256, converts the 24 kHz
WAVs to 16 kHz mono 16-bit FLAC (soxr HQ) and writes ``DEST/samples/*.flac`` and
``DEST/data.tsv`` with the columns ``file``, ``emotion``, ``speaker_id``, ``gender``,
``age``, ``sentence_id``, ``normalized_text`` (the layout of the shared ``nemo-16k``).
"""

from __future__ import annotations

import argparse
import csv
import io
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

COMMIT = "66de9999a8f2f605eb5f64841790aa5cb0877782"
URL = f"https://github.com/amu-cai/nEMO/archive/{COMMIT}.zip"
# sha256 of data.tsv at COMMIT (the nEMO README of the shared corpus folder gives it too).
DATA_TSV_SHA256 = "c4919594a62fee0dcd70066ace7bddfb92dc567321fe6ba37ea53f6008f3d828"
SHA_LIST = "nemo.sha256.gz"
HEADER = ["file", "emotion", "speaker_id", "gender", "age", "sentence_id", "normalized_text"]
SOURCE_COLUMNS = ("file_id", "emotion", "speaker_id", "gender", "age", "normalized_text")
NOTICE = (
    "nEMO (Iwona Christop, 'nEMO: Dataset of Emotional Speech in Polish', LREC-COLING 2024) is licensed "
    "CC BY-NC-SA 4.0: non-commercial use, credit the paper, share derived data under the same terms."
)


def build_table(written: Mapping[str, str], extras: Mapping[str, bytes]) -> list[list[str]]:
    """``data.tsv`` rows (header first) from the original data.tsv, in its order, for the converted files.

    ``written``: {original WAV name: written path}. The original's ``speaker_id`` carries
    leading spaces (stripped); ``sentence_id`` comes from the file name.
    """
    try:
        text = extras["data.tsv"].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"nEMO data.tsv is not UTF-8 ({exc}); download the archive again") from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in SOURCE_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"nEMO data.tsv lacks the columns {missing}; expected {list(SOURCE_COLUMNS)}")
    rows = [list(HEADER)]
    seen: set[str] = set()
    for number, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DatasetError(f"nEMO data.tsv line {number}: {len(fields)} fields, expected {len(header)}")
        row = dict(zip(header, (f.strip() for f in fields), strict=True))
        name = row["file_id"]
        if name not in written:
            raise DatasetError(f"nEMO data.tsv line {number} lists {name}, which is not among the checked WAV files")
        if name in seen:
            raise DatasetError(f"nEMO data.tsv line {number} lists {name} a second time")
        seen.add(name)
        sentence = PurePosixPath(name).stem.rsplit("_", 1)[-1]
        rows.append(
            [
                PurePosixPath(written[name]).name,
                row["emotion"],
                row["speaker_id"],
                row["gender"],
                row["age"],
                sentence,
                row["normalized_text"],
            ]
        )
    unlisted = sorted(set(written) - seen)
    if unlisted:
        raise DatasetError(f"nEMO data.tsv has no row for {len(unlisted)} WAV files (e.g. {unlisted[0]})")
    return rows


SPEC = CorpusSpec(
    name="nEMO",
    command="fetch-nemo",
    url=URL,
    archive_name=f"nEMO-{COMMIT}.zip",
    member_prefix="samples/",
    out_prefix="samples/",
    outputs=("samples",),
    table=build_table,
    space="about 0.8 GB free in DEST while it runs (the archive and the FLAC files), 0.22 GB after",
    notice=NOTICE,
)


def fetch_nemo(
    dest: Path,
    *,
    url: str | None = None,
    checksums: Mapping[str, str] | None = None,
    data_tsv_sha256: str = DATA_TSV_SHA256,
    zip_file: Path | None = None,
    source_dir: Path | None = None,
    keep_zip: bool = False,
    steps: Steps | None = None,
) -> str:
    """Fetch nEMO into ``dest`` (see the module doc); returns ``N clips from S speakers, ...``.

    ``checksums``: {name under samples/: sha256} (default: the packaged list of all 4481).
    """
    return fetch_corpus(
        dest,
        SPEC,
        listed=packaged_sha_list(SHA_LIST) if checksums is None else checksums,
        extras={"data.tsv": data_tsv_sha256.lower()},
        url=url,
        zip_file=zip_file,
        source_dir=source_dir,
        keep_zip=keep_zip,
        steps=steps,
    )


def _fetch(args: argparse.Namespace) -> int:
    return run_command(SPEC, args, fetch_nemo, data_tsv_sha256=args.data_tsv_sha256 or DATA_TSV_SHA256)


def register(subparsers: Any) -> None:
    """Add `fetch-nemo` (runtime dependencies only); a second call adds nothing."""
    if "fetch-nemo" in getattr(subparsers, "choices", {}):
        return
    parser = subparsers.add_parser(
        "fetch-nemo", help="download nEMO (Polish, CC BY-NC-SA 4.0) and convert it to 16 kHz FLAC"
    )
    add_common_options(parser, SPEC)
    parser.add_argument("--data-tsv-sha256", help="expected sha256 of the original data.tsv (default: the pinned one)")
    parser.set_defaults(func=_fetch, command="fetch-nemo")
