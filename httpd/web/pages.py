"""The pages: the journal at ``/``, signing in and out, the static files."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
import structlog
from aiohttp import web

from config import Settings
from httpd.keys import SETTINGS
from httpd.web.accounts import Accounts, Session, SignInThrottle
from httpd.web.session import COOKIE, client_address, over_tls

__all__ = ["ACCOUNTS", "serve_page", "setup_pages"]

log = structlog.get_logger("pbxjournal.web")

ACCOUNTS = web.AppKey("accounts", Accounts)
THROTTLE = web.AppKey("sign_in_throttle", SignInThrottle)
_TEMPLATES = web.AppKey("templates", jinja2.Environment)
_ASSETS = web.AppKey("asset_version", str)

HERE = Path(__file__).parent
STATIC = HERE / "static"
#: A pre-session cookie whose value the sign-in form repeats (double submit): a form posted
#: from another site cannot know it, so nobody can be signed in to someone else's account.
LOGIN_COOKIE = "pbxjournal_login"
_LOGIN_MAX = 64
_PASSWORD_MAX = 1024

#: No inline script or style anywhere: everything comes from /static/ of this origin.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def setup_pages(app: web.Application, accounts: Accounts) -> None:
    app[ACCOUNTS] = accounts
    app[THROTTLE] = SignInThrottle()
    app[_TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app[_ASSETS] = _asset_version()


PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The pages are not routes of the app's router: its routes are the JSON API, exactly what
#: the OpenAPI document describes (a test holds them equal). :func:`serve_page` answers them.
_PAGES: dict[str, dict[str, PageHandler]] = {}


async def serve_page(request: web.Request) -> web.StreamResponse:
    """The page at ``request.path`` (see :func:`httpd.web.session.is_page`)."""
    if request.path.startswith("/static/"):
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        return await static_file(request, request.path.removeprefix("/static/"))
    methods = _PAGES.get(request.path)
    if methods is None:
        raise web.HTTPNotFound()
    handler = methods.get("GET" if request.method == "HEAD" else request.method)
    if handler is None:
        raise web.HTTPMethodNotAllowed(request.method, sorted(methods))
    return await handler(request)


def _asset_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


#: The page's modules, fetched at once (<link rel="modulepreload">) rather than in rounds as
#: each import is discovered.
MODULES = tuple(sorted(p.name for p in STATIC.glob("*.js")))


def _render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    html = (
        request.app[_TEMPLATES]
        .get_template(template)
        .render(assets=request.app[_ASSETS], modules=MODULES, **values)
    )
    return web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


async def _session(request: web.Request) -> Session | None:
    token = request.cookies.get(COOKIE)
    return await request.app[ACCOUNTS].session(token) if token else None


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never ``//host`` or a scheme) to go to after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**_HEADERS, "Location": location})


def _cookie(
    response: web.StreamResponse, request: web.Request, name: str, value: str, max_age: int | None
) -> None:
    settings: Settings = request.app[SETTINGS]
    response.set_cookie(
        name,
        value,
        path="/",
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=over_tls(request, settings.http.trusted_proxies),
    )


async def journal_page(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is None:
        return _see_other("/login?next=" + quote(request.path_qs, safe=""))
    settings: Settings = request.app[SETTINGS]
    account = session.account
    return _render(
        request,
        "journal.html",
        account=account,
        csrf=session.csrf,
        timezone=settings.pbx.timezone,
        pbx=settings.pbx.name,
    )


async def login_page(request: web.Request) -> web.StreamResponse:
    target = _safe_next(request.query.get("next"))
    if await _session(request) is not None:
        return _see_other(target)
    return _login_form(request, target)


def _login_form(
    request: web.Request,
    target: str,
    *,
    error: str | None = None,
    login: str = "",
    status: int = 200,
) -> web.Response:
    form_token = secrets.token_urlsafe(24)
    response = _render(
        request, "login.html", status=status, error=error, login=login, next=target, form=form_token
    )
    _cookie(response, request, LOGIN_COOKIE, form_token, None)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    login = str(form.get("login", "")).strip()[:_LOGIN_MAX]
    password = str(form.get("password", ""))[:_PASSWORD_MAX]
    target = _safe_next(str(form.get("next", "/")))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    presented = str(form.get("form", ""))
    if not expected or not hmac.compare_digest(expected.encode(), presented.encode()):
        return _login_form(
            request, target, error="Форма устарела, войдите ещё раз.", login=login, status=400
        )
    settings: Settings = request.app[SETTINGS]
    throttle = request.app[THROTTLE]
    keys = [
        f"login:{login.casefold()}",
        f"address:{client_address(request, settings.http.trusted_proxies)}",
    ]
    now = time.monotonic()
    wait = throttle.wait(keys, now)
    if wait > 0:
        seconds = int(wait) + 1
        response = _login_form(
            request,
            target,
            error=f"Слишком много неудачных попыток. Повторите через {seconds} с.",
            login=login,
            status=429,
        )
        response.headers["Retry-After"] = str(seconds)
        return response
    account = await request.app[ACCOUNTS].authenticate(login, password)
    if account is None:
        throttle.failed(keys, now)
        log.info("web sign-in failed", peer=request.remote)
        return _login_form(
            request, target, error="Неверный логин или пароль.", login=login, status=401
        )
    throttle.succeeded(keys[0])
    session = await request.app[ACCOUNTS].open_session(account)
    log.info("web sign-in", login=account.login)
    response = _see_other(target)
    _cookie(response, request, COOKIE, session.token, None)
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = request.cookies.get(COOKIE, "")
    session = await _session(request)
    if session is not None:
        presented = str(form.get("csrf", ""))
        if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
            return _see_other("/")
        await request.app[ACCOUNTS].close_session(token)
    response = _see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


async def static_file(request: web.Request, name: str) -> web.StreamResponse:
    path = STATIC / name
    # Only the files of the directory itself, by exact name: no traversal to judge.
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise web.HTTPNotFound()
    version = request.app[_ASSETS]
    etag = f'"{version}-{name}"'
    headers = {
        # A URL with the assets' version never changes: the browser keeps it. The modules
        # it imports (./api.js...) are asked again, and a 304 answers while nothing changed.
        "Cache-Control": "public, max-age=31536000, immutable"
        if request.query.get("v") == version
        else "no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=path.read_bytes(),
        content_type=_TYPES[path.suffix],
        charset="utf-8",
        headers=headers,
    )


_PAGES.update(
    {
        "/": {"GET": journal_page},
        "/login": {"GET": login_page, "POST": sign_in},
        "/logout": {"POST": sign_out},
    }
)
