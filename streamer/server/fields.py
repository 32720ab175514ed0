"""Client-given names a call carries (call ids, Twilio sids, roles): checked for length and characters.

These strings end up in file names, log lines, metric-free records and every summary, so
each is held to a documented pattern (``docs/server.md``, "Security"):

- ids (``call_id``, Twilio ``streamSid``, ``callSid``, ``accountSid``): 1 to 128 letters,
  digits, ``.``, ``_``, ``-``, starting with a letter or digit (:data:`ID_PATTERN`);
- roles (``/ingest`` ``roles``): 1 to 32 letters, digits, ``_``, ``-``, ``.``, starting with
  a letter (:data:`ROLE_PATTERN`).

A field that does not match closes the connection 1007 with the field named.
"""

from __future__ import annotations

import re

from emostream.server.closing import INVALID_DATA, RejectError

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
ROLE_PATTERN = r"[A-Za-z][A-Za-z0-9._-]{0,31}"
MAX_ID_CHARS = 128
MAX_ROLE_CHARS = 32
_ID = re.compile(ID_PATTERN + r"\Z")
_ROLE = re.compile(ROLE_PATTERN + r"\Z")


def _shown(value: object) -> str:
    """At most 40 characters of ``value``, escaped (never a raw newline in a log line or close reason)."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def check_id(value: object, field: str) -> str:
    """``value`` if it is an id (:data:`ID_PATTERN`), else :class:`RejectError` 1007 naming ``field``."""
    if not isinstance(value, str) or not _ID.match(value):
        raise RejectError(
            INVALID_DATA,
            "malformed_message",
            f"{field} {_shown(value)}: expected 1-{MAX_ID_CHARS} letters, digits, '.', '_' or '-'",
        )
    return value


def check_optional_id(value: object, field: str) -> str:
    """An id, or ``""`` when absent (``None`` or empty): Twilio's ``callSid`` and ``accountSid``."""
    if value is None or value == "":
        return ""
    return check_id(value, field)


def check_role(value: object, field: str = "role") -> str:
    """``value`` if it is a role name (:data:`ROLE_PATTERN`), else :class:`RejectError` 1007."""
    if not isinstance(value, str) or not _ROLE.match(value):
        raise RejectError(
            INVALID_DATA,
            "malformed_message",
            f"{field} {_shown(value)}: expected 1-{MAX_ROLE_CHARS} letters, digits, '.', '_' or '-' "
            "starting with a letter (e.g. customer, agent)",
        )
    return value
