"""Twilio Media Streams: the WebSocket messages Twilio sends, and the two tracks put side by side.

Twilio sends JSON text messages (``event`` names the kind): ``connected`` (protocol
and version), ``start`` once (``start.streamSid``, ``start.callSid``, ``start.accountSid``,
``start.tracks``: ``["inbound"]``, ``["outbound"]`` or both, ``start.mediaFormat``:
``{"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}``,
``start.customParameters``: the TwiML ``<Parameter>`` values), then ``media`` every
20 ms per track (``media.track``, ``media.chunk``, ``media.timestamp`` in ms since the
stream started, ``media.payload``: base64 μ-law), ``mark`` and ``dtmf`` (ignored here),
and ``stop``. Twilio cannot add a header or a query string to the stream URL, so the
token comes as ``<Parameter name="token" value="..."/>``.

:class:`TrackAligner` lines the tracks up by their timestamps (equal lengths of μ-law per track):
a gap in a track's timestamps is filled with silence, and a track that lags the other
by more than ``max_skew_s`` (it stopped sending) is padded with silence, so the call
keeps being analysed.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from emostream.server.closing import INVALID_DATA, UNSUPPORTED_DATA, RejectError
from emostream.server.fields import check_id, check_optional_id

RATE_HZ = 8000
ENCODING = "audio/x-mulaw"
TRACK_ORDER = ("inbound", "outbound")
TRACK_ROLES = {"inbound": "customer", "outbound": "agent"}  # without [[channels]]
MULAW_SILENCE = 0xFF  # decodes to 0
GAP_TOLERANCE_MS = 40  # timestamp jitter below this is not a gap
MAX_GAP_S = 5.0  # a larger jump is filled with at most this much silence
MAX_TIMESTAMP_MS = 2**31 - 1  # about 24 days: a larger (or non-finite) media.timestamp is refused


@dataclass(frozen=True)
class TwilioStart:
    """The ``start`` message: the stream's ids, its tracks in channel order, the custom parameters."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]

    @property
    def default_roles(self) -> tuple[str, ...]:
        """Roles of the channels without a ``[[channels]]`` entry: inbound = customer, outbound = agent."""
        return tuple(TRACK_ROLES[t] for t in self.tracks)


def parse_message(text: str) -> tuple[str, dict[str, Any]]:
    """A Twilio message's ``event`` and body; :class:`RejectError` (1007) if it is not a JSON object with one."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack ("[[[[...")
        raise RejectError(
            INVALID_DATA, "malformed_json", f"not JSON: {text[:40]!r}; expected a Twilio message"
        ) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        raise RejectError(
            INVALID_DATA, "malformed_message", 'expected a JSON object with an "event" (Twilio Media Streams)'
        )
    return msg["event"], msg


def parse_start(msg: dict[str, Any]) -> TwilioStart:
    """The ``start`` message; 1007 for a missing field, 1003 for a media format other than μ-law 8 kHz mono."""
    start = msg.get("start")
    if not isinstance(start, dict):
        raise RejectError(INVALID_DATA, "malformed_message", 'start message without a "start" object')
    stream_sid = start.get("streamSid", msg.get("streamSid"))
    if stream_sid is None or stream_sid == "":
        raise RejectError(INVALID_DATA, "malformed_message", "start message without start.streamSid")
    stream_sid = check_id(stream_sid, "start.streamSid")
    fmt = start.get("mediaFormat", {})
    if not isinstance(fmt, dict):
        raise RejectError(INVALID_DATA, "malformed_message", "start.mediaFormat is not an object")
    encoding, rate, channels = fmt.get("encoding", ENCODING), fmt.get("sampleRate", RATE_HZ), fmt.get("channels", 1)
    if encoding != ENCODING or rate != RATE_HZ or channels != 1:
        raise RejectError(
            UNSUPPORTED_DATA,
            "unknown_encoding",
            f"mediaFormat {encoding!r} {rate} Hz x{channels}; expected {ENCODING!r} 8000 Hz mono",
        )
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not tracks or any(t not in TRACK_ORDER for t in tracks):
        raise RejectError(
            INVALID_DATA, "malformed_message", f"start.tracks is {tracks!r}; expected inbound and/or outbound"
        )
    custom = start.get("customParameters") or {}
    if not isinstance(custom, dict):
        raise RejectError(INVALID_DATA, "malformed_message", "start.customParameters is not an object")
    return TwilioStart(
        stream_sid=stream_sid,
        call_sid=check_optional_id(start.get("callSid"), "start.callSid"),
        account_sid=check_optional_id(start.get("accountSid"), "start.accountSid"),
        tracks=tuple(t for t in TRACK_ORDER if t in tracks),
        custom_parameters={str(k): str(v) for k, v in custom.items()},
    )


def parse_media(msg: dict[str, Any]) -> tuple[str, int, bytes]:
    """A ``media`` message's track, timestamp (ms) and μ-law bytes; 1007 when malformed."""
    try:
        media = msg["media"]
        track = media.get("track", "inbound")
        timestamp = int(media.get("timestamp", -1))
        payload = binascii.a2b_base64(media["payload"], strict_mode=True)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, binascii.Error):
        raise RejectError(
            INVALID_DATA, "malformed_message", "media message without media.payload (base64), track and timestamp"
        ) from None
    if timestamp > MAX_TIMESTAMP_MS:
        raise RejectError(
            INVALID_DATA,
            "malformed_message",
            f"media.timestamp {timestamp} ms; expected the milliseconds since the stream started (at most 2**31-1)",
        )
    return track, timestamp, payload


# A media message exactly as Twilio writes it (keys in its order, string values without escapes): the
# fields are read without a JSON parser. Any other text, even valid JSON, goes to parse_message. The
# payload between the two patterns is checked by the strict base64 decoder (no quote, no backslash).
_MEDIA_HEAD = re.compile(
    r'\{"event": ?"media", ?"sequenceNumber": ?"\d{1,12}", ?"media": ?\{"track": ?"(inbound|outbound)", ?'
    r'"chunk": ?"\d{1,12}", ?"timestamp": ?"(\d{1,12})", ?"payload": ?"'
)
_MEDIA_TAIL = re.compile(r'"\}, ?"streamSid": ?"[^"\\\x00-\x1f]*"\}')
_a2b_base64 = binascii.a2b_base64


def parse_media_text(text: str) -> tuple[str, int, bytes] | None:
    """A ``media`` message in Twilio's own form: (track, timestamp ms, μ-law bytes), as :func:`parse_message`
    and :func:`parse_media` give them, for a third of the work; None for any other text (parse it with those).

    Twilio sends 50 of these per second and track: the JSON parser was the largest item of the
    event loop's own work per message.
    """
    head = _MEDIA_HEAD.match(text)
    if head is None:
        return None
    start = head.end()
    end = text.find('"', start)
    if end < 0 or _MEDIA_TAIL.fullmatch(text, end) is None:
        return None
    track, stamp = head.groups()
    timestamp = int(stamp)
    if timestamp > MAX_TIMESTAMP_MS:
        return None  # parse_media refuses it, with its message
    try:
        payload = _a2b_base64(text[start:end], strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: a character beyond ASCII
        return None
    return track, timestamp, payload


class TrackAligner:
    """Collects each track's μ-law bytes and hands out equal lengths of every track, in track order."""

    def __init__(self, tracks: tuple[str, ...], *, max_skew_s: float = 0.5) -> None:
        self.tracks = tracks
        self._index = {t: i for i, t in enumerate(tracks)}
        self._buffers = [bytearray() for _ in tracks]
        self._last = len(tracks) - 1
        self._pair = len(tracks) == 2
        self._written = [0] * len(tracks)  # samples placed per track since the start (gaps included)
        self._max_skew = round(max_skew_s * RATE_HZ)
        self._tolerance = GAP_TOLERANCE_MS * RATE_HZ // 1000
        self.gap_samples = 0

    def add(self, track: str, timestamp_ms: int, payload: bytes) -> bool:
        """Place one media message; True when :meth:`take` may have something (1007 for an unknown track).

        Twilio sends the tracks' messages in turn: a take after the last track's message (or
        once a track runs ``max_skew_s`` ahead, the other having stopped) finds them aligned.
        """
        i = self._index.get(track)
        if i is None:
            raise RejectError(
                INVALID_DATA, "malformed_message", f"media for track {track!r}; start announced {self.tracks}"
            )
        buf = self._buffers[i]
        if timestamp_ms >= 0:
            gap = timestamp_ms * RATE_HZ // 1000 - self._written[i]
            if gap > self._tolerance:
                fill = min(gap, round(MAX_GAP_S * RATE_HZ))
                buf.extend(bytes([MULAW_SILENCE]) * fill)
                self._written[i] += fill
                self.gap_samples += fill
        buf += payload
        self._written[i] += len(payload)
        if i == self._last:
            return True
        ahead = len(buf) - self._max_skew  # a take is due when another track lags this one by more than max_skew
        for other in self._buffers:  # noqa: SIM110  (a loop, not any(): no generator per 20 ms message)
            if len(other) < ahead:
                return True
        return False

    def take(self, *, final: bool = False) -> tuple[bytes, ...] | None:
        """The μ-law bytes every track has (all of them when ``final``), one string per track, or None."""
        buffers = self._buffers
        if self._pair:  # two tracks, level (Twilio sends them in turn): each buffer whole, without the general rule
            first, second = buffers
            if len(first) == len(second):
                if not first:
                    return None
                pair = (bytes(first), bytes(second))
                first.clear()
                second.clear()
                return pair
        lengths = list(map(len, buffers))
        n, longest = min(lengths), max(lengths)
        floor = longest if final else longest - self._max_skew
        if n < floor:
            for i, length in enumerate(lengths):
                if length < floor:  # this track lags (stopped sending): silence in its place
                    buffers[i].extend(bytes([MULAW_SILENCE]) * (floor - length))
                    self._written[i] += floor - length
                    self.gap_samples += floor - length
            n = floor
        if n == 0:
            return None
        if n == longest:  # the tracks are level (Twilio sends them in turn): each buffer whole, one copy
            out = tuple(bytes(buf) for buf in buffers)
            for buf in buffers:
                buf.clear()
            return out
        out = tuple(bytes(buf[:n]) for buf in buffers)
        for buf in buffers:
            del buf[:n]
        return out


def stream_messages(
    tracks: dict[str, bytes],
    *,
    stream_sid: str,
    call_sid: str = "CA00000000000000000000000000000000",
    custom_parameters: dict[str, str] | None = None,
    frame_ms: int = 20,
) -> tuple[list[str], list[list[str]], list[str]]:
    """The messages Twilio would send for μ-law ``tracks`` (name -> 8 kHz bytes), to test a deployment.

    Returns (``connected`` + ``start``, one list of ``media`` messages per ``frame_ms`` with
    one message per track, [``stop``]). Used by the tests and the load benchmark.
    """
    names = tuple(t for t in TRACK_ORDER if t in tracks)
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "accountSid": "AC00000000000000000000000000000000",
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": list(names),
            "customParameters": custom_parameters or {},
            "mediaFormat": {"encoding": ENCODING, "sampleRate": RATE_HZ, "channels": 1},
        },
    }
    head = [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}), json.dumps(start)]
    step = RATE_HZ * frame_ms // 1000
    n_frames = -(-max(len(b) for b in tracks.values()) // step)  # the last one padded with silence
    frames: list[list[str]] = []
    seq = 2
    for k in range(n_frames):
        group = []
        for name in names:
            chunk = tracks[name][k * step : (k + 1) * step]
            if len(chunk) < step:
                chunk += bytes([MULAW_SILENCE]) * (step - len(chunk))
            media = {
                "track": name,
                "chunk": str(k + 1),
                "timestamp": str(k * frame_ms),
                "payload": binascii.b2a_base64(chunk, newline=False).decode("ascii"),
            }
            group.append(
                json.dumps({"event": "media", "sequenceNumber": str(seq), "media": media, "streamSid": stream_sid})
            )
            seq += 1
        frames.append(group)
    stop = {"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid, "stop": {"callSid": call_sid}}
    return head, frames, [json.dumps(stop)]
