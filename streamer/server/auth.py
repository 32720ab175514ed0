"""The tokens of ``emostream serve``: where they come from, what each allows, how a request proves one.

Three kinds of token (``docs/server.md``, "Security"):

- the **admin** token (``$EMOSTREAM_TOKEN``, else ``[server] token``, else generated and
  written once to a file only its owner can read): everything;
- a **read** token (``$EMOSTREAM_READ_TOKEN`` or ``[server] read_token``): ``/events``,
  ``/api/calls``, ``/metrics``; it cannot send audio;
- **ingest** tokens, one per integration (``[server.ingest_tokens]`` ``name = "token"``, or
  ``$EMOSTREAM_INGEST_TOKEN`` named ``env``): ``/twilio`` and ``/ingest`` (with the call's own
  records echoed back); they cannot read other calls.

A request gives its token as ``Authorization: Bearer <T>``; a browser's WebSocket (which
cannot set headers) as the subprotocol ``emostream.bearer.<T as unpadded base64url>`` next
to ``emostream``; on ``/twilio`` as the stream's custom parameter ``token`` (Twilio cannot
add a header or a query string); ``?token=<T>`` only on the endpoints of ``[server]
query_token_paths`` (``/ingest`` by default, for FreeSWITCH's ``mod_audio_fork``). Every
token is compared with every known token in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emostream.errors import ConfigError
from emostream.server.config import (
    INGEST_TOKEN_ENV,
    MAX_TOKEN_CHARS,
    MIN_TOKEN_CHARS,
    READ_TOKEN_ENV,
    TOKEN_ENV,
    ServerConfig,
)

READ = "read"
INGEST = "ingest"
SUBPROTOCOL = "emostream"
BEARER_SUBPROTOCOL_PREFIX = "emostream.bearer."
TOKEN_FILE_NAME = "serve-token"


@dataclass(frozen=True)
class Token:
    """The admin token and where it came from (``environment``, ``config`` or ``generated``)."""

    value: str
    origin: str
    file: str | None = None  # a generated token: the file it was written to

    def matches(self, given: str | None) -> bool:
        """Whether ``given`` is the token (constant-time; any string, even one that is not valid UTF-8)."""
        return given is not None and hmac.compare_digest(_bytes(given), _bytes(self.value))


@dataclass(frozen=True)
class Grant:
    """Who a token belongs to (``admin``, ``read``, ``ingest:<name>``) and what it allows (``read``, ``ingest``)."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


ADMIN = Grant("admin", frozenset({READ, INGEST}))


class TokenSet:
    """Every token the server takes, each with its :class:`Grant`."""

    def __init__(self, admin: Token, read: str | None = None, ingest: Mapping[str, str] | None = None) -> None:
        self.admin = admin
        entries: list[tuple[bytes, Grant]] = [(_bytes(admin.value), ADMIN)]
        if read is not None:
            entries.append((_bytes(read), Grant("read", frozenset({READ}))))
        for name, value in (ingest or {}).items():
            entries.append((_bytes(value), Grant(f"ingest:{name}", frozenset({INGEST}))))
        self._entries = entries

    @property
    def names(self) -> list[str]:
        return [grant.name for _, grant in self._entries]

    def grant(self, given: str | None) -> Grant | None:
        """The grant of ``given`` (None for no or an unknown token); compares with every token, in constant time."""
        if given is None or not given or len(given) > MAX_TOKEN_CHARS:
            return None
        data = _bytes(given)
        found: Grant | None = None
        for value, grant in self._entries:
            if hmac.compare_digest(data, value) and found is None:
                found = grant
        return found


def _bytes(text: str) -> bytes:
    # surrogatepass: a lone surrogate ("\ud800", valid in JSON) must not raise here
    return text.encode("utf-8", "surrogatepass")


def resolve_token(server: ServerConfig, environ: Mapping[str, str] | None = None) -> Token:
    """``$EMOSTREAM_TOKEN``, else ``[server] token``, else a fresh random token (see :func:`write_token_file`)."""
    env = os.environ if environ is None else environ
    from_env = env.get(TOKEN_ENV)
    if from_env is not None:
        _check_env(TOKEN_ENV, from_env)
        return Token(from_env, "environment")
    if server.token is not None:
        return Token(server.token, "config")
    return Token(secrets.token_urlsafe(24), "generated")


def resolve_tokens(server: ServerConfig, admin: Token, environ: Mapping[str, str] | None = None) -> TokenSet:
    """The admin token plus the read token and ingest tokens of the environment (first) and ``[server]``."""
    env = os.environ if environ is None else environ
    read = env.get(READ_TOKEN_ENV)
    if read is not None:
        _check_env(READ_TOKEN_ENV, read)
    ingest = dict(server.ingest_tokens)
    from_env = env.get(INGEST_TOKEN_ENV)
    if from_env is not None:
        _check_env(INGEST_TOKEN_ENV, from_env)
        ingest["env"] = from_env
    tokens = TokenSet(admin, read if read is not None else server.read_token, ingest)
    values = [admin.value, read or server.read_token, *ingest.values()]
    given = [v for v in values if v is not None]
    if len(set(given)) != len(given):
        raise ConfigError(
            "two token settings have the same value (admin, read and ingest tokens must differ); give each its own "
            "random token"
        )
    return tokens


def _check_env(name: str, value: str) -> None:
    if not MIN_TOKEN_CHARS <= len(value) <= MAX_TOKEN_CHARS or not value.isprintable() or value.strip() != value:
        raise ConfigError(
            f"${name} has {len(value)} characters; expected {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} printable "
            f"characters. Set a long random token, e.g. `export {name}=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe())')`"
        )


def default_token_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where a generated token is written: ``$XDG_RUNTIME_DIR/emostream/``, else ``~/.local/state/emostream/``."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "emostream" / TOKEN_FILE_NAME


def write_token_file(token: Token, path: Path) -> Token:
    """Write a generated token to ``path`` (created with mode 0600, replacing an older one); the token with its file.

    ConfigError (exit 2) when the file cannot be written: the token would be unknown to the operator.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(token.value + "\n")
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(
            f"cannot write the generated token to {path} ({exc.strerror or exc}); set ${TOKEN_ENV} or [server] token "
            "instead, or make that folder writable"
        ) from exc
    return Token(token.value, token.origin, str(path))


def token_from_request(
    headers: Mapping[str, str], query: Mapping[str, str], *, subprotocols: Sequence[str] = (), query_ok: bool = True
) -> str | None:
    """The token a request carries: the bearer header, else a bearer subprotocol, else ``?token=`` (``query_ok``)."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for offered in subprotocols:
        if offered.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return decode_subprotocol_token(offered[len(BEARER_SUBPROTOCOL_PREFIX) :])
    return query.get("token") if query_ok else None


def decode_subprotocol_token(encoded: str) -> str | None:
    """The token of ``emostream.bearer.<base64url>`` (unpadded), or None if it does not decode."""
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def encode_subprotocol_token(token: str) -> str:
    """The subprotocol a WebSocket client offers to carry ``token`` (what the pages do)."""
    return BEARER_SUBPROTOCOL_PREFIX + base64.urlsafe_b64encode(token.encode("utf-8")).decode("ascii").rstrip("=")
