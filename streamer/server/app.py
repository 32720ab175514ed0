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
from starlette.websockets import WebSocket

from emostream.server.auth import token_from_request
from emostream.server.connection import Connection
from emostream.server.context import ServerContext
from emostream.server.events import EventHub
from emostream.server.streams import accept_with_token, ingest_endpoint, twilio_endpoint

log = logging.getLogger("emostream.server")
STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGES = {"/": "supervisor.html", "/try": "try.html"}


def create_app(ctx: ServerContext) -> Starlette:
    """The ASGI app serving ``ctx``; its lifespan starts the call registry and drains at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ctx.start()
        yield
        await ctx.drain()

    async def healthz(request: Request) -> Response:
        calls = len(ctx.registry.calls) if ctx.registry is not None else 0
        return JSONResponse({"status": "ok" if not ctx.drained else "shutting down", "calls": calls})

    def authorised(request: Request) -> Response | None:
        if ctx.token.matches(token_from_request(request.headers, request.query_params)):
            return None
        ctx.metrics.rejected.labels("bad_token").inc()
        log.warning("%s %s: 401 missing or wrong token", request.url.path, _peer(request))
        return JSONResponse(
            {"error": "missing or wrong token; send Authorization: Bearer <token> or ?token=<token>"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="emostream"'},
        )

    async def metrics(request: Request) -> Response:
        refused = authorised(request)
        if refused is not None:
            return refused
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)

    async def api_calls(request: Request) -> Response:
        refused = authorised(request)
        if refused is not None:
            return refused
        return JSONResponse({"calls": ctx.calls.infos()})

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
        Route("/", supervisor),
        Route("/try", try_page),
        WebSocketRoute("/events", events),
        WebSocketRoute("/twilio", twilio),
        WebSocketRoute("/ingest", ingest),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client is not None else "unknown peer"


async def events_endpoint(ws: WebSocket, ctx: ServerContext) -> None:
    """``WS /events[?call=ID]``: a snapshot of the open calls, then every record as it happens."""
    accepted = await accept_with_token(ws, ctx, "/events")
    if accepted is None:
        return
    conn = accepted[0]
    call_filter = ws.query_params.get("call") or None
    sub = ctx.hub.subscribe(call_filter)
    ctx.subscribers.add(conn)
    ctx.metrics.subscribers.inc()
    try:
        infos = [i for i in ctx.calls.infos() if call_filter is None or i["call_id"] == call_filter]
        snapshot = {"type": "snapshot", "labels": list(ctx.plan.labels), "model": ctx.plan.model_name, "calls": infos}
        if not await conn.send_text(EventHub.encode(snapshot)):
            return
        reader = asyncio.get_running_loop().create_task(_until_disconnect(conn))
        try:
            while not reader.done():
                getter = asyncio.ensure_future(sub.next_texts())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                for text in getter.result():
                    if not await conn.send_text(text):
                        return
                sub.sent()
        finally:
            reader.cancel()
    finally:
        ctx.hub.unsubscribe(sub)
        ctx.subscribers.discard(conn)
        ctx.metrics.subscribers.dec()
        if sub.dropped_total:
            log.info("/events %s: %d record(s) dropped (slow subscriber)", conn.peer, sub.dropped_total)


async def _until_disconnect(conn: Connection) -> None:
    """Read (and ignore) what an /events client sends, until it leaves."""
    while (await conn.receive())["type"] != "websocket.disconnect":
        pass
