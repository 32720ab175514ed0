"""The bearer token of ``emostream serve``: where it comes from and how a request proves it.

Every endpoint that carries data needs the token, given as ``Authorization: Bearer <T>``,
as ``?token=<T>`` (browsers cannot set headers on a WebSocket) or, on ``/twilio`` only,
as the stream's custom parameter ``token`` (Twilio cannot add headers or a query string
to the stream URL; see :mod:`emostream.server.twilio`). Comparisons are constant-time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from emostream.errors import ConfigError
from emostream.server.config import MIN_TOKEN_CHARS, TOKEN_ENV, ServerConfig


@dataclass(frozen=True)
class Token:
    """The server's token and where it came from (``environment``, ``config`` or ``generated``)."""

    value: str
    origin: str

    def matches(self, given: str | None) -> bool:
        """Whether ``given`` is the token (constant-time)."""
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self.value.encode("utf-8"))


def resolve_token(server: ServerConfig, environ: Mapping[str, str] | None = None) -> Token:
    """``$EMOSTREAM_TOKEN``, else ``[server] token``, else a fresh random token (printed at start-up)."""
    env = os.environ if environ is None else environ
    from_env = env.get(TOKEN_ENV)
    if from_env is not None:
        if len(from_env) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"${TOKEN_ENV} has {len(from_env)} characters; expected at least {MIN_TOKEN_CHARS}. Set a long random "
                "token, e.g. `export EMOSTREAM_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe())')`"
            )
        return Token(from_env, "environment")
    if server.token is not None:
        return Token(server.token, "config")
    return Token(secrets.token_urlsafe(24), "generated")


def token_from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token a request carries: the bearer header first, else the ``token`` query parameter."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query.get("token")
