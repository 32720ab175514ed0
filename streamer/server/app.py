"""The Starlette application of ``emostream serve``: HTTP routes, ``/events``, the static pages.

Routes (``docs/server.md``): ``GET /healthz`` (no token), ``GET /`` and ``GET /try`` and
``/static/*`` (the pages: no data inside, no token), ``GET /metrics`` and ``GET /api/calls``
(token), ``WS /events`` (token), ``WS /twilio`` and ``WS /ingest`` (:mod:`emostream.server.streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from emostream.server.auth import READ, Grant, token_from_request
from emostream.server.connection import Connection
from emostream.server.context import ServerContext
from emostream.server.events import EventHub, Subscriber
from emostream.server.streams import accept_with_token, ingest_endpoint, internal_error, twilio_endpoint
from emostream.server.web import RequestGuard

log = logging.getLogger("emostream.server")
STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGES = {"/": "supervisor.html", "/try": "try.html"}
NO_STORE = {"Cache-Control": "no-store"}


def create_app(ctx: ServerContext) -> ASGIApp:
    """The ASGI app serving ``ctx``; its lifespan starts the call registry and drains at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ctx.start()
        yield
        await ctx.drain()

    async def healthz(request: Request) -> Response:
        """``{"status": "ok" | "full" | "shutting down"}``; the call count only for a read token."""
        calls = ctx.call_count()
        full = ctx.takes_audio and calls >= ctx.server.max_calls  # a fleet's supervisor is never full
        status = "shutting down" if ctx.drained else "full" if full else "ok"
        body: dict[str, object] = {"status": status, **ctx.health()}
        grant = ctx.tokens.grant(token_from_request(request.headers, request.query_params, query_ok=False))
        if grant is not None and grant.allows(READ):
            body["calls"] = calls
        return JSONResponse(body, headers=NO_STORE)

    def authorised(request: Request, scope: str | None) -> Grant | Response:
        """The request's grant (``scope`` required unless None), else the 401/403 response (counted, logged)."""
        grant = ctx.tokens.grant(token_from_request(request.headers, request.query_params, query_ok=False))
        if grant is not None and (scope is None or grant.allows(scope)):
            return grant
        peer = f"{request.url.path} {_peer(request)}"
        if grant is None:
            ctx.refuse("bad_token", peer, "401 missing or wrong token")
            return JSONResponse(
                {"error": "missing or wrong token; send the header Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="emostream"', **NO_STORE},
            )
        ctx.refuse("wrong_scope", peer, f"403 the {grant.name} token has no {scope} access")
        return JSONResponse(
            {"error": f"the {grant.name} token cannot use {request.url.path}; give a token with {scope} access"},
            status_code=403,
            headers=NO_STORE,
        )

    async def metrics(request: Request) -> Response:
        grant = authorised(request, READ)
        if isinstance(grant, Response):
            return grant
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type, headers=NO_STORE)

    async def api_calls(request: Request) -> Response:
        grant = authorised(request, READ)
        if isinstance(grant, Response):
            return grant
        return JSONResponse({"calls": ctx.call_infos()}, headers=NO_STORE)

    async def whoami(request: Request) -> Response:
        """What the request's token allows (the pages check a token with it): ``{"name", "scopes"}``."""
        grant = authorised(request, None)
        if isinstance(grant, Response):
            return grant
        return JSONResponse({"name": grant.name, "scopes": sorted(grant.scopes)}, headers=NO_STORE)

    def page(name: str) -> Response:
        path = STATIC_DIR / name
        if not path.is_file():
            return PlainTextResponse(f"{name} is not installed with this emostream", status_code=404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def supervisor(request: Request) -> Response:
        return page(PAGES["/"])

    async def try_page(request: Request) -> Response:
        return page(PAGES["/try"])

    async def events(ws: WebSocket) -> None:
        await events_endpoint(ws, ctx)

    async def twilio(ws: WebSocket) -> None:
        await twilio_endpoint(ws, ctx)

    async def ingest(ws: WebSocket) -> None:
        await ingest_endpoint(ws, ctx)

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/calls", api_calls),
        Route("/api/whoami", whoami),
        Route("/", supervisor),
        WebSocketRoute("/events", events),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
    ]
    if ctx.takes_audio:  # not a fleet's supervisor
        routes += [Route("/try", try_page), WebSocketRoute("/twilio", twilio), WebSocketRoute("/ingest", ingest)]
    app = Starlette(routes=routes, lifespan=lifespan)
    server = ctx.server
    return RequestGuard(
        app,
        listen_host=server.host,
        allowed_hosts=server.allowed_hosts,
        allowed_origins=server.allowed_origins,
        refuse=ctx.refuse,
    )


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client is not None else "unknown peer"


async def events_endpoint(ws: WebSocket, ctx: ServerContext) -> None:
    """``WS /events[?call=ID]``: a snapshot of the open calls, then every record as it happens."""
    accepted = await accept_with_token(ws, ctx, "/events", READ)
    if accepted is None:
        return
    conn = accepted[0]
    try:
        await _events(conn, ws, ctx)
    except Exception as exc:  # a bug: one line, 1011
        await internal_error(conn, ctx, exc)


async def _events(conn: Connection, ws: WebSocket, ctx: ServerContext) -> None:
    call_filter = ws.query_params.get("call") or None
    sub = ctx.hub.subscribe(call_filter)
    ctx.subscribers.add(conn)
    ctx.metrics.subscribers.inc()
    try:
        infos = [i for i in ctx.call_infos(history=True) if call_filter is None or i["call_id"] == call_filter]
        snapshot = {"type": "snapshot", **ctx.snapshot_head(), "calls": infos}
        if not await conn.send_text(EventHub.encode(snapshot)):
            return
        await _send_records(conn, sub)
    finally:
        ctx.hub.unsubscribe(sub)
        ctx.subscribers.discard(conn)
        ctx.metrics.subscribers.dec()
        if sub.dropped_total:
            ctx.logs.log(
                "events_dropped",
                logging.INFO,
                "/events %s: %d record(s) dropped (slow subscriber)",
                conn.peer,
                sub.dropped_total,
            )


async def _send_records(conn: Connection, sub: Subscriber) -> None:
    """Send ``sub``'s records until the client leaves (or a send fails).

    This task waits on the subscriber's queue itself; a second task reads the client's side and, when the
    client leaves, cancels this one (no task and no ``asyncio.wait`` per batch of records: at 50 calls the
    sender wakes about 100 times a second).
    """
    sender = asyncio.current_task()
    if sender is None:  # pragma: no cover  (always called from a task)
        raise RuntimeError("_send_records runs in a task")
    left = False
    active = True

    def on_left(_: asyncio.Task[None]) -> None:
        nonlocal left
        if active:  # not once this function has returned (its reader's callback may come later)
            left = True
            sender.cancel()

    reader = asyncio.get_running_loop().create_task(_until_disconnect(conn))
    reader.add_done_callback(on_left)
    try:
        while True:
            for text in await sub.next_texts():
                if not await conn.send_text(text):
                    return
            sub.sent()
    except asyncio.CancelledError:
        if not left or sender.uncancel() > 0:  # cancelled by someone else too (the server stops): go on cancelling
            raise
    finally:
        active = False
        reader.cancel()


async def _until_disconnect(conn: Connection) -> None:
    """Read (and ignore) what an /events client sends, until it leaves."""
    while (await conn.receive())["type"] != "websocket.disconnect":
        pass
