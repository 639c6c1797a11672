"""HTTP Basic and Bearer authentication against ``[[http.clients]]`` (DESIGN section 5).

1C's ``HTTPСоединение`` sends Basic credentials natively; scripts and monitoring prefer a
Bearer token. Every configured secret is compared with :func:`hmac.compare_digest`, and every
client is tried whatever matched before, so the time an answer takes says nothing about which
part of a guess was right. Credentials are never logged: the request carries the *name* of the
client that authenticated (``request["client"]``), which the access log shows, and its
scopes are checked against the route (:mod:`httpd.scopes`: 403 ``missing_scope``).

Every path but ``/healthz`` needs credentials, unknown paths included (an anonymous caller
learns nothing about which endpoints exist). A request with more than one ``Authorization``
header is refused (400 ``invalid_header``) rather than judged by one of them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from config import HttpClient
from httpd.errors import ApiError
from httpd.keys import CLIENT
from httpd.scopes import check_scope

__all__ = ["OPEN_PATHS", "Authenticator", "Principal", "auth_middleware"]

OPEN_PATHS = frozenset({"/healthz"})
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="pbxjournal", charset="UTF-8"'}
#: Longest Authorization header worth decoding (a token or user:password, base64).
_MAX_HEADER = 4096


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request authenticated as: the client's name and its scopes."""

    client: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Secret:
    principal: Principal
    username: bytes | None
    password: bytes | None
    token: bytes | None


class Authenticator:
    def __init__(self, clients: Iterable[HttpClient]) -> None:
        self._secrets = tuple(
            _Secret(
                principal=Principal(c.name, frozenset(c.scopes)),
                username=c.username.encode() if c.username is not None else None,
                password=c.password.encode() if c.password is not None else None,
                token=c.token.encode() if c.token is not None else None,
            )
            for c in clients
        )

    def __len__(self) -> int:
        return len(self._secrets)

    def basic(self, username: bytes, password: bytes) -> Principal | None:
        found = None
        for secret in self._secrets:
            if secret.username is None or secret.password is None:
                continue
            # Both halves compared every time (no short-circuit on a wrong user name).
            user_ok = hmac.compare_digest(secret.username, username)
            password_ok = hmac.compare_digest(secret.password, password)
            if user_ok & password_ok and found is None:
                found = secret.principal
        return found

    def bearer(self, token: bytes) -> Principal | None:
        found = None
        for secret in self._secrets:
            if secret.token is None:
                continue
            if hmac.compare_digest(secret.token, token) and found is None:
                found = secret.principal
        return found

    def identify(self, header: str | None) -> Principal | None:
        """The client for an ``Authorization`` header, or None."""
        if not header or len(header) > _MAX_HEADER:
            return None
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return self.bearer(value.encode("utf-8", "surrogateescape"))
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return None
            username, colon, password = decoded.partition(b":")
            if not colon:
                return None
            return self.basic(username, password)
        return None


def auth_middleware(
    authenticator: Authenticator,
) -> Middleware:
    @web.middleware
    async def middleware(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        presented = request.headers.getall(hdrs.AUTHORIZATION, [])
        if len(presented) > 1:
            # Which one would count is a matter of which proxy or library looks: refuse both.
            raise ApiError(400, "invalid_header", "more than one Authorization header")
        principal = authenticator.identify(presented[0] if presented else None)
        if principal is None:
            wrong = hdrs.AUTHORIZATION in request.headers
            raise ApiError(
                401,
                "unauthorized",
                "wrong credentials" if wrong else "credentials required (HTTP Basic or Bearer)",
                headers=_CHALLENGE,
            )
        request[CLIENT] = principal.client
        check_scope(request, principal.scopes)
        return await handler(request)

    return middleware
