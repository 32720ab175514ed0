"""``emostream serve``: the command line, the listening socket, uvicorn, signals.

SIGTERM (and Ctrl-C) stop accepting connections, end every open call with its summary,
close the ``/events`` subscribers and exit: 0 after SIGTERM, 130 after Ctrl-C. Bad flags
or settings exit 2, an address that cannot be bound (port in use) exits 2 with the
address in the message, an unusable model exits 5.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from emostream.apps.options import add_calibration_options, add_model_options, config_from_args
from emostream.config import apply_overrides
from emostream.engine.plan import make_plan
from emostream.errors import ConfigError
from emostream.server.app import create_app
from emostream.server.auth import Token, default_token_file, resolve_token, resolve_tokens, write_token_file
from emostream.server.bus_config import safe_url
from emostream.server.config import TOKEN_ENV, ServerConfig
from emostream.server.context import ServerContext, make_context, replica_name
from emostream.server.gate import guarded_http_protocol, raise_file_limit
from emostream.server.logs import SafeFormatter
from emostream.server.supervisor import make_supervisor_context
from emostream.server.wsframes import FastFrameProtocol

EXIT_INTERRUPTED = 130
MAX_HEADER_BYTES = 16384  # an HTTP request's headers (h11 answers 400 beyond it)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

DESCRIPTION = (
    "Analyse live calls arriving over WebSockets (Twilio Media Streams on /twilio, a generic protocol on /ingest), "
    "publish their readings on /events, serve the supervisor page (/) and the browser app (/try). One pipeline "
    "per channel; the agent channel is metered, not analysed, unless [privacy] allow_agent_analysis. Token: "
    f"${TOKEN_ENV}, else [server] token, else a random one written to a file only you can read (its path is "
    "printed at start-up); read-only and per-integration ingest tokens in [server]. See docs/server.md."
)


class ServeAddressError(ConfigError):
    """The listening address cannot be bound (port in use, address not on this machine); exit 2."""


def register(sub: Any) -> None:
    """Add ``emostream serve`` to the CLI (entry point of the ``emostream.commands`` group)."""
    parser = sub.add_parser(
        "serve",
        help="serve live calls over WebSockets (Twilio, generic ingest), a supervisor page and a browser app",
        description=DESCRIPTION,
        epilog="Exit status 0 after SIGTERM, 130 after Ctrl-C, 2 for bad settings or an address that cannot be "
        "bound (port in use), 5 for an unusable model. See docs/server.md.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; [server] host)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8765; 0 = any free port)")
    parser.add_argument("--summary-dir", metavar="DIR", help="write each call's summary to DIR/<call>.json")
    parser.add_argument("--max-calls", type=int, help="calls open at once (default 200)")
    parser.add_argument(
        "--workers", type=int, help="analysis processes shared by the calls (default 2; 0 = threads of the server)"
    )
    parser.add_argument(
        "--bus",
        metavar="URL",
        help="publish every record (and a heartbeat) on a Redis stream, redis://HOST:PORT/DB ([bus] url; "
        "docs/scaling.md)",
    )
    parser.add_argument("--replica", metavar="NAME", help="this replica's name on the supervisor ([bus] replica)")
    parser.add_argument(
        "--supervisor",
        action="store_true",
        help="serve one supervisor page, /events, /api/calls and /metrics for every replica of the --bus "
        "(takes no audio)",
    )
    add_model_options(parser)
    add_calibration_options(parser)
    parser.set_defaults(func=cmd_serve, live=False)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM or Ctrl-C."""
    cfg = config_from_args(args)
    given = {
        "host": args.host,
        "port": args.port,
        "summary_dir": args.summary_dir,
        "max_calls": args.max_calls,
        "workers": args.workers,
    }
    cfg = apply_overrides(cfg, {"server": given, "bus": {"url": args.bus, "replica": args.replica}})
    if args.supervisor and cfg.bus.url is None:
        raise ConfigError(
            "--supervisor: no bus to read; give --bus redis://HOST:PORT/DB (or [bus] url), the bus the replicas "
            "publish to"
        )
    token = resolve_token(cfg.server)
    tokens = resolve_tokens(cfg.server, token)
    prepare_summary_dir(cfg.server)
    sock = bind_socket(cfg.server.host, cfg.server.port)
    try:
        if token.origin == "generated":
            token = write_token_file(token, default_token_file())
            tokens.admin = token
        plan = make_plan(cfg)
        setup_logging()
        if cfg.bus.url is not None and cfg.bus.replica is None and not args.supervisor:
            cfg = apply_overrides(cfg, {"bus": {"replica": replica_name(cfg, sock.getsockname()[1])}})
        ctx: ServerContext
        if args.supervisor:
            ctx = make_supervisor_context(cfg, plan, token, tokens)
        else:
            ctx = make_context(cfg, plan, token, tokens)
        fit_to_file_limit(ctx)
        server = EmoServer(ctx, uvicorn_config(ctx), on_ready=lambda: print_banner(ctx, sock.getsockname()[1]))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return EXIT_INTERRUPTED if signal.SIGINT in server.signals else 0


FD_RESERVE = 64  # file descriptors kept for the listening socket, workers' pipes, logs, summaries


def fit_to_file_limit(ctx: ServerContext) -> None:
    """Raise the file descriptor limit to the hard limit; if it is still low, fewer unauthenticated connections.

    Unauthenticated connections may take at most a quarter of what the limit leaves, so that
    a flood of idle sockets closes its own oldest before the process runs out of descriptors.
    """
    logger = logging.getLogger("emostream.server")
    before, limit = raise_file_limit()
    if limit > before:
        logger.info("file descriptor limit raised from %d to %d", before, limit)
    room = max(8, (limit - FD_RESERVE) // 4)
    if ctx.gate.max_open > room:
        logger.warning(
            "file descriptor limit %d is low: at most %d unauthenticated connections (not [server] "
            "max_unauthenticated = %d); raise the limit (systemd LimitNOFILE=, ulimit -n)",
            limit,
            room,
            ctx.gate.max_open,
        )
        ctx.gate.max_open = room


def uvicorn_config(ctx: ServerContext) -> uvicorn.Config:
    """uvicorn's settings: the app, h11 with a header deadline (:mod:`emostream.server.gate`), uvicorn's
    sans-I/O WebSocket protocol reading plain data frames itself (:mod:`emostream.server.wsframes`), the
    message size limit (larger messages close with 1009), quiet logs."""
    return uvicorn.Config(
        create_app(ctx),
        http=guarded_http_protocol(ctx.gate, ctx.server.header_timeout_s),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        ws=FastFrameProtocol,
        ws_max_size=ctx.server.max_message_bytes,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=math.ceil(ctx.server.shutdown_timeout_s),
    )


class EmoServer(uvicorn.Server):
    """uvicorn's server with emostream's shutdown: drain the calls before the connections are cut.

    Signals are recorded, not re-raised after the shutdown (uvicorn's own behaviour), so
    SIGTERM ends the process with status 0 once every open call is summarised.
    """

    def __init__(self, ctx: ServerContext, config: uvicorn.Config, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.ctx = ctx
        self.signals: list[int] = []
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the app's start-up first: analysis workers loaded
        if self.started and self._on_ready is not None:
            self._on_ready()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in getattr(self, "servers", []):
            server.close()  # stop accepting first
        await self.ctx.drain()
        await super().shutdown(sockets)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; :class:`ServeAddressError` (exit 2) when it cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeAddressError(f"--host {host}: cannot resolve it ({exc}); give an address such as 127.0.0.1") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeAddressError(
                f"port {port} on {host} is already in use (another emostream serve?); choose another with --port "
                "or stop the program using it"
            ) from exc
        raise ServeAddressError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host and --port"
        ) from exc
    sock.setblocking(False)
    return sock


def prepare_summary_dir(server: ServerConfig) -> None:
    """Create ``summary_dir`` if needed; ConfigError (exit 2) when it cannot be written."""
    if server.summary_dir is None:
        return
    folder = Path(server.summary_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".emostream-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"summary folder {folder}: cannot write there ({exc.strerror or exc}); give a writable folder with "
            "--summary-dir or [server] summary_dir"
        ) from exc


def setup_logging() -> None:
    """One line per event on stderr for the ``emostream`` loggers (calls, refusals), INFO and up."""
    logger = logging.getLogger("emostream")
    if not any(getattr(h, "_emostream_serve", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter(LOG_FORMAT))  # control characters escaped: no forged log lines
        handler._emostream_serve = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def print_banner(ctx: ServerContext, port: int) -> None:
    """The start-up lines: address, model, where each token came from (never a token itself), the page URLs."""
    host = ctx.server.host
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    token = ctx.tokens.admin
    fragment = _token_placeholder(token)
    lines = [
        f"emostream serve: listening on {base} (model {ctx.plan.model_name}, admin token {_token_origin(token)}, "
        f"at most {ctx.server.max_calls} calls)",
        f"  tokens:          {', '.join(ctx.tokens.names)}",
        f"  supervisor page: {base}/#token={fragment}",
    ]
    bus = ctx.config.bus
    if ctx.takes_audio:
        lines += [
            f"  browser app:     {base}/try#token={fragment}",
            f"  WebSockets:      ws://{shown}:{port}/twilio  /ingest  /events   (SIGTERM or Ctrl-C stops)",
        ]
        if bus.url is not None:
            lines.append(f"  bus:             {safe_url(bus.url)} stream {bus.stream}, as replica {bus.replica}")
    else:
        lines += [
            f"  fleet:           every replica on {safe_url(bus.url or '')} stream {bus.stream}; no audio taken here",
            f"  WebSockets:      ws://{shown}:{port}/events   (SIGTERM or Ctrl-C stops)",
        ]
    if not _is_loopback(host):
        lines.append(
            f"  warning: {host} is reachable from other machines; put a TLS-terminating reverse proxy in front "
            "(Twilio needs wss://) and keep the tokens secret"
        )
    print("\n".join(lines), flush=True)


def _token_placeholder(token: Token) -> str:
    if token.origin == "generated":
        return f"<the token in {token.file}>"
    return f"<${TOKEN_ENV}>" if token.origin == "environment" else "<[server] token>"


def _token_origin(token: Token) -> str:
    if token.origin == "generated":
        return f"generated, in {token.file} (mode 0600)"
    return {"environment": f"from ${TOKEN_ENV}", "config": "from [server] token"}.get(token.origin, token.origin)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
