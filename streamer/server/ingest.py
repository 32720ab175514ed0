"""``/ingest``: the first text message of a generic audio stream, checked.

A client (a FreeSWITCH or Asterisk bridge, the browser page) opens ``/ingest``, sends one
JSON text message describing the audio, then binary frames of interleaved little-endian
samples in that encoding (see ``docs/server.md``). :func:`parse_header` turns the first
message into an :class:`IngestHeader` or a :class:`~emostream.server.closing.RejectError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from emostream.audio.codecs import RAW_FORMATS
from emostream.server.closing import INVALID_DATA, UNSUPPORTED_DATA, RejectError
from emostream.server.fields import check_id, check_role

MIN_RATE_HZ = 4000
MAX_RATE_HZ = 192000
MAX_CHANNELS = 8
KNOWN_KEYS = ("call_id", "sample_rate_hz", "encoding", "channels", "roles", "events")


@dataclass(frozen=True)
class IngestHeader:
    """What the client will send: rate (Hz), encoding (a ``--format`` name), channels, roles, events wanted."""

    call_id: str | None
    sample_rate_hz: int
    encoding: str
    channels: int
    roles: tuple[str, ...]
    events: bool

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel (binary messages are whole multiples of it)."""
        return RAW_FORMATS[self.encoding].bytes_per_sample * self.channels


def _bad(message: str) -> RejectError:
    return RejectError(INVALID_DATA, "malformed_message", message)


def parse_header(text: str) -> IngestHeader:
    """The first ``/ingest`` message; 1007 for bad JSON or fields, 1003 for an unknown encoding."""
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise RejectError(INVALID_DATA, "malformed_json", f"first message is not JSON: {text[:40]!r}") from None
    if not isinstance(data, dict):
        raise _bad("first message must be a JSON object (call_id, sample_rate_hz, encoding, channels, roles, events)")
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise _bad(f"unknown keys {unknown}; known: {', '.join(KNOWN_KEYS)}")
    encoding = data.get("encoding")
    if not isinstance(encoding, str) or encoding.lower() not in RAW_FORMATS:
        raise RejectError(
            UNSUPPORTED_DATA, "unknown_encoding", f"encoding {encoding!r}; expected one of {', '.join(RAW_FORMATS)}"
        )
    rate, channels = data.get("sample_rate_hz"), data.get("channels", 1)
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise _bad(f"sample_rate_hz is {rate!r}; expected an integer from {MIN_RATE_HZ} to {MAX_RATE_HZ}")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_CHANNELS:
        raise _bad(f"channels is {channels!r}; expected an integer from 1 to {MAX_CHANNELS}")
    roles = data.get("roles", [])
    if not isinstance(roles, list) or len(roles) > channels:
        shown = repr(roles)[:60]
        raise _bad(f"roles is {shown}; expected a list of at most {channels} role names such as customer, agent")
    roles = [check_role(r, f"roles[{i}]") for i, r in enumerate(roles)]
    events = data.get("events", False)
    if not isinstance(events, bool):
        raise _bad(f"events is {events!r}; expected true or false")
    call_id = data.get("call_id")
    if call_id is not None:
        call_id = check_id(call_id, "call_id")
    return IngestHeader(
        call_id=call_id,
        sample_rate_hz=rate,
        encoding=encoding.lower(),
        channels=channels,
        roles=tuple(roles),
        events=events,
    )
