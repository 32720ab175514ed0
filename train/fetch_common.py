"""What the `emostream fetch-*` commands share: download, per-file sha256 checks, staging, FLAC conversion.

A corpus published as a source repository (nEMO, ASED) is fetched as the archive of one
pinned commit. The archive itself has no stable checksum, so every audio file in it is
checked against the sha256 list shipped in ``emostream/train/checksums`` before anything
is converted. Conversion writes 16 kHz mono 16-bit FLAC into a staging folder inside
``DEST``; only when every file converted are the corpus folders and ``data.tsv`` moved
into place (replacing an earlier fetch). On any failure the staging folder goes, a
refused download goes, and a ``DEST`` this run created goes if it is empty.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import soundfile as sf

from emostream.audio.files import resample, to_mono
from emostream.errors import DatasetError

CHUNK = 1 << 20
TARGET_RATE_HZ = 16000
LFS_POINTER = b"version https://git-lfs"
_SHA_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")

Progress = Callable[[int, int | None], None]
"""Download progress: bytes done, total bytes (None when the server does not say)."""
Steps = Callable[[str, int, int | None], None]
"""Progress of a corpus fetch: stage ("download", "verify", "convert"), done, total."""
TableBuilder = Callable[[Mapping[str, str], Mapping[str, bytes]], list[list[str]]]
"""Builds ``data.tsv`` (header row first) from {source path: written path} and the verified extra files."""


def download(url: str, target: Path, progress: Progress | None = None, *, hint: str, timeout_s: float = 60.0) -> None:
    """Stream ``url`` to ``target`` via ``target.part``; the final name appears only when complete.

    Any failure (network, disk, Ctrl-C) deletes the ``.part`` file; network and disk
    failures raise :class:`DatasetError` ending with ``hint`` (how to fetch by hand).
    """
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length", 0) or 0) or None
            done = 0
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(f"downloading {url} failed ({exc}); {hint}") from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def parse_sha_list(text: str, origin: str) -> dict[str, str]:
    """``sha256sum``-style lines (``HEX  PATH``) as {path: lowercase hex}; DatasetError naming a bad line."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _SHA_LINE.match(line.rstrip("\r"))
        if match is None:
            raise DatasetError(f"{origin} line {number}: {line[:80]!r}; expected '<64 hex digits>  <path>'")
        path = match.group(2)
        if path in sums:
            raise DatasetError(f"{origin} line {number}: {path} is listed twice")
        sums[path] = match.group(1).lower()
    if not sums:
        raise DatasetError(f"{origin} lists no files; expected '<64 hex digits>  <path>' lines")
    return sums


def read_sha_list(path: Path) -> dict[str, str]:
    """A sha256 list file (plain or ``.gz``) as {path: hex}."""
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DatasetError(f"sha256 list {path} is unreadable ({exc}); expected 'sha256sum' output") from exc
    return parse_sha_list(text, str(path))


def packaged_sha_list(name: str) -> dict[str, str]:
    """The sha256 list ``name`` shipped in ``emostream/train/checksums`` (gzip)."""
    resource = resources.files("emostream.train.checksums").joinpath(name)
    try:
        text = gzip.decompress(resource.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"the packaged checksum list checksums/{name} is missing or unreadable ({exc}); reinstall emostream"
        ) from exc
    return parse_sha_list(text, f"checksums/{name}")


class Source(Protocol):
    """Where the original files are read from: an archive or a checked-out folder."""

    label: str

    def names(self) -> list[str]:
        """Every file's path (``/``-separated)."""
        ...

    def read(self, name: str) -> bytes:
        """The bytes of one file; DatasetError when it cannot be read."""
        ...


class ZipSource:
    """A zip archive (GitHub's archive of a commit, or one a user made)."""

    def __init__(self, path: Path) -> None:
        self.label = str(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{path} is not a readable zip ({exc}); download it again") from exc

    def names(self) -> list[str]:
        """Every file member (folders left out)."""
        return [m for m in self._zip.namelist() if not m.endswith("/")]

    def read(self, name: str) -> bytes:
        """One member's bytes (its CRC checked by zipfile)."""
        try:
            return self._zip.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
            raise DatasetError(f"{self.label}: member {name} is corrupt ({exc}); download the archive again") from exc

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()


class FolderSource:
    """A checked-out copy of the repository (``git clone`` at the pinned commit)."""

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise DatasetError(f"source folder {path} does not exist; pass a clone of the corpus repository")
        self.label = str(path)
        self._root = path

    def names(self) -> list[str]:
        """Every file below the folder (``.git`` left out)."""
        return [
            p.relative_to(self._root).as_posix()
            for p in self._root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(self._root).parts
        ]

    def read(self, name: str) -> bytes:
        """One file's bytes."""
        try:
            return (self._root / name).read_bytes()
        except OSError as exc:
            raise DatasetError(f"{self._root / name} is unreadable ({exc})") from exc

    def close(self) -> None:
        """Nothing to close."""


@dataclass(frozen=True, kw_only=True)
class CorpusSpec:
    """How one corpus is fetched from its source repository.

    ``member_prefix``: the folder, relative to the repository root, that the sha256 list's
    paths are relative to (nEMO: ``samples/``; ASED: none). ``out_prefix``: the same for
    the written FLAC files in ``DEST``. ``outputs``: the top-level names this fetch owns in
    ``DEST`` (replaced on a new fetch; ``data.tsv`` is always one). ``extras``: other
    files of the repository to check and hand to ``table`` ({path from the root: sha256}).
    """

    name: str
    command: str
    url: str
    archive_name: str
    member_prefix: str
    out_prefix: str
    outputs: tuple[str, ...]
    table: TableBuilder
    space: str
    notice: str


@dataclass(frozen=True, kw_only=True)
class Located:
    """Where the listed files are in a source: {listed path: source name}, and the repository root prefix."""

    members: dict[str, str]
    root: str


def locate(names: Sequence[str], listed: Mapping[str, str], spec: CorpusSpec, label: str) -> Located:
    """Find every listed file in ``names`` (under any one top folder, as GitHub's archives have)."""
    wanted = {spec.member_prefix + key: key for key in listed}
    depths = sorted({len(PurePosixPath(path).parts) for path in wanted})
    members: dict[str, str] = {}
    roots: set[str] = set()
    for name in names:
        parts = PurePosixPath(name).parts
        for depth in depths:
            tail = "/".join(parts[-depth:])
            key = wanted.get(tail)
            if key is None or len(parts) < depth:
                continue
            if key in members:
                raise DatasetError(
                    f"{label} holds {tail} twice ({members[key]}, {name}); pass the archive of one commit"
                )
            members[key] = name
            roots.add(name[: len(name) - len(tail)])
    missing = sorted(set(listed) - set(members))
    if missing:
        raise DatasetError(
            f"{label} holds {len(members)} of the {len(listed)} {spec.name} audio files listed in its sha256 list "
            f"(missing e.g. {spec.member_prefix}{missing[0]}); it is not the {spec.name} repository at the pinned "
            f"commit. Run `emostream {spec.command} DEST` without --zip to download it"
        )
    if len(roots) != 1:
        raise DatasetError(f"{label} holds the {spec.name} files under several folders {sorted(roots)}; expected one")
    return Located(members=members, root=roots.pop())


def check(data: bytes, expected: str, shown: str, label: str) -> None:
    """Raise DatasetError when ``data`` is not the file the sha256 list names."""
    if data.startswith(LFS_POINTER):
        raise DatasetError(
            f"{label}: {shown} is a Git LFS pointer, not audio; fetch the archive again, or clone the repository "
            "with git-lfs installed and pass the clone with --source DIR"
        )
    actual = sha256_hex(data)
    if actual != expected:
        raise DatasetError(
            f"{label}: {shown} has sha256 {actual}, expected {expected} (the pinned commit's file); the archive is "
            "corrupt or from another commit. Download it again"
        )


def to_flac(data: bytes, out: Path, shown: str, rate_hz: int = TARGET_RATE_HZ) -> None:
    """Decode a WAV held in memory, mix to mono, resample (soxr HQ) and write 16-bit FLAC at ``rate_hz``."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise DatasetError(f"{shown} is not readable audio ({exc}); the sha256 list does not fit the archive") from exc
    if samples.shape[0] == 0:
        raise DatasetError(f"{shown} holds no samples; the sha256 list does not fit the archive")
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), resample(to_mono(samples), int(rate), rate_hz), rate_hz, subtype="PCM_16", format="FLAC")


def write_table(rows: list[list[str]], path: Path) -> None:
    """Write ``data.tsv`` as the shared corpus folders have it (tab-separated, UTF-8, CRLF line ends)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter="\t").writerows(rows)


def summarise(rows: list[list[str]]) -> str:
    """``N clips from S speakers, E emotions (…)`` from a data.tsv table."""
    header, body = rows[0], rows[1:]
    speakers = {r[header.index("speaker_id")] for r in body}
    emotions = sorted({r[header.index("emotion")] for r in body})
    return f"{len(body)} clips from {len(speakers)} speakers, {len(emotions)} emotions ({', '.join(emotions)})"


@contextmanager
def staging_in(dest: Path) -> Iterator[Path]:
    """A hidden staging folder inside ``dest``, removed on leaving whatever happened."""
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install(staging: Path, dest: Path, outputs: Sequence[str]) -> None:
    """Move ``outputs`` and ``data.tsv`` from ``staging`` into ``dest``, replacing what an earlier fetch left.

    ``data.tsv`` goes first out and last in, so a folder without it reads as not fetched.
    """
    (dest / "data.tsv").unlink(missing_ok=True)
    for name in outputs:
        target = dest / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        if (staging / name).exists():
            (staging / name).replace(target)
    (staging / "data.tsv").replace(dest / "data.tsv")


def _convert(
    source: Source, located: Located, spec: CorpusSpec, *, listed: Mapping[str, str], staging: Path, steps: Steps | None
) -> dict[str, str]:
    written: dict[str, str] = {}
    keys = sorted(listed)
    for done, key in enumerate(keys, start=1):
        out = spec.out_prefix + str(PurePosixPath(key).with_suffix(".flac"))
        try:
            to_flac(source.read(located.members[key]), staging / out, f"{source.label}: {located.members[key]}")
        except OSError as exc:
            raise DatasetError(
                f"writing {out} failed ({exc}); the fetch needs {spec.space}: free some space and run it again"
            ) from exc
        written[key] = out
        if steps:
            steps("convert", done, len(keys))
    return written


def fetch_corpus(
    dest: Path,
    spec: CorpusSpec,
    *,
    listed: Mapping[str, str],
    extras: Mapping[str, str],
    url: str | None = None,
    zip_file: Path | None = None,
    source_dir: Path | None = None,
    keep_zip: bool = False,
    steps: Steps | None = None,
) -> str:
    """Fetch ``spec``'s corpus into ``dest`` (download, or ``zip_file`` / ``source_dir``); returns a summary.

    ``listed``: {path relative to ``spec.member_prefix``: sha256} of every audio file;
    ``extras``: {path from the repository root: sha256} of the other files ``spec.table`` reads.
    """
    if zip_file is not None and source_dir is not None:
        raise DatasetError("pass either --zip FILE or --source DIR, not both")
    if zip_file is not None and not zip_file.is_file():
        raise DatasetError(f"zip file {zip_file} does not exist; pass the archive of the {spec.name} repository")
    if source_dir is not None and not source_dir.is_dir():
        raise DatasetError(f"source folder {source_dir} does not exist; pass a clone of the {spec.name} repository")
    if dest.exists() and not dest.is_dir():
        raise DatasetError(f"{dest} is a file; pass a folder (new or from an earlier {spec.command}) as DEST")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / spec.archive_name
    ours = zip_file is None and source_dir is None  # the archive in DEST is this command's to delete
    refused = False
    try:
        if ours and not archive.is_file():
            download(
                url or spec.url,
                archive,
                (lambda done, total: steps("download", done, total)) if steps else None,
                hint=f"check the network, or download {spec.url} by hand and run "
                f"`emostream {spec.command} DEST --zip FILE`",
            )
        try:
            source: ZipSource | FolderSource = (
                FolderSource(source_dir) if source_dir else ZipSource(zip_file or archive)
            )
            try:
                rows = _fetch_from(source, dest, spec, listed=listed, extras=extras, steps=steps)
            finally:
                source.close()
        except DatasetError:
            refused = True
            raise
    except BaseException:
        if ours and (refused or not keep_zip):
            archive.unlink(missing_ok=True)
        if created and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        raise
    if ours and not keep_zip:
        archive.unlink(missing_ok=True)
    return summarise(rows)


def _fetch_from(
    source: Source,
    dest: Path,
    spec: CorpusSpec,
    *,
    listed: Mapping[str, str],
    extras: Mapping[str, str],
    steps: Steps | None,
) -> list[list[str]]:
    names = source.names()
    located = locate(names, listed, spec, source.label)
    keys = sorted(listed)
    for done, key in enumerate(keys, start=1):
        check(source.read(located.members[key]), listed[key], located.members[key], source.label)
        if steps:
            steps("verify", done, len(keys))
    extra_bytes: dict[str, bytes] = {}
    for name, expected in extras.items():
        member = located.root + name
        if member not in names:
            raise DatasetError(f"{source.label} holds no {member}; expected the {spec.name} repository with {name}")
        extra_bytes[name] = source.read(member)
        check(extra_bytes[name], expected, member, source.label)
    with staging_in(dest) as staging:
        written = _convert(source, located, spec, listed=listed, staging=staging, steps=steps)
        rows = spec.table(written, extra_bytes)
        write_table(rows, staging / "data.tsv")
        install(staging, dest, spec.outputs)
    return rows


def run_command(spec: CorpusSpec, args: Any, fetch: Callable[..., str], **options: Any) -> int:
    """The CLI side of a corpus fetch: the licence notice, a progress display per stage, the summary.

    ``options``: further keyword arguments of ``fetch`` (a corpus's own options).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    print(spec.notice, file=sys.stderr)
    with Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn()) as display:
        tasks: dict[str, Any] = {}

        def steps(stage: str, done: int, total: int | None) -> None:
            if stage == "download":  # counted in MiB
                stage, done, total = "download (MiB)", done >> 20, (total >> 20) if total else None
            if stage not in tasks:
                tasks[stage] = display.add_task(stage, total=total)
            display.update(tasks[stage], completed=done, total=total)

        summary = fetch(
            Path(args.dest),
            url=args.url,
            checksums=read_sha_list(Path(args.sha256_list)) if args.sha256_list else None,
            zip_file=Path(args.zip) if args.zip else None,
            source_dir=Path(args.source) if args.source else None,
            keep_zip=args.keep_zip,
            steps=steps,
            **options,
        )
    print(f"{args.dest}: {summary}")
    return 0


def add_common_options(parser: Any, spec: CorpusSpec) -> None:
    """The options every corpus fetch takes."""
    parser.add_argument("dest", help="destination folder")
    parser.add_argument("--zip", help=f"use an already downloaded archive of the repository ({spec.url})")
    parser.add_argument("--source", help="use a clone of the repository (checked out at the pinned commit)")
    parser.add_argument("--url", help=f"download URL (default: {spec.url})")
    parser.add_argument(
        "--sha256-list", help="sha256 list of the audio files ('sha256sum' format; default: the packaged one)"
    )
    parser.add_argument("--keep-zip", action="store_true", help="keep the downloaded archive in DEST")
