"""``[server]``: the settings of ``emostream serve`` (address, token, limits, summaries).

Stdlib only, so that the config loader can build it without the ``[server]`` extra.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from emostream.errors import InvalidSettingError

TOKEN_ENV = "EMOSTREAM_TOKEN"
READ_TOKEN_ENV = "EMOSTREAM_READ_TOKEN"
INGEST_TOKEN_ENV = "EMOSTREAM_INGEST_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512
WS_PATHS = ("/twilio", "/ingest", "/events")
INTEGRATION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}\Z")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """[server]: where ``emostream serve`` listens and what it accepts.

    ``host``/``port``: the listening address (127.0.0.1 unless told otherwise: put a
    TLS-terminating reverse proxy in front for anything else). ``token``: the bearer token
    (``$EMOSTREAM_TOKEN`` wins; neither: a random one is printed at start-up).
    ``max_calls``: calls (``/twilio`` + ``/ingest``) open at once; more are refused (close
    1013). ``max_message_bytes``: the largest WebSocket message taken (close 1009).
    ``idle_timeout_s``: a call without any message for this long is ended (close 4408).
    ``events_queue_size``: records waiting per ``/events`` subscriber; a slower one loses
    the newest and is told how many (``dropped``). ``max_backlog_s``: audio seconds a call
    may have waiting for the analysis; beyond it new audio is dropped and counted.
    ``workers``: analysis processes shared by all calls (each loads the model once; a call
    stays on one); 0 = two threads of the server process instead (for tests and a few calls).
    ``summary_dir``: folder for the call summaries (``<call>.json``, the format
    of ``emostream calls``); not set: summaries only go to ``/events``. ``bin_s``: seconds
    per timeline bin in the summaries. ``shutdown_timeout_s``: how long SIGTERM waits for
    open calls to be summarised.

    Security (``docs/server.md``, "Security"): ``read_token`` reads (``/events``,
    ``/api/calls``, ``/metrics``) and cannot send audio; ``ingest_tokens`` (name -> token,
    one per integration: Twilio, FreeSWITCH, the /try page...) send audio (``/twilio``,
    ``/ingest``) and cannot read other calls; ``token`` does both. ``query_token_paths``:
    the endpoints that take ``?token=`` (clients that can set neither a header nor a
    subprotocol, e.g. FreeSWITCH ``mod_audio_fork``). ``header_timeout_s``: an HTTP request's
    headers (a WebSocket upgrade's too) must be complete this long after the connection
    opened (or after the previous response). ``auth_timeout_s``: a WebSocket must bring its
    token this long after it opened (``/twilio``: with ``start``), else close 1008.
    ``max_unauthenticated``: connections open at once that have not shown a token yet;
    beyond it the oldest of them is closed. ``allowed_origins``: ``Origin`` values taken on
    WebSockets and requests besides the server's own origin (the ``Host`` it was reached
    at). ``allowed_hosts``: ``Host`` names taken; empty = loopback names only when
    listening on a loopback address (against DNS rebinding), any otherwise.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_calls: int = 200
    max_message_bytes: int = 262144
    idle_timeout_s: float = 30.0
    events_queue_size: int = 2000
    max_backlog_s: float = 2.0
    workers: int = 2
    summary_dir: str | None = None
    bin_s: float = 10.0
    shutdown_timeout_s: float = 5.0
    read_token: str | None = None
    ingest_tokens: dict[str, str] = field(default_factory=dict)
    query_token_paths: tuple[str, ...] = ("/ingest",)
    header_timeout_s: float = 5.0
    auth_timeout_s: float = 5.0
    max_unauthenticated: int = 256
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        tokens = [("token", self.token), ("read_token", self.read_token)]
        tokens += [(f"ingest_tokens.{name}", value) for name, value in self.ingest_tokens.items()]
        checks: list[tuple[bool, str, str]] = [
            *(_token_check(key, value) for key, value in tokens),
            *(
                (
                    bool(INTEGRATION_NAME.match(str(name))),
                    "ingest_tokens",
                    f"has the name {str(name)[:40]!r}; expected 1-32 letters, digits, '_', '-' from a letter",
                )
                for name in self.ingest_tokens
            ),
            (
                len({v for _, v in tokens if v is not None}) == sum(v is not None for _, v in tokens),
                "read_token",
                "is the same as another token; give each scope its own token",
            ),
            (
                all(p in WS_PATHS for p in self.query_token_paths),
                "query_token_paths",
                f"is {list(self.query_token_paths)}; expected some of {', '.join(WS_PATHS)}",
            ),
            (
                0 < self.header_timeout_s <= 600,
                "header_timeout_s",
                f"is {self.header_timeout_s}; expected more than 0 and at most 600 s",
            ),
            (
                0 < self.auth_timeout_s <= 600,
                "auth_timeout_s",
                f"is {self.auth_timeout_s}; expected more than 0 and at most 600 s",
            ),
            (
                1 <= self.max_unauthenticated <= 100000,
                "max_unauthenticated",
                f"is {self.max_unauthenticated}; expected 1 to 100000",
            ),
            (
                all(_is_origin(o) for o in self.allowed_origins),
                "allowed_origins",
                f"is {list(self.allowed_origins)}; expected origins such as https://emostream.example.com "
                "(scheme and host, no path)",
            ),
            (
                all(h == "*" or _is_host(h) for h in self.allowed_hosts),
                "allowed_hosts",
                f'is {list(self.allowed_hosts)}; expected host names such as emostream.example.com, or "*" for any',
            ),
            (_is_host(self.host), "host", f"is {self.host!r}; expected an IP address or host name such as 127.0.0.1"),
            (0 <= self.port <= 65535, "port", f"is {self.port}; expected 0 to 65535 (0 = any free port)"),
            (1 <= self.max_calls <= 10000, "max_calls", f"is {self.max_calls}; expected 1 to 10000"),
            (
                1024 <= self.max_message_bytes <= 16 * 1024 * 1024,
                "max_message_bytes",
                f"is {self.max_message_bytes}; expected 1024 to 16777216 bytes",
            ),
            (self.idle_timeout_s > 0, "idle_timeout_s", f"is {self.idle_timeout_s}; expected more than 0 s"),
            (
                1 <= self.events_queue_size <= 1_000_000,
                "events_queue_size",
                f"is {self.events_queue_size}; expected 1 to 1000000",
            ),
            (self.max_backlog_s > 0, "max_backlog_s", f"is {self.max_backlog_s}; expected more than 0 s"),
            (0 <= self.workers <= 64, "workers", f"is {self.workers}; expected 0 (threads) to 64 processes"),
            (self.summary_dir is None or bool(self.summary_dir), "summary_dir", "is empty; give a folder"),
            (self.bin_s > 0, "bin_s", f"is {self.bin_s}; expected more than 0 s"),
            (
                0 < self.shutdown_timeout_s <= 600,
                "shutdown_timeout_s",
                f"is {self.shutdown_timeout_s}; expected more than 0 and at most 600 s",
            ),
        ]
        for ok, key, message in checks:
            if not ok:
                raise InvalidSettingError(key, message)


def _token_check(key: str, value: str | None) -> tuple[bool, str, str]:
    ok = value is None or (
        MIN_TOKEN_CHARS <= len(value) <= MAX_TOKEN_CHARS and value.isprintable() and value.strip() == value
    )
    return (
        ok,
        key,
        f"has {len(value or '')} characters; expected {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} printable characters "
        "without spaces at the ends (e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe())'`)",
    )


def _is_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.path == "" and not parts.query


def _is_host(host: str) -> bool:
    if not host or any(c.isspace() for c in host):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return all(part and (part.replace("-", "").isalnum()) for part in host.split("."))
    return True
