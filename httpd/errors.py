"""JSON errors: ``{"error": {"code", "message"}}`` with a fitting status (DESIGN section 5).

Handlers raise :class:`ApiError`; :func:`error_middleware` turns it, aiohttp's own HTTP
exceptions (unknown path, wrong method, body too large) and anything unexpected into the same
JSON shape. A database that cannot be reached (connection refused, locked past its timeout)
is a 503 ``database_unavailable`` with ``Retry-After``: the request was fine. A client that
goes away while its body is read is not a database outage: that is noted at debug level, and
a body aiohttp cannot decode (a broken chunk) is a 400 that does not quote it. Anything else
unexpected is a bug: it is logged with its traceback (the route template, never the path,
which may hold a phone number) and answered with a bare 500 that tells the client nothing
about the internals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

__all__ = ["ApiError", "error_body", "error_middleware", "json_response"]

log = structlog.get_logger("pbxjournal.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}


class ApiError(Exception):
    """A request the API refuses: status, a stable machine code and a human message."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def json_response(data: Any, *, status: int = 200, headers: Any = None) -> web.Response:
    # orjson writes the UTF-8 bytes the standard library's json.dumps(ensure_ascii=False,
    # compact separators) would, byte for byte for call objects, about ten times faster: on a
    # page of 500 calls of GET /changes, encoding was a fifth of the handler's time.
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "bad_request" if exc.status < 500 else "internal_error")
    message = exc.reason
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"method not allowed here; allowed: {allowed}"
    elif exc.status == 404:
        message = "no such endpoint"
    elif exc.status == 413:
        message = "request body too large"
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
    return json_response(error_body(code, message), status=exc.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(
            error_body(exc.code, exc.message), status=exc.status, headers=exc.headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not errors
        return _from_http_exception(exc)
    except (RequestPayloadError, HttpProcessingError) as exc:
        # The body's framing is broken (a bad chunk, a truncated or corrupt encoding); the
        # exception's text may quote the body, so only its class is logged.
        log.info("http request body unreadable", route=_route(request), error=type(exc).__name__)
        response = json_response(
            error_body("invalid_body", "the request body could not be read (broken framing)"),
            status=400,
        )
        response.force_close()
        return response
    except (OSError, DBAPIError) as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            # The client went away (mid-body, say): nobody to answer, nothing wrong here.
            log.debug("http client disconnected", route=_route(request))
            return json_response(
                error_body("client_disconnected", "the client closed the connection"),
                status=400,
            )
        if (
            isinstance(exc, DBAPIError)
            and not exc.connection_invalidated
            and not isinstance(exc, OperationalError | InterfaceError)
        ):
            log.exception("database error", method=request.method, route=_route(request))
            return _internal()
        # The database is down or locked past its timeout: the request was fine, retry later.
        log.warning("database unavailable", route=_route(request), error=type(exc).__name__)
        return json_response(
            error_body("database_unavailable", "the journal database is unavailable; retry"),
            status=503,
            headers={"Retry-After": "5"},
        )
    except Exception:
        log.exception("unhandled error", method=request.method, route=_route(request))
        return _internal()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _internal() -> web.Response:
    return json_response(
        error_body("internal_error", "internal error; the server log has the details"),
        status=500,
    )
