"""JSON-lines output, an observer of the event stream: one ``start`` record, a ``hop`` record per
hop, an ``alert`` record per alert event, one ``end`` record.

Each record is one line, flushed as soon as it is written, so a consumer reading the
file or pipe sees events live and an interrupted run loses nothing already processed.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from emostream import __version__
from emostream.engine.events import Event, SessionSummary
from emostream.errors import ConfigError


def start_record(
    *, model_name: str, labels: tuple[str, ...], source: str, rate_hz: int, channels: int, config: dict[str, Any]
) -> dict[str, Any]:
    """The ``start`` record: what is analysed, with which model and settings, since when (UTC)."""
    return {
        "type": "start",
        "version": __version__,
        "model": model_name,
        "labels": list(labels),
        "source": source,
        "rate_hz": rate_hz,
        "channels": channels,
        "config": config,
        "started_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


class JsonlSink:
    """Writes records to a file path or ``"-"`` (standard output), one flushed line each."""

    def __init__(self, target: str | Path, start: dict[str, Any] | None = None) -> None:
        self.target = str(target)
        self._owned = self.target != "-"
        if self._owned:
            try:
                self._out: TextIO = Path(self.target).open("w", encoding="utf-8", buffering=1)  # noqa: SIM115
            except OSError as exc:
                raise ConfigError(f"--jsonl {self.target}: cannot open for writing ({exc})") from exc
        else:
            self._out = sys.stdout
        self.records = 0
        if start is not None:
            self.write(start)

    def write(self, record: dict[str, Any]) -> None:
        """Write one record as a line and flush it."""
        try:
            self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._out.flush()
        except BrokenPipeError:
            self._owned = False  # the reader went away; stop writing quietly
            self._out = open_devnull()
        self.records += 1

    def on_event(self, event: Event) -> None:
        """Write a hop or alert record."""
        self.write(event.to_dict())

    def on_end(self, summary: SessionSummary) -> None:
        """Write the ``end`` record and close a file target."""
        self.write(summary.to_dict())
        self.close()

    def close(self) -> None:
        if self._owned and not self._out.closed:
            self._out.close()


def open_devnull() -> TextIO:
    """A text sink that discards everything (after a closed pipe)."""
    return open(os.devnull, "w", encoding="utf-8")
