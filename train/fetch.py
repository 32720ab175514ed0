"""`emostream fetch-ravdess DEST`: download, verify, unpack and convert the RAVDESS speech set.

The official zip is streamed to ``DEST/Audio_Speech_Actors_01-24.zip.part`` with a
progress bar, checked against the MD5 that Zenodo publishes for it, unpacked into a
staging folder, converted to 16 kHz mono 16-bit FLAC (``Actor_XX/NAME.flac``) and only
then moved into ``DEST``. A checksum mismatch or a bad archive leaves nothing behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import soundfile as sf

from emostream.audio.files import load_mono
from emostream.errors import DatasetError
from emostream.train import fetch_common
from emostream.train.fetch_common import Progress
from emostream.train.ravdess import describe, list_clips, parse_filename

RAVDESS_URL = "https://zenodo.org/record/1188976/files/Audio_Speech_Actors_01-24.zip"
# MD5 and size of Audio_Speech_Actors_01-24.zip as listed on Zenodo record 1188976.
RAVDESS_MD5 = "bc696df654c87fed845eb13823edef8a"
RAVDESS_BYTES = 208_468_073
ZIP_NAME = "Audio_Speech_Actors_01-24.zip"
# EmoBox actor-independent folds (test actors per fold), written as folds.json.
EMOBOX_FOLDS: dict[int, tuple[int, ...]] = {
    1: (1, 11, 20, 21),
    2: (4, 10, 12, 14),
    3: (8, 9, 19, 23),
    4: (3, 5, 7, 24),
    5: (2, 15, 16, 18),
    6: (6, 13, 17, 22),
}
_CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, progress: Progress | None = None, timeout_s: float = 60.0) -> None:
    """Stream ``url`` to ``target`` via ``target.part``; the final name appears only when complete."""
    hint = "check the network, or download the zip by hand and run `emostream fetch-ravdess DEST --zip FILE`"
    fetch_common.download(url, target, progress, hint=hint, timeout_s=timeout_s)


def verify_md5(path: Path, expected: str) -> None:
    """Raise :class:`DatasetError` (and delete ``path``) when its MD5 is not ``expected``."""
    actual = md5_of(path)
    if actual != expected.lower():
        path.unlink(missing_ok=True)
        raise DatasetError(
            f"{path.name} has MD5 {actual}, expected {expected} (Zenodo record 1188976); the download is "
            "corrupt or not the RAVDESS speech zip. It was deleted; run fetch-ravdess again"
        )


def unpack_and_convert(zip_path: Path, dest: Path, rate_hz: int = 16000) -> int:
    """Convert every RAVDESS WAV in ``zip_path`` to ``dest/Actor_XX/NAME.flac`` (mono, ``rate_hz``, 16-bit).

    Work happens in a staging folder beside ``dest``; ``dest`` receives the Actor_XX
    folders only when all files converted. Returns the number of clips written.
    """
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = [m for m in archive.namelist() if m.lower().endswith(".wav")]
                if not members:
                    raise DatasetError(f"{zip_path} holds no .wav files; expected {ZIP_NAME} from Zenodo")
                for member in members:
                    clip = parse_filename(Path(member).name)
                    raw = staging / "raw.wav"
                    with archive.open(member) as src, raw.open("wb") as out:
                        shutil.copyfileobj(src, out)
                    audio = load_mono(raw, rate_hz)
                    folder = staging / f"Actor_{clip.actor:02d}"
                    folder.mkdir(exist_ok=True)
                    sf.write(str(folder / (Path(member).stem + ".flac")), audio, rate_hz, subtype="PCM_16")
                raw.unlink(missing_ok=True)
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"{zip_path} is not a readable zip ({exc}); download it again") from exc
        for folder in sorted(staging.glob("Actor_*")):
            target = dest / folder.name
            if target.exists():
                shutil.rmtree(target)
            folder.replace(target)
        return len(members)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_folds(dest: Path) -> Path:
    """Write the EmoBox folds as ``dest/folds.json``."""
    path = dest / "folds.json"
    data = {
        "protocol": "EmoBox RAVDESS speech, 6 actor-independent folds (4 test actors per fold)",
        "test_actors": {str(k): list(v) for k, v in EMOBOX_FOLDS.items()},
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def fetch_ravdess(
    dest: Path,
    *,
    url: str = RAVDESS_URL,
    md5: str = RAVDESS_MD5,
    zip_file: Path | None = None,
    keep_zip: bool = False,
    progress: Progress | None = None,
) -> str:
    """Download (or take ``zip_file``), verify, unpack and convert; returns a description of what is in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if zip_file is None:
        zip_path = dest / ZIP_NAME
        if not zip_path.is_file():
            download(url, zip_path, progress)
        downloaded = True
    else:
        if not zip_file.is_file():
            raise DatasetError(f"zip file {zip_file} does not exist; pass the path of {ZIP_NAME}")
        zip_path, downloaded = zip_file, False
    if downloaded:
        verify_md5(zip_path, md5)
    else:
        actual = md5_of(zip_path)
        if actual != md5.lower():
            raise DatasetError(f"{zip_path} has MD5 {actual}, expected {md5}; it is not the RAVDESS speech zip")
    unpack_and_convert(zip_path, dest)
    write_folds(dest)
    if downloaded and not keep_zip:
        zip_path.unlink(missing_ok=True)
    return describe(list_clips(dest))


def _fetch(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn  # noqa: PLC0415

    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("RAVDESS", total=None)
        summary = fetch_ravdess(
            Path(args.dest),
            url=args.url or RAVDESS_URL,
            md5=args.md5 or RAVDESS_MD5,
            zip_file=Path(args.zip) if args.zip else None,
            keep_zip=args.keep_zip,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    print(f"{args.dest}: {summary}")
    return 0


def register(subparsers: Any) -> None:
    """Add `fetch-ravdess` (runtime dependencies only: no TensorFlow, no scipy); a second call adds nothing."""
    if "fetch-ravdess" in getattr(subparsers, "choices", {}):
        return
    p_fetch = subparsers.add_parser("fetch-ravdess", help="download RAVDESS speech and convert it to 16 kHz FLAC")
    p_fetch.add_argument("dest", help="destination folder")
    p_fetch.add_argument("--zip", help="use an already downloaded Audio_Speech_Actors_01-24.zip")
    p_fetch.add_argument("--url", help="download URL (default: Zenodo record 1188976)")
    p_fetch.add_argument("--md5", help="expected MD5 of the zip (default: Zenodo's published value)")
    p_fetch.add_argument("--keep-zip", action="store_true")
    p_fetch.set_defaults(func=_fetch, command="fetch-ravdess")
