"""One accepted WebSocket: receive, send, close once (from any task), and refuse with a logged, counted reason.

Closing may come from the connection's own handler (bad input, the call ended) or from
elsewhere (the idle watchdog, the shutdown drain, a call whose audio was refused): the
first close wins, later sends and closes are no-ops, and the handler's pending receive
returns a disconnect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from emostream.server.closing import MESSAGE_TOO_BIG, RejectError, fit_reason
from emostream.server.metrics import ServerMetrics
from emostream.server.wsframes import RECEIVER_EXTENSION

log = logging.getLogger("emostream.server")

_DISCONNECT_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)


class Connection:
    """An accepted WebSocket of ``endpoint`` (``/twilio``, ``/ingest``, ``/events``)."""

    def __init__(
        self,
        ws: WebSocket,
        endpoint: str,
        metrics: ServerMetrics,
        refuse: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.ws = ws
        self.endpoint = endpoint
        self.metrics = metrics
        self._refuse = refuse  # (label, peer, message): count and log a refusal, rate-limited
        client = ws.client
        self.peer = f"{client.host}:{client.port}" if client is not None else "unknown peer"
        self.closed_with: tuple[int, str] | None = None  # (code, reason) of the close this side sent
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def closed(self) -> bool:
        return self.closed_with is not None or self.ws.client_state == WebSocketState.DISCONNECTED

    async def receive(self) -> dict[str, Any]:
        """The next ASGI message (``websocket.receive`` with ``text`` or ``bytes``, or ``websocket.disconnect``)."""
        if self.ws.client_state == WebSocketState.DISCONNECTED:
            return {"type": "websocket.disconnect", "code": 1006}
        message: dict[str, Any] = dict(await self.ws.receive())
        if (
            message["type"] == "websocket.disconnect"
            and message.get("code") == MESSAGE_TOO_BIG
            and not self.closed_with
        ):
            # the protocol layer refused a message over [server] max_message_bytes and closed with 1009
            self.refused("oversize", f"closed {MESSAGE_TOO_BIG} (oversize): {message.get('reason')}")
            self.closed_with = (MESSAGE_TOO_BIG, "message too big")
        return message

    def text_receiver(self) -> Callable[[Callable[[str], bool] | None], None] | None:
        """The protocol's ``set_receiver`` (text messages handed over as they are read), or None when the
        WebSocket implementation has none (:mod:`emostream.server.wsframes`)."""
        extension = (self.ws.scope.get("extensions") or {}).get(RECEIVER_EXTENSION)
        return None if extension is None else extension["set"]  # type: ignore[no-any-return]

    async def send_text(self, text: str) -> bool:
        """Send one text message; False when the connection is closed or the peer went away."""
        if self.closed:
            return False
        try:
            await self.ws.send({"type": "websocket.send", "text": text})
        except _DISCONNECT_ERRORS:
            return False
        return True

    async def close(self, code: int, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` (once; no-op when already closed)."""
        if self.closed:
            return
        self.closed_with = (code, fit_reason(reason))
        with contextlib.suppress(*_DISCONNECT_ERRORS):
            await self.ws.close(code, fit_reason(reason))

    def close_soon(self, code: int, reason: str) -> None:
        """Close from a synchronous caller (the idle watchdog, the drain): scheduled on the loop."""
        task = asyncio.get_running_loop().create_task(self.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refused(self, label: str, message: str) -> None:
        """Count a refusal under ``label`` and log it with the endpoint and peer (rate-limited)."""
        if self._refuse is not None:
            self._refuse(label, f"{self.endpoint} {self.peer}", message)
            return
        log.warning("%s %s: %s", self.endpoint, self.peer, message)
        self.metrics.rejected.labels(label).inc()

    async def reject(self, rejection: RejectError) -> None:
        """Log one line, count it under its reason and close with its code."""
        self.refused(rejection.label, f"closed {rejection.code} ({rejection.label}): {rejection.reason}")
        await self.close(rejection.code, rejection.reason)
