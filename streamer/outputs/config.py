"""[output]: where the event stream goes besides alerts."""

from __future__ import annotations

from dataclasses import dataclass

from emostream.errors import InvalidSettingError


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """``jsonl``: JSON-lines event file (None = none, "-" = stdout); ``dashboard``: live view on;
    ``timeline_seconds``: history the dashboard timeline shows, s."""

    jsonl: str | None = None
    dashboard: bool = True
    timeline_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.jsonl is not None and not self.jsonl:
            raise InvalidSettingError("jsonl", "is empty; give a file path or '-' for stdout, or leave it out")
        if not 5 <= self.timeline_seconds <= 3600:
            raise InvalidSettingError("timeline_seconds", f"is {self.timeline_seconds}; expected 5 to 3600 s")
