"""Why a connection is refused or ended: WebSocket close codes, reasons and the metric's reason label.

A :class:`RejectError` carries the close code, a reason for the client (what was received, what
was expected; at most 123 bytes, the limit of a close frame) and a short ``label`` for the
``emostream_rejected_connections_total{reason=...}`` counter and the log line.
"""

from __future__ import annotations

NORMAL = 1000
GOING_AWAY = 1001  # the server shuts down
PROTOCOL_ERROR = 1002  # a message out of order (audio before start, binary on /twilio)
UNSUPPORTED_DATA = 1003  # unknown encoding
INVALID_DATA = 1007  # malformed JSON, a bad field, samples that do not decode
POLICY_VIOLATION = 1008  # bad or missing token
MESSAGE_TOO_BIG = 1009  # over [server] max_message_bytes
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013  # [server] max_calls reached
IDLE_TIMEOUT = 4408  # no message for [server] idle_timeout_s
CALL_ID_IN_USE = 4409  # another open call has this call id

MAX_REASON_BYTES = 123


class RejectError(Exception):
    """Close the connection with ``code`` and ``reason``; counted under ``label``."""

    def __init__(self, code: int, label: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.label = label
        self.reason = fit_reason(reason)


def fit_reason(reason: str) -> str:
    """``reason`` cut to what a close frame can carry (123 bytes of UTF-8)."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."
