"""Deadlines before trust: connections that have not shown a token yet are few, and short-lived.

Anyone who can reach the port can open connections. Until a connection has shown a valid
token it is *unauthenticated* and held to two rules (``docs/server.md``, "Security"):

- **deadlines**: an HTTP request's headers (a WebSocket upgrade request's too) must be
  complete ``[server] header_timeout_s`` after the connection opened or after the previous
  response (:func:`guarded_http_protocol`: a plain socket that sends nothing, or an upgrade
  request dribbled one byte a second, is closed then); a ``/twilio`` stream must bring its
  token (the ``start`` message) ``[server] auth_timeout_s`` after it was accepted, whatever it
  sends meanwhile (:mod:`emostream.server.streams`);
- **a cap**: at most ``[server] max_unauthenticated`` such connections at once
  (:class:`ConnectionGate`); a new one beyond it closes the *oldest*, so a flood of idle
  sockets cannot keep a real client (which shows its token within milliseconds) out.

Every close is counted (``emostream_rejected_connections_total{reason=header_timeout |
auth_timeout | unauthenticated_evicted}``) and logged with the peer (rate-limited).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import resource
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

FD_WARN_SHARE = 0.9  # warn when this share of the file descriptor limit is in use
RejectFn = Callable[[str, str, str], None]  # (label, peer, message): log and count one refusal


class ConnectionGate:
    """The unauthenticated connections of one server: counted, capped (the oldest is closed beyond the cap)."""

    def __init__(self, max_open: int, on_reject: RejectFn | None = None) -> None:
        self.max_open = max_open
        self._open: collections.OrderedDict[int, tuple[str, Callable[[], None]]] = collections.OrderedDict()
        self.on_reject = on_reject
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open)

    def enter(self, key: object, peer: str, close: Callable[[], None]) -> None:
        """``key`` (a connection) is open and unauthenticated; ``close()`` ends it if it must make room."""
        while len(self._open) >= self.max_open:
            _, (old_peer, old_close) = self._open.popitem(last=False)
            self.evicted += 1
            self.reject(
                "unauthenticated_evicted",
                old_peer,
                f"closed: {self.max_open} connections without a token are open ([server] max_unauthenticated); "
                "this was the oldest",
            )
            old_close()
        self._open[id(key)] = (peer, close)

    def leave(self, key: object) -> None:
        """``key`` authenticated or closed."""
        self._open.pop(id(key), None)

    def reject(self, label: str, peer: str, message: str) -> None:
        if self.on_reject is not None:
            self.on_reject(label, peer, message)


def guarded_http_protocol(gate: ConnectionGate, header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline, its connections in ``gate`` until their headers are in.

    The deadline runs from the connection's opening (and again from each response, for the
    next request on a kept-alive connection); data arriving does not extend it. A WebSocket
    upgrade leaves the gate here: the endpoint checks the token (or enters the gate again
    until ``start``, on ``/twilio``).
    """

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._deadline is not None and self.conn.their_state is not h11.IDLE:
                self._disarm()  # a request's headers are in

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._disarm()
            super().handle_websocket_upgrade(event)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection: headers within the deadline again

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._late)
            gate.enter(self, _peer(self.client), self._close)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            gate.leave(self)

        def _late(self) -> None:
            self._deadline = None
            gate.leave(self)
            if self.transport.is_closing():
                return
            gate.reject(
                "header_timeout",
                _peer(self.client),
                f"closed: no complete HTTP request within {header_timeout_s:g} s ([server] header_timeout_s)",
            )
            self.transport.close()

        def _close(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self.transport.close()

    return GuardedH11Protocol


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown peer"


def open_files() -> tuple[int, int] | None:
    """(file descriptors open in this process, the soft limit), or None where /proc is missing."""
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return used, soft


def warn_if_out_of_files(logs: Any) -> bool:
    """Log (rate-limited) when the process is near or at its file descriptor limit; True if it is."""
    usage = open_files()
    if usage is None:
        return False
    used, soft = usage
    if soft == resource.RLIM_INFINITY or used < FD_WARN_SHARE * soft:
        return False
    logs.log(
        "out_of_files",
        logging.ERROR,
        "file descriptors: %d of %d in use: new connections (and summaries) fail. Raise the limit (systemd "
        "LimitNOFILE=, ulimit -n) or lower [server] max_calls and max_unauthenticated",
        used,
        soft,
    )
    return True


def raise_file_limit(wanted: int = 65536) -> tuple[int, int]:
    """Raise the soft file descriptor limit towards the hard one (at most ``wanted``); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft
