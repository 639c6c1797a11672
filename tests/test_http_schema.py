"""schemathesis against the OpenAPI document, on the real server over a seeded journal.

Requests are generated from :func:`httpd.openapi.document` (valid ones and, for the checks
that expect a 4xx, invalid ones) and sent with 1C's credentials to the app running on a real
port in a thread of its own; every response must match the document, and none may be a 5xx.
The examples per operation are bounded so that CI spends seconds here, not minutes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from httpd.app import init_app
from httpd.openapi import document
from storage.engine import open_database
from tests.db import make_journal
from tests.http_support import PASSWORD, USER, Seeded, basic, copy_sqlite

MAX_EXAMPLES = 30

schema = schemathesis.openapi.from_dict(document())
schema.config.generation.update(modes=["positive", "negative"], max_examples=MAX_EXAMPLES)


class Server:
    """The app on 127.0.0.1, port 0, served by a loop in its own thread."""

    def __init__(self, url: str, settings_: object, cache: Path) -> None:
        self.database_url = url
        self.settings = settings_
        self.cache = cache
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.base_url = ""
        self.thread = threading.Thread(target=self._run, name="api-under-test", daemon=True)
        self.runner: web.AppRunner | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.database = open_database(self.database_url)
        journal = await make_journal(self.database)
        app = init_app(self.settings, journal, merged_cache=self.cache)  # type: ignore[arg-type]
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        await self.database.dispose()

    def __enter__(self) -> Server:
        self.thread.start()
        assert self.ready.wait(30), "the API did not start"
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def server(sqlite_template: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    url = copy_sqlite(sqlite_template.path, tmp / "journal.sqlite3")
    with Server(url, sqlite_template.settings, tmp / "merged") as running:
        yield running


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_response_matches_the_document(case: schemathesis.Case, server: Server) -> None:
    case.call_and_validate(
        base_url=server.base_url,
        headers=basic(USER, PASSWORD),
        timeout=30,
        # A schema cannot say what only the journal knows (a cursor it made, a string that is
        # a phone number, from before to): those are refused with a 4xx naming the parameter,
        # which the other checks hold to the document. Everything else is checked.
        excluded_checks=[positive_data_acceptance],
    )
