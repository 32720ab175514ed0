"""The audio endpoints: ``/twilio`` (Twilio Media Streams) and ``/ingest`` (the generic protocol).

Each connection is one call. Bad input closes the connection with a close code and a
reason (:mod:`emostream.server.closing`), logged and counted; the call, if it had
started, still ends with its summary. Nothing a connection does reaches another call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.websockets import WebSocket

from emostream.server.analysis import CallSpec
from emostream.server.auth import INGEST, SUBPROTOCOL, Grant, token_from_request
from emostream.server.calls import Call, check_call_id
from emostream.server.closing import (
    IDLE_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    NORMAL,
    POLICY_VIOLATION,
    PROTOCOL_ERROR,
    RejectError,
)
from emostream.server.connection import Connection
from emostream.server.context import ServerContext
from emostream.server.events import EventHub
from emostream.server.ingest import IngestHeader, parse_header
from emostream.server.twilio import (
    RATE_HZ,
    TrackAligner,
    TwilioStart,
    parse_media,
    parse_media_text,
    parse_message,
    parse_start,
)

STEREO_ROLES = ("customer", "agent")  # /ingest with two channels and no roles, as `emostream calls`
BRIDGE_SUBPROTOCOLS = ("audio.drachtio.org", "audiostream.drachtio.org")  # FreeSWITCH mod_audio_fork asks for one
MAX_MESSAGE_BEFORE_START_BYTES = 16384  # /twilio before start (not authenticated yet): connected, start are small
log = logging.getLogger("emostream.server")


def bad_token(where: str) -> RejectError:
    return RejectError(POLICY_VIOLATION, "bad_token", f"missing or wrong token ({where})")


def check_grant(grant: Grant | None, scope: str, endpoint: str, where: str) -> Grant:
    """``grant`` if it allows ``scope``; 1008 for no token (``bad_token``) or one of another scope (``wrong_scope``)."""
    if grant is None:
        raise bad_token(where)
    if not grant.allows(scope):
        raise RejectError(
            POLICY_VIOLATION,
            "wrong_scope",
            f"the {grant.name} token cannot use {endpoint}; give a token with {scope} access",
        )
    return grant


async def accept_with_token(
    ws: WebSocket, ctx: ServerContext, endpoint: str, scope: str, *, required: bool = True
) -> tuple[Connection, Grant | None] | None:
    """Accept ``ws`` and check the token of its header, subprotocol or (``query_token_paths``) query.

    Returns the connection and the token's grant, None for no token when not ``required``
    (``/twilio`` may still bring it in its start message), or None after closing with 1008
    for a wrong or missing token or one without ``scope``.
    """
    conn = Connection(ws, endpoint, ctx.metrics, ctx.refuse)
    offered = [str(p) for p in ws.scope.get("subprotocols") or []]
    chosen = SUBPROTOCOL if SUBPROTOCOL in offered else next((p for p in offered if p in BRIDGE_SUBPROTOCOLS), None)
    await ws.accept(subprotocol=chosen)
    query_ok = endpoint in ctx.server.query_token_paths
    given = token_from_request(ws.headers, ws.query_params, subprotocols=offered, query_ok=query_ok)
    if given is None and not required and "token" not in ws.query_params:
        return conn, None
    where = "Authorization: Bearer header or emostream.bearer subprotocol" + (" or ?token=" if query_ok else "")
    if given is None and "token" in ws.query_params:
        where = f"?token= is not taken on {endpoint} ([server] query_token_paths); use the Authorization header"
    try:
        return conn, check_grant(ctx.tokens.grant(given), scope, endpoint, where)
    except RejectError as rejection:
        await conn.reject(rejection)
        return None


async def internal_error(conn: Connection, ctx: ServerContext, exc: Exception) -> None:
    """An unexpected error while handling ``conn``: one log line (rate-limited, no traceback), counted, close 1011."""
    ctx.metrics.rejected.labels("internal_error").inc()
    ctx.logs.log(
        "internal_error",
        logging.ERROR,
        "%s %s: closed 1011: internal error %s: %s",
        conn.endpoint,
        conn.peer,
        type(exc).__name__,
        str(exc)[:200],
    )
    log.debug("internal error on %s %s", conn.endpoint, conn.peer, exc_info=exc)
    await conn.close(INTERNAL_ERROR, "internal error")


async def first_message(conn: Connection, ctx: ServerContext) -> dict[str, Any] | None:
    """The next message before a call exists (idle timeout applies), or None when the client left."""
    timeout = ctx.server.idle_timeout_s
    try:
        message = await asyncio.wait_for(conn.receive(), timeout)
    except TimeoutError:
        raise RejectError(IDLE_TIMEOUT, "idle_timeout", f"idle timeout: no message for {timeout:g} s") from None
    return None if message["type"] == "websocket.disconnect" else message


def end_reason(conn: Connection, message: dict[str, Any]) -> str:
    """Why a call ended when its connection closed: the server's own close reason, else the client's code."""
    if conn.closed_with is not None:
        return conn.closed_with[1] or f"closed {conn.closed_with[0]}"
    return f"disconnected (code {message.get('code', 1006)})"


async def _finish(ctx: ServerContext, conn: Connection, call: Call | None, reason: str) -> None:
    if call is not None:
        await ctx.calls.end(call, reason)
    await conn.close(NORMAL, "call ended")


# ---------------------------------------------------------------- /twilio


async def twilio_endpoint(ws: WebSocket, ctx: ServerContext) -> None:
    """``WS /twilio``: one Twilio Media Stream = one call, channels in track order (inbound, outbound)."""
    accepted = await accept_with_token(ws, ctx, "/twilio", INGEST, required=False)
    if accepted is None:
        return
    conn, grant = accepted
    call: Call | None = None
    aligner: TrackAligner | None = None
    reason = "stop"
    try:
        if grant is None:  # until start brings the token: held to the gate's cap and auth_timeout_s
            ctx.gate.enter(conn, f"/twilio {conn.peer}", lambda: conn.close_soon(POLICY_VIOLATION, EVICTED))
        try:
            started = await _twilio_start(conn, ctx, grant)
        finally:
            ctx.gate.leave(conn)
        if started is None:
            return
        start, grant = started
        call = await ctx.calls.open(_twilio_spec(start, grant), conn.close_soon)
        aligner = TrackAligner(start.tracks)
        reason = await _twilio_media(conn, call, aligner)
    except RejectError as rejection:
        reason = f"rejected: {rejection.label}"
        await conn.reject(rejection)
    except Exception as exc:  # a bug, not the client's input: one line, 1011, the call still ends with its summary
        reason = "error: internal error"
        await internal_error(conn, ctx, exc)
    finally:
        if call is not None and aligner is not None and not conn.closed:
            tail = aligner.take(final=True)
            if tail is not None:
                call.push(tail, len(tail[0]))
        await _finish(ctx, conn, call, reason)


EVICTED = "too many connections without a token; send the token at once"


async def _twilio_start(conn: Connection, ctx: ServerContext, grant: Grant | None) -> tuple[TwilioStart, Grant] | None:
    """Messages up to ``start`` (``connected`` and others are skipped); None when the stream ended first.

    Without a token yet, ``start`` (with the token) must come within ``auth_timeout_s`` of the
    connection, whatever else arrives meanwhile (1008 ``auth_timeout``).
    """
    loop = asyncio.get_running_loop()
    auth_s = ctx.server.auth_timeout_s
    deadline = None if grant is not None else loop.time() + auth_s
    while True:
        if deadline is None:
            message = await first_message(conn, ctx)
        else:
            idle_s = ctx.server.idle_timeout_s
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(conn.receive(), max(0.0, min(left, idle_s)))
            except TimeoutError:
                if left > idle_s:
                    raise RejectError(
                        IDLE_TIMEOUT, "idle_timeout", f"idle timeout: no message for {idle_s:g} s"
                    ) from None
                raise RejectError(
                    POLICY_VIOLATION,
                    "auth_timeout",
                    f"no start with a token within {auth_s:g} s of connecting ([server] auth_timeout_s)",
                ) from None
            if message["type"] == "websocket.disconnect":
                return None
        if message is None:
            return None
        text = _text(message, "/twilio")
        if len(text) > MAX_MESSAGE_BEFORE_START_BYTES:
            raise RejectError(
                MESSAGE_TOO_BIG,
                "oversize",
                f"message of {len(text)} characters before start; expected at most {MAX_MESSAGE_BEFORE_START_BYTES}",
            )
        event, body = parse_message(text)
        if event == "media":
            raise RejectError(
                PROTOCOL_ERROR, "media_before_start", "media before start; expected connected, then start"
            )
        if event == "stop":
            return None
        if event == "start":
            start = parse_start(body)
            if grant is None:
                given = ctx.tokens.grant(start.custom_parameters.get("token"))
                grant = check_grant(given, INGEST, "/twilio", '<Parameter name="token"> in the stream')
            return start, grant


def _twilio_spec(start: TwilioStart, grant: Grant) -> CallSpec:
    return CallSpec(
        call_id=check_call_id(start.stream_sid),
        source="twilio",
        rate_hz=RATE_HZ,
        channels=len(start.tracks),
        default_roles=start.default_roles,
        encoding="mulaw",
        per_track=True,
        identity={
            "source": "twilio",
            "stream_sid": start.stream_sid,
            "call_sid": start.call_sid,
            "tracks": list(start.tracks),
            "encoding": "audio/x-mulaw",
            "token": grant.name,
        },
    )


async def _twilio_media(conn: Connection, call: Call, aligner: TrackAligner) -> str:
    """Media until ``stop`` or close; returns why the call ended.

    Where the WebSocket protocol offers it (:data:`~emostream.server.wsframes.RECEIVER_EXTENSION`), media
    messages in Twilio's own form are taken as they are read (:func:`_media_receiver`), without a wake-up of
    this task per message; anything else (``stop``, ``mark``, another form, a refusal) comes here through
    ``receive`` in its order, and the receiver is set again once it is handled.
    """
    set_receiver = conn.text_receiver()
    if set_receiver is None:
        return await _twilio_messages(conn, call, aligner, lambda: None)
    receiver = _media_receiver(call, aligner)
    try:
        return await _twilio_messages(conn, call, aligner, lambda: set_receiver(receiver))
    finally:
        set_receiver(None)


async def _twilio_messages(conn: Connection, call: Call, aligner: TrackAligner, ready: Callable[[], None]) -> str:
    """The messages ``receive`` gives until ``stop`` or close (``ready`` is called before each wait)."""
    while True:
        ready()
        message = await conn.receive()
        if message["type"] == "websocket.disconnect":
            return end_reason(conn, message)
        call.touch()
        text = _text(message, "/twilio")
        media = parse_media_text(text)  # Twilio's own media messages, without the JSON parser
        if media is None:
            event, body = parse_message(text)
            if event == "media":
                media = parse_media(body)
            elif event == "stop":
                return "stop"
            elif event == "start":
                raise RejectError(INVALID_DATA, "malformed_message", "a second start message; a stream has one")
        if media is not None:
            _place(call, aligner, *media)


def _place(call: Call, aligner: TrackAligner, track: str, timestamp_ms: int, payload: bytes) -> None:
    """One media message into the aligner; what every track has then goes to the call."""
    if aligner.add(track, timestamp_ms, payload):
        chunk = aligner.take()
        if chunk is not None:
            call.push(chunk, len(chunk[0]))


def _media_receiver(call: Call, aligner: TrackAligner) -> Callable[[str], bool]:
    """A text receiver for the WebSocket protocol: takes a Twilio media message as ``_twilio_media`` would,
    declines (False) any other text and a media message for a track the start did not announce (the task
    then refuses it with its message)."""

    tracks = aligner.tracks
    add, take_aligned, push, monotonic = aligner.add, aligner.take, call.push, time.monotonic

    def take(text: str) -> bool:  # 100 calls a second per call: _place and Call.touch inlined, one clock reading
        media = parse_media_text(text)
        if media is None:
            return False
        track, timestamp_ms, payload = media
        if track not in tracks:
            return False
        now = call.last_message = monotonic()
        if add(track, timestamp_ms, payload):
            chunk = take_aligned()
            if chunk is not None:
                push(chunk, len(chunk[0]), now)
        return True

    return take


def _text(message: dict[str, Any], endpoint: str) -> str:
    text = message.get("text")
    if text is None:
        raise RejectError(
            PROTOCOL_ERROR, "binary_message", f"binary message on {endpoint}; expected JSON text messages"
        )
    return str(text)


# ---------------------------------------------------------------- /ingest


async def ingest_endpoint(ws: WebSocket, ctx: ServerContext) -> None:
    """``WS /ingest``: a JSON header, then binary frames of interleaved samples; ``{"type":"stop"}`` or close ends."""
    accepted = await accept_with_token(ws, ctx, "/ingest", INGEST)
    if accepted is None or accepted[1] is None:  # required=True: no grant means it was closed 1008
        return
    conn, grant = accepted[0], accepted[1]
    call: Call | None = None
    echo: _Echo | None = None
    reason = "stop"
    ending = _Ending(conn)
    try:
        message = await first_message(conn, ctx)
        if message is None:
            return
        header = parse_header(_first_text(message))
        call_id = check_call_id(header.call_id) if header.call_id is not None else uuid.uuid4().hex
        if header.events:
            echo = _Echo(conn, ctx.hub, call_id)
        call = await ctx.calls.open(_ingest_spec(header, call_id, conn.peer, grant), ending.request)
        reply = {
            "type": "accepted",
            "call_id": call_id,
            "labels": list(ctx.plan.labels),
            "model": ctx.plan.model_name,
            "channels": call.info()["channels"],
        }
        await conn.send_text(EventHub.encode(reply))
        if echo is not None:
            echo.start()
            # the server may end the call (shutdown, idle timeout): the caller still gets its call_end
            reason = await ending.receive_until_ended(_ingest_audio(conn, call, header))
        else:
            reason = await _ingest_audio(conn, call, header)
    except RejectError as rejection:
        reason = f"rejected: {rejection.label}"
        await conn.reject(rejection)
    except Exception as exc:  # a bug, not the client's input: one line, 1011, the call still ends with its summary
        reason = "error: internal error"
        ending.requested = None
        await internal_error(conn, ctx, exc)
    finally:
        if call is not None:
            await ctx.calls.end(call, reason)
        if echo is not None:
            await echo.finish()
        await conn.close(*(ending.requested or (NORMAL, "call ended")))


def _first_text(message: dict[str, Any]) -> str:
    text = message.get("text")
    if text is None:
        raise RejectError(
            PROTOCOL_ERROR, "audio_before_start", "binary audio before the JSON header; send the header first"
        )
    return str(text)


def _ingest_spec(header: IngestHeader, call_id: str, peer: str, grant: Grant) -> CallSpec:
    roles = header.roles or (STEREO_ROLES if header.channels == 2 else ())
    return CallSpec(
        call_id=call_id,
        source="ingest",
        rate_hz=header.sample_rate_hz,
        channels=header.channels,
        default_roles=roles,
        encoding=header.encoding,
        per_track=False,
        identity={
            "source": "ingest",
            "encoding": header.encoding,
            "sample_rate_hz": header.sample_rate_hz,
            "channels": header.channels,
            "peer": peer,
            "token": grant.name,
        },
    )


async def _ingest_audio(conn: Connection, call: Call, header: IngestHeader) -> str:
    """Receive audio until stop or close; returns why the call ended."""
    frame_bytes = header.frame_bytes
    while True:
        message = await conn.receive()
        if message["type"] == "websocket.disconnect":
            return end_reason(conn, message)
        call.touch()
        data = message.get("bytes")
        if data is not None:
            if len(data) % frame_bytes:
                raise RejectError(
                    INVALID_DATA,
                    "partial_samples",
                    f"binary message of {len(data)} bytes; expected whole frames of {frame_bytes} bytes "
                    f"({header.encoding} x {header.channels} channel(s))",
                )
            call.push(bytes(data), len(data) // frame_bytes)
            continue
        text = str(message.get("text") or "")
        if text.replace(" ", "") in ('{"type":"stop"}', "stop"):
            return "stop"
        raise RejectError(
            INVALID_DATA, "malformed_message", f'text message {text[:40]!r}; expected binary audio or {{"type":"stop"}}'
        )


class _Ending:
    """How the server ends an ``/ingest`` call whose caller reads its events on the same socket.

    Without events, the connection is simply closed (the call then ends). With them, closing first
    would lose the ``call_end`` record: :meth:`request` instead stops the receiving, the handler ends
    the call and sends ``call_end``, and only then closes with the requested code and reason.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.requested: tuple[int, str] | None = None
        self._receiving: asyncio.Task[str] | None = None

    def request(self, code: int, reason: str) -> None:
        """The call's ``stop`` callback (event loop side): end with ``code`` and ``reason``."""
        if self.requested is not None:
            return
        if self._receiving is None or self._receiving.done():
            self.conn.close_soon(code, reason)  # not receiving through us: close as usual
            return
        self.requested = (code, reason)
        self._receiving.cancel()

    async def receive_until_ended(self, receiving: Coroutine[Any, Any, str]) -> str:
        """Run the receive loop ``receiving`` until it returns or :meth:`request` stops it; why it ended."""
        self._receiving = asyncio.get_running_loop().create_task(receiving)
        try:
            return await self._receiving
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.requested is None or (current is not None and current.cancelling()):
                raise  # not ours: the handler itself is cancelled
            return self.requested[1]
        finally:
            self._receiving.cancel()


class _Echo:
    """``"events": true`` on ``/ingest``: the call's own records, sent back on its socket."""

    def __init__(self, conn: Connection, hub: EventHub, call_id: str) -> None:
        self.conn = conn
        self.hub = hub
        self.sub = hub.subscribe(call_id)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while True:
            for text in await self.sub.next_texts():
                if not await self.conn.send_text(text):
                    return
            self.sub.sent()

    async def finish(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (the call_end record last), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._task is not None and not self._task.done() and self.sub.queue.qsize() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        self.hub.unsubscribe(self.sub)
