"""``[server]``: the settings of ``emostream serve`` (address, token, limits, summaries).

Stdlib only, so that the config loader can build it without the ``[server]`` extra.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emostream.errors import InvalidSettingError

TOKEN_ENV = "EMOSTREAM_TOKEN"
MIN_TOKEN_CHARS = 16


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

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (_is_host(self.host), "host", f"is {self.host!r}; expected an IP address or host name such as 127.0.0.1"),
            (0 <= self.port <= 65535, "port", f"is {self.port}; expected 0 to 65535 (0 = any free port)"),
            (
                self.token is None or len(self.token) >= MIN_TOKEN_CHARS,
                "token",
                f"has {len(self.token or '')} characters; expected at least {MIN_TOKEN_CHARS} "
                "(e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe())'`)",
            ),
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


def _is_host(host: str) -> bool:
    if not host or any(c.isspace() for c in host):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return all(part and (part.replace("-", "").isalnum()) for part in host.split("."))
    return True
