"""The session cookie as a credential for the API, and the CSRF check of its writes."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from httpd.errors import ApiError
from httpd.keys import CLIENT
from httpd.scopes import SESSION_SCOPES, check_scope
from httpd.web.accounts import Accounts, Session

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "SESSION",
    "client_address",
    "is_page",
    "over_tls",
    "session_middleware",
]

COOKIE = "pbxjournal_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION = web.RequestKey("web_session", Session)
#: Paths the pages answer themselves (with a redirect to the sign-in page when needed).
PAGE_PATHS = frozenset({"/", "/login", "/logout"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_page(path: str) -> bool:
    return path in PAGE_PATHS or path.startswith("/static/")


def session_middleware(accounts: Accounts, machines: Middleware, pages: Handler) -> Middleware:
    """Pages are answered by ``pages``; a request with a session cookie and no ``Authorization``
    is the session's user (writes only with its CSRF token); anything else is judged by
    ``machines``, the Basic/Bearer middleware."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_page(request.path):
            return await pages(request)
        token = request.cookies.get(COOKIE)
        if token and hdrs.AUTHORIZATION not in request.headers:
            session = await accounts.session(token)
            if session is not None:
                if request.method not in _SAFE:
                    presented = request.headers.get(CSRF_HEADER, "")
                    if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
                        raise ApiError(
                            403, "csrf_failed", f"{CSRF_HEADER}: missing or not this session's"
                        )
                request[CLIENT] = f"web:{session.account.login}"
                request[SESSION] = session
                check_scope(request, SESSION_SCOPES)
                return await handler(request)
        return await machines(request, handler)

    return middleware


def _trusted(request: web.Request, proxies: tuple[str, ...]) -> bool:
    if not proxies or request.remote is None:
        return False
    try:
        return str(ipaddress.ip_address(request.remote)) in proxies
    except ValueError:
        return False


def over_tls(request: web.Request, proxies: tuple[str, ...]) -> bool:
    """The browser reached us over TLS: directly, or through a trusted proxy that says so."""
    if request.secure:
        return True
    if _trusted(request, proxies):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"
    return False


def client_address(request: web.Request, proxies: tuple[str, ...]) -> str:
    """The browser's address: the peer, or the last hop a trusted proxy forwarded for."""
    if _trusted(request, proxies):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or "?"
