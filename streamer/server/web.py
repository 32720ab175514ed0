"""What every HTTP request and WebSocket of ``emostream serve`` passes first: Host and Origin checks, page headers.

- **Host** (against DNS rebinding: a hostile page whose name points at 127.0.0.1): the
  ``Host`` header's name must be in ``[server] allowed_hosts``; when that is empty, a
  loopback name (``localhost``, ``127.x.x.x``, ``[::1]``) while listening on a loopback
  address, any name otherwise. Refused: HTTP 421, WebSocket close 1008 (``bad_host``).
- **Origin** (a browser page of another site opening a WebSocket or calling the API): a
  request that carries ``Origin`` must come from the server's own origin (the ``Host`` it
  was reached at) or one of ``[server] allowed_origins``; ``Origin: null`` is refused.
  Requests without ``Origin`` (Twilio, FreeSWITCH, scripts) pass. Refused: HTTP 403,
  WebSocket close 1008 (``bad_origin``).
- **Headers** on every HTTP response: a Content-Security-Policy that allows only the
  server's own scripts, styles, images and connections and no framing, ``X-Frame-Options:
  DENY``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emostream.server.closing import POLICY_VIOLATION

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; worker-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
)
RefuseFn = Callable[[str, str, str], None]


def is_loopback_name(host: str) -> bool:
    """Whether ``host`` (a name or address, without port or brackets) is this machine's loopback."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name of a ``Host`` header value (``[::1]:8765`` -> ``::1``, ``Example.com:80`` -> ``example.com``)."""
    try:
        return (urlsplit(f"//{value}").hostname or "").lower()
    except ValueError:
        return ""


class RequestGuard:
    """ASGI middleware: the Host and Origin checks and the response headers above."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        listen_host: str,
        allowed_hosts: Iterable[str],
        allowed_origins: Iterable[str],
        refuse: RefuseFn,
    ) -> None:
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.any_host = "*" in self.allowed_hosts or (not self.allowed_hosts and not is_loopback_name(listen_host))
        self.allowed_origins = {o.lower().rstrip("/") for o in allowed_origins}
        self.refuse = refuse

    def host_ok(self, host: str) -> bool:
        name = host_name(host)
        if self.any_host:
            return True
        if self.allowed_hosts:
            return name in self.allowed_hosts
        return is_loopback_name(name)

    def origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.lower().rstrip("/")
        if origin in self.allowed_origins:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc == host.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        origin = headers.get("origin")
        problem: tuple[str, int, str] | None = None
        if not self.host_ok(host):
            problem = ("bad_host", 421, f"Host {host[:60]!r} is not served here; add it to [server] allowed_hosts")
        elif origin is not None and not self.origin_ok(origin, host):
            problem = (
                "bad_origin",
                403,
                f"Origin {origin[:60]!r} is not allowed; add it to [server] allowed_origins",
            )
        if problem is not None:
            label, status, message = problem
            client = scope.get("client")
            peer = f"{client[0]}:{client[1]}" if client else "unknown peer"
            self.refuse(label, f"{scope.get('path', '')} {peer}", f"refused: {message}")
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": message[:120]})
            else:
                await _plain(send, status, message)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode("utf-8")
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
