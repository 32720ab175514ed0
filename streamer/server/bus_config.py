"""``[bus]``: where the replicas of a fleet publish their records and the supervisor reads them.

Stdlib only, so that the config loader can build it without the ``[server]`` extra. The bus
is a Redis stream (``docs/scaling.md`` says why Redis Streams and not NATS JetStream).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from emostream.errors import InvalidSettingError

BUS_SCHEMES = ("redis", "rediss", "unix")
REPLICA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,127}\Z")


@dataclass(frozen=True, kw_only=True)
class BusConfig:
    """[bus]: the event bus of a fleet of ``emostream serve`` replicas (Redis Streams).

    ``url``: ``redis://HOST:PORT/DB`` (``rediss://`` for TLS, ``unix:///path/redis.sock``);
    not set = no bus (a single server). ``stream``: the stream's key; every replica of a
    fleet and its supervisor use the same one. ``replica``: this replica's name on the
    supervisor (1-64 letters, digits, ``.``, ``_``, ``-``); not set = ``HOST-PORT`` of the
    machine's name and the listening port. ``max_age_s``: records older than this are
    trimmed from the stream (approximately, as Redis trims whole nodes); it also bounds
    how far back a supervisor that starts reads (the timelines it can show at once).
    ``max_pending``: records waiting for the broker on a replica; beyond it (and while the
    broker is away) records are dropped and counted, never waited for. ``heartbeat_s``: a
    replica's heartbeat period; ``heartbeat_timeout_s``: a replica silent this long is taken
    as lost by the supervisor, which ends its calls with the reason. ``reconnect_max_s``:
    the longest pause between two attempts to reach the broker (the pause doubles from
    0.05 s up to it).
    """

    url: str | None = None
    stream: str = "emostream:events"
    replica: str | None = None
    max_age_s: float = 300.0
    max_pending: int = 10000
    heartbeat_s: float = 1.0
    heartbeat_timeout_s: float = 3.0
    reconnect_max_s: float = 1.0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (self.url is None or bus_url_problem(self.url) is None, "url", bus_url_problem(self.url or "") or ""),
            (
                bool(STREAM_NAME.match(self.stream)),
                "stream",
                f"is {self.stream[:60]!r}; expected 1-128 letters, digits, ':', '.', '_', '-'",
            ),
            (
                self.replica is None or bool(REPLICA_NAME.match(self.replica)),
                "replica",
                f"is {str(self.replica)[:60]!r}; expected 1-64 letters, digits, '.', '_', '-' from a letter or digit",
            ),
            (10 <= self.max_age_s <= 86400, "max_age_s", f"is {self.max_age_s}; expected 10 to 86400 s"),
            (100 <= self.max_pending <= 1_000_000, "max_pending", f"is {self.max_pending}; expected 100 to 1000000"),
            (0.1 <= self.heartbeat_s <= 60, "heartbeat_s", f"is {self.heartbeat_s}; expected 0.1 to 60 s"),
            (
                2 * self.heartbeat_s <= self.heartbeat_timeout_s <= 600,
                "heartbeat_timeout_s",
                f"is {self.heartbeat_timeout_s}; expected at least twice heartbeat_s ({2 * self.heartbeat_s:g} s) "
                "and at most 600 s",
            ),
            (
                0.05 <= self.reconnect_max_s <= 60,
                "reconnect_max_s",
                f"is {self.reconnect_max_s}; expected 0.05 to 60 s",
            ),
        ]
        for ok, key, message in checks:
            if not ok:
                raise InvalidSettingError(key, message)


def safe_url(url: str) -> str:
    """``url`` without a password (``redis://:secret@host`` -> ``redis://***@host``), for logs and messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def bus_url_problem(url: str) -> str | None:
    """None if ``url`` is a bus address this build takes, else what is wrong with it (for the error message)."""
    shown = safe_url(url)[:80]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"is {shown!r}, not a URL; expected redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0"
    if parts.scheme == "nats":
        return (
            f"is {shown!r}: NATS is not supported (the bus is Redis Streams, docs/scaling.md says why); "
            "expected redis://HOST:PORT/DB"
        )
    if parts.scheme not in BUS_SCHEMES:
        return f"is {shown!r}; expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH"
    if parts.scheme == "unix":
        return None if parts.path else f"is {shown!r}; expected unix:///path/to/redis.sock"
    if not parts.hostname:
        return f"is {shown!r} without a host; expected redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0"
    if port == 0:
        return f"is {shown!r} with port 0; expected the broker's port (Redis: 6379)"
    db = parts.path.strip("/")
    if db and not (db.isdigit() and int(db) < 16384):
        return f"is {shown!r}: database {db[:20]!r}; expected a number such as /0"
    return None
