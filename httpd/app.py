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
    runner = web.AppRunner(app, access_log=None)   # httpd logs access itself
    await runner.setup(); await web.TCPSite(runner, host, port).start()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from config import Settings
from httpd import calls, directory, recordings, system
from httpd.audio import MergedRecordings
from httpd.auth import Authenticator, auth_middleware
from httpd.errors import error_middleware
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
    SETTINGS,
    STATUS,
    WORKERS,
)
from httpd.metrics import Metrics, observe_middleware
from httpd.protocols import DaemonStatus, LiveCalls
from storage.store import SqlJournal

__all__ = ["change_feed", "init_app"]

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
) -> web.Application:
    """The API over ``journal``.

    ``live`` and ``status`` come from the daemon (None on a stateless front end);
    ``merged_cache`` is where merged recordings are kept (default: a private per-user
    directory, :func:`httpd.audio.default_cache_directory`); ``feed`` may be passed in to
    share one feed between apps.
    """
    feed = feed or ChangeFeed(journal)
    metrics = Metrics(status, feed)
    authenticator = Authenticator(settings.http.clients)
    app = web.Application(
        middlewares=[
            observe_middleware(metrics),
            error_middleware,
            auth_middleware(authenticator),
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
