"""JSON-lines output, an observer of the event stream: one ``start`` record, a ``hop`` record per
hop, an ``alert`` record per alert event, one ``end`` record.

Each record is one line, flushed as soon as it is written, so a consumer reading the
file or pipe sees events live and an interrupted run loses nothing already processed.

A file target is written with one ``write`` system call per line; when one fails (disk
full, quota, I/O error) the file is cut back to the end of the last complete record, so
it never holds half a line, and :class:`JsonlWriteError` (exit 3) ends the session: the
engine still gives every observer the summary and the live monitor still prints it.
When the reader of standard output goes away (``--jsonl - | head -1``), the
``BrokenPipeError`` ends the session too; the command exits 0 without further output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO
from urllib.parse import urlsplit

from emostream import __version__
from emostream.engine.events import Event, SessionSummary
from emostream.errors import ConfigError, EmoStreamError


class JsonlWriteError(EmoStreamError):
    """The ``--jsonl`` target could not be written (disk full, I/O error); exit 3."""

    exit_code = 3


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
HIDDEN = "***"


def _hide_url(match: re.Match[str]) -> str:
    """A URL cut down to its scheme and host: credentials, path and query often hold secrets (webhook keys)."""
    url = match.group(0)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # not a parsable URL: hide all of it after the scheme
        return url.split("://", 1)[0] + "://" + HIDDEN
    user = f"{HIDDEN}@" if "@" in parts.netloc else ""
    rest = f"/{HIDDEN}" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{user}{host}{port}{rest}"


def redact(value: Any) -> Any:
    """``value`` (plain JSON data) with every URL inside its strings cut down to scheme and host.

    ``https://user:pass@hooks.example.com/x?key=k`` becomes ``https://***@hooks.example.com/***``:
    records and logs name where alerts go without carrying the credentials.
    """
    if isinstance(value, str):
        return _URL.sub(_hide_url, value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def start_record(
    *, model_name: str, labels: tuple[str, ...], source: str, rate_hz: int, channels: int, config: dict[str, Any]
) -> dict[str, Any]:
    """The ``start`` record: what is analysed, with which model and settings, since when (UTC).

    URLs in ``config`` (the alert webhook, a URL in the alert command) keep only their
    scheme and host (:func:`redact`): a start record never carries credentials.
    """
    return {
        "type": "start",
        "version": __version__,
        "model": model_name,
        "labels": list(labels),
        "source": source,
        "rate_hz": rate_hz,
        "channels": channels,
        "config": redact(config),
        "started_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


class JsonlSink:
    """Writes records to a file path or ``"-"`` (standard output), one flushed line each."""

    def __init__(self, target: str | Path, start: dict[str, Any] | None = None, session_id: str | None = None) -> None:
        self.target = str(target)
        self._file: BinaryIO | None = None
        self._out: TextIO | None = None
        self._good = 0  # bytes of complete records in the file
        self.failed: str | None = None
        if self.target != "-":
            try:
                self._file = Path(self.target).open("wb", buffering=0)  # noqa: SIM115
            except OSError as exc:
                raise ConfigError(f"--jsonl {self.target}: cannot open for writing ({exc})") from exc
        else:
            self._out = sys.stdout
        self.records = 0
        self._encode = json.JSONEncoder(separators=(",", ":")).encode
        if start is not None:
            if session_id is not None:
                start = {**start, "session_id": session_id}
            self.write(start)

    def write(self, record: dict[str, Any]) -> None:
        """Write one record as a line and flush it; :class:`JsonlWriteError` when the target fails."""
        if self.failed is not None:
            return
        line = self._encode(record) + "\n"
        try:
            if self._file is not None:
                self._write_file(line.encode("utf-8"))
            elif self._out is not None:
                self._out.write(line)
                self._out.flush()
        except BrokenPipeError:
            # the reader went away (`| head -1`): nothing more can be delivered; the run ends (exit 0, see cli.main)
            self.failed = f"the reader of --jsonl {self.target} went away (closed pipe)"
            raise
        except OSError as exc:
            self._fail(exc)
        self.records += 1

    def _write_file(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            if not n:
                raise OSError(errno.ENOSPC, "no bytes written")
            view = view[n:]
        self._good += len(data)

    def _fail(self, exc: OSError) -> None:
        """Cut a file back to its last complete record and raise a clear error."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file.fileno(), self._good)
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else str(exc.strerror or exc)
        self.failed = (
            f"--jsonl {self.target}: writing failed after {self.records} complete records ({reason}); "
            "the records written so far are complete. Free space or choose another path"
        )
        raise JsonlWriteError(self.failed) from exc

    def on_event(self, event: Event) -> None:
        """Write a hop or alert record."""
        self.write(event.to_dict())

    def on_end(self, summary: SessionSummary) -> None:
        """Write the ``end`` record (unless writing already failed) and close a file target."""
        try:
            self.write(summary.to_dict())
        except (JsonlWriteError, BrokenPipeError):
            pass  # the session already ends with this error (or ends now); the summary is shown anyway
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
