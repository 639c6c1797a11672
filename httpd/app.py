"""The HTTP API application: :func:`init_app` builds it, the daemon runs it.

Theory of operation
-------------------
``init_app(settings, journal, ...)`` returns a ``web.Application`` with every route of
DESIGN section 5 and owns, through ``cleanup_ctx``, what lives as long as it does: the change
feed's background tasks (:mod:`httpd.feed`) and the worker threads that merge recordings. The
journal (its database engines) belongs to the caller, who opened it and disposes of it.

Middlewares, outermost first: metrics and the access log (they see the final status), JSON
errors (every refusal and every unexpected exception becomes ``{"error": ...}``), then
authentication (everything but ``/healthz``).

What the daemon does with it::

    journal = SqlJournal(database, ...)
    app = init_app(settings, journal, live=lambda: snapshot(pipeline.assembler),
                   status=daemon_status, merged_cache=state_dir / "merged")
    feed = change_feed(app)
    ...
    changes = await journal.write(call, recordings, now)
    feed.committed(changes)            # wakes GET /changes long-polls at once
    ...
    runner = await start_http(app, settings.http)   # the port bound, the limits armed
    ...
    await runner.cleanup()

Serving: what a client *sends* is bounded
-----------------------------------------
:func:`start_http` serves the app through a :class:`_GuardedHandler`, aiohttp's
``RequestHandler`` (the protocol of one connection) with what aiohttp lacks:

- ``http.header_timeout``: the request line and headers must arrive within it, counted from
  the connection or from the first byte of the next request on a kept-alive one; else a 408
  and the connection is closed (a silent connection, headers trickled a byte at a time).
- ``http.body_timeout``: the whole body within it after the head; else the handler reading it
  gets an ``ApiError`` 408 and the connection is closed after the answer.
- ``http.idle_timeout``: aiohttp's own keep-alive timeout, between requests.
- ``http.max_connections``: one connection more is answered 503 and closed.

A handler that is slow to answer (the ``/changes`` long-poll) is not limited: the clock runs
only while the server waits for the client.

Requests aiohttp's parser refuses (bare LF, folded or binary headers, raw non-ASCII in the
URL, oversized heads) never reach the app. aiohttp would log them with a traceback holding
the raw bytes (credentials, numbers) and answer them in text/plain with those bytes; the
guarded handler answers our JSON error instead (400, 431 for oversized heads), with a
reason built from the parser's fixed words, and logs one line without any request bytes.
The subclass is chosen over a logging filter because it fixes both the log and the answer in
one place; pbxjournal.logs still strips exception text from aiohttp's loggers as a second
line of defence.
"""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from config import HttpSettings, Settings
from httpd import calls, directory, originate, recordings, system
from httpd.audio import MergedRecordings
from httpd.auth import Authenticator, auth_middleware
from httpd.errors import ApiError, error_body, error_middleware, json_response
from httpd.feed import ChangeFeed
from httpd.health import HealthProbe
from httpd.keys import (
    FEED,
    HEALTH,
    JOURNAL,
    LIVE,
    MERGE_SLOTS,
    MERGED,
    METRICS,
    ORIGINATOR,
    SETTINGS,
    STATUS,
    WORKERS,
)
from httpd.metrics import Metrics, observe_middleware
from httpd.protocols import DaemonStatus, LiveCalls, Originator
from httpd.web import Accounts, serve_page, session_middleware, setup_pages
from storage.store import SqlJournal

__all__ = ["change_feed", "init_app", "start_http"]

log = structlog.get_logger("pbxjournal.http")

#: Worker threads merging recordings, and merges allowed to wait for one.
MERGE_WORKERS = 2
MERGE_QUEUE = 8


def init_app(
    settings: Settings,
    journal: SqlJournal,
    *,
    live: LiveCalls | None = None,
    status: DaemonStatus | None = None,
    feed: ChangeFeed | None = None,
    merged_cache: Path | None = None,
    merged_cache_bytes: int = 512 * 1024 * 1024,
    originator: Originator | None = None,
) -> web.Application:
    """The API over ``journal``.

    ``live``, ``status`` and ``originator`` (click-to-call) come from the daemon (None on a
    stateless front end);
    ``merged_cache`` is where merged recordings are kept (default: a private per-user
    directory, :func:`httpd.audio.default_cache_directory`); ``feed`` may be passed in to
    share one feed between apps.
    """
    feed = feed or ChangeFeed(journal)
    metrics = Metrics(status, feed)
    authenticator = Authenticator(settings.http.clients)
    # The web journal's people (httpd.web): a session cookie is a credential too.
    accounts = Accounts(journal.database)
    app = web.Application(
        middlewares=[
            observe_middleware(metrics),
            error_middleware,
            session_middleware(accounts, auth_middleware(authenticator), serve_page),
        ],
        # Bodies are read by the handlers with their own limits (httpd.params.read_json);
        # this is the ceiling for the largest, the customer import.
        client_max_size=directory.IMPORT_BODY_LIMIT,
    )
    app[SETTINGS] = settings
    app[JOURNAL] = journal
    app[FEED] = feed
    app[METRICS] = metrics
    app[HEALTH] = HealthProbe(journal, status)
    app[LIVE] = live
    app[STATUS] = status
    app[ORIGINATOR] = originator
    app[MERGED] = MergedRecordings(merged_cache, max_bytes=merged_cache_bytes)
    app[MERGE_SLOTS] = asyncio.Semaphore(MERGE_QUEUE)
    # Threads start on first use; the cleanup context shuts them down with the app.
    app[WORKERS] = ThreadPoolExecutor(MERGE_WORKERS, thread_name_prefix="merge-recording")
    app.cleanup_ctx.append(_feed_context)
    app.cleanup_ctx.append(_workers_context)
    app.on_shutdown.append(_release_long_polls)
    app.add_routes(calls.routes)
    app.add_routes(recordings.routes)
    app.add_routes(directory.routes)
    app.add_routes(system.routes)
    app.add_routes(originate.routes)
    setup_pages(app, accounts)
    return app


def change_feed(app: web.Application) -> ChangeFeed:
    """The feed to tell about commits made outside the app: ``change_feed(app).committed(c)``."""
    return app[FEED]


async def _feed_context(app: web.Application) -> AsyncIterator[None]:
    async with app[FEED].running():
        yield


async def _workers_context(app: web.Application) -> AsyncIterator[None]:
    try:
        yield
    finally:
        app[WORKERS].shutdown(wait=True, cancel_futures=True)


async def _release_long_polls(app: web.Application) -> None:
    app[FEED].close()


# -- serving: the limits on what a client sends ------------------------------------------------


async def start_http(app: web.Application, http: HttpSettings) -> web.AppRunner:
    """Serve ``app`` on ``http.listen`` with ``http``'s timeouts and connection cap.

    Returns the started runner (``runner.addresses`` is what was bound; ``cleanup()`` stops
    it). httpd logs access itself (:func:`httpd.metrics.observe_middleware`).
    """
    _check_descriptors(http.max_connections)
    runner = _GuardedRunner(app, http, access_log=None, keepalive_timeout=http.idle_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, http.host, http.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


#: Descriptors the daemon needs besides the client connections: the database, the AMI, the
#: recordings being read or merged, the journal's files, Python's own.
_SPARE_DESCRIPTORS = 128


def _check_descriptors(max_connections: int) -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + _SPARE_DESCRIPTORS > soft:
        log.warning(
            "http.max_connections is close to the open files limit; raise LimitNOFILE",
            max_connections=max_connections,
            open_files_limit=soft,
        )


class _GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose server speaks through :class:`_GuardedHandler`."""

    def __init__(self, app: web.Application, http: HttpSettings, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._http = http

    async def _make_server(self) -> web.Server:
        # aiohttp's Server builds a plain RequestHandler per connection; the guarded server
        # takes over what the app's server was given (handler, request factory, kwargs).
        return _GuardedServer(await super()._make_server(), self._http)


class _GuardedServer(web.Server):
    def __init__(self, plain: web.Server, http: HttpSettings) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=self._request,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )
        self._app_request = plain.request_factory
        self.http = http
        self._refusals = _Throttled("http connection refused: too many connections")
        self._timeouts = _Throttled("http request timed out")

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)

    def _request(
        self,
        message: Any,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        # Called once the head of a request is parsed and its turn has come.
        request = self._app_request(message, payload, protocol, writer, task)
        if isinstance(protocol, _GuardedHandler):
            protocol.head_received(payload)
        return request


class _Throttled:
    """One log line per ``every`` seconds for an event that a hostile client can repeat at
    will, with how many were not logged in between."""

    def __init__(self, event: str, every: float = 60.0) -> None:
        self._event = event
        self._every = every
        self._next = 0.0
        self._quiet = 0

    def note(self, **fields: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._quiet += 1
            return
        log.warning(self._event, **fields, not_logged_since_last=self._quiet)
        self._next = now + self._every
        self._quiet = 0


class _GuardedHandler(RequestHandler):
    """One client connection: aiohttp's protocol plus the head/body timeouts, the connection
    cap, and JSON answers without request bytes for what the parser refuses."""

    def __init__(self, manager: _GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guarded = manager
        self._http = manager.http
        # "head": waiting for a request's line and headers (timed); "body": for its body
        # (timed); "busy": the app has it; "idle": kept alive between requests (aiohttp's
        # keep-alive timeout).
        self._phase = "head"
        self._timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the current (or last) request's body
        self._body_late = False
        self._refused = False

    # connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self._guarded.connections) >= self._http.max_connections:
            self._refused = True
            self._guarded._refusals.note(limit=self._http.max_connections)
            _answer_raw(
                transport,
                503,
                "Service Unavailable",
                "too_many_connections",
                "too many connections; retry",
                extra="Retry-After: 1\r\n",
            )
            return
        super().connection_made(transport)
        self._arm(self._http.header_timeout, self._head_late)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # On a kept-alive connection the head's clock starts with the next request's bytes,
        # not with the rest of a body aiohttp still reads after an early answer (a 401).
        previous = self._body
        if (
            self._phase == "idle"
            and data
            and self.transport is not None
            and (previous is None or previous.is_eof())
        ):
            self._phase = "head"
            self._arm(self._http.header_timeout, self._head_late)

    # the request's life

    def head_received(self, payload: StreamReader) -> None:
        self._disarm()
        self._body = payload
        self._body_late = False
        if payload.is_eof():
            self._phase = "busy"
            return
        self._phase = "body"
        self._arm(self._http.body_timeout, self._body_is_late)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        self._disarm()
        late = self._body_late
        if late and isinstance(resp, web.StreamResponse):
            resp.force_close()
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._phase = "idle"
            if late:
                self.force_close()  # the rest of the body is not worth waiting for

    def _head_late(self) -> None:
        self._timer = None
        if self._phase != "head" or self.transport is None:
            return
        self._guarded._timeouts.note(part="headers", limit=self._http.header_timeout)
        _answer_raw(
            self.transport,
            408,
            "Request Timeout",
            "request_timeout",
            f"request headers not received within {self._http.header_timeout:g}s",
        )
        self.force_close()

    def _body_is_late(self) -> None:
        self._timer = None
        body = self._body
        if self._phase != "body" or body is None or body.is_eof():
            return
        self._body_late = True
        self._guarded._timeouts.note(part="body", limit=self._http.body_timeout)
        body.set_exception(
            ApiError(
                408,
                "request_timeout",
                f"request body not received within {self._http.body_timeout:g}s",
            )
        )

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self._loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # errors: our JSON, and never the request's bytes in a log

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            status, code, text = parser_problem(exc)
            log.info("http request rejected", status=status, reason=text, peer=request.remote)
        elif status == 504:
            code, text = "timeout", "the request took too long"
            log.warning("http handler timed out", peer=request.remote)
        else:
            code, text = "internal_error", "internal error; the server log has the details"
            log.error(
                "http request failed outside the app",
                status=status,
                error=type(exc).__name__ if exc is not None else None,
            )
        if request.writer.output_size > 0:
            # Part of an answer is out: the connection is broken (aiohttp's contract).
            raise ConnectionError("response already started, cannot send an error")
        response = json_response(error_body(code, text), status=status)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp's other error paths: the message template only, never the exception's text
        # (it may quote the request) and never its traceback.
        exc_info = kwargs.get("exc_info")
        error = type(exc_info).__name__ if isinstance(exc_info, BaseException) else None
        log.error("http server error", what=str(args[0]) if args else "", error=error)


#: A reason from aiohttp's parser worth repeating: its fixed words (letters, "can't"), never
#: the quoted request bytes that follow them.
_REASON = re.compile(r"[A-Za-z]+(?:'[a-z]+)?(?:[ ,/-]+[A-Za-z]+(?:'[a-z]+)?)*/?")


def parser_problem(exc: HttpProcessingError) -> tuple[int, str, str]:
    """Status, code and message for a request aiohttp's parser refused, without its bytes."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        over = f" (over {limit} bytes)" if limit is not None else ""
        return 431, "header_too_large", f"request line or header field too long{over}"
    if exc.message.startswith("Too many headers"):
        return 431, "header_too_large", "too many header fields"
    parts: list[str] = []
    for line in exc.message.splitlines():
        text = line.strip().removesuffix(":").strip()
        if not text:
            continue
        if not _REASON.fullmatch(text) or len(parts) == 2:
            break
        parts.append(text)
    reason = ": ".join(parts)[:160] or "unreadable request"
    return 400, "bad_request", f"malformed HTTP request: {reason}"


def _answer_raw(
    transport: asyncio.BaseTransport,
    status: int,
    phrase: str,
    code: str,
    message: str,
    *,
    extra: str = "",
) -> None:
    """A JSON error written straight to a connection no request object exists for, which is
    then closed (once the answer is flushed)."""
    body = json_response(error_body(code, message)).body
    assert isinstance(body, bytes)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.write(head.encode("ascii") + body)
    transport.close()
