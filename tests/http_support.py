"""The HTTP API under test: the real app on a real port over a journal seeded from the captures.

Every capture goes through the real pipeline (assembler, recordings finder with the real wav
files, rules) into a real SQLite file — once per session, then copied for each test that
writes — or into the PostgreSQL of ``PBXJOURNAL_TEST_PG_URL`` (tests/db.py's conventions).
An in-memory replay of the same captures is the oracle the filters are checked against.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from config import AmiSettings, HttpClient, HttpSettings, Settings, load_settings
from connector.ami import open_session
from connector.fakepbx import FakePbx
from httpd.app import init_app
from pbxjournal.dbtools import replay_events
from pbxjournal.pipeline import build_pipeline
from pbxjournal.replay import capture_events, replay_captures
from storage.directory import ContactRecord, CustomerRecord
from storage.engine import open_database
from storage.journal import JournalEntry
from storage.migrate import upgrade
from storage.store import SqlJournal
from tests.calls import at
from tests.db import fresh_url, make_journal
from tests.scenarios import TRACES, capture
from tests.test_replay import write_config

CAPTURES = sorted(TRACES.glob("*.ami"))
USER, PASSWORD = "1c", "s3cret"
TOKEN = "monitoring-token-0123456789"
CYRILLIC_USER, CYRILLIC_PASSWORD = "бухгалтерия", "пароль-123"
CLIENTS = (
    HttpClient(name="1c", username=USER, password=PASSWORD),
    HttpClient(name="prometheus", token=TOKEN),
    HttpClient(name="accounting", username=CYRILLIC_USER, password=CYRILLIC_PASSWORD),
)
ROMASHKA = CustomerRecord(
    "c-1",
    "ООО Ромашка",
    ("+7 926 555-00-11",),
    (ContactRecord("p-1", "Иванов Пётр", ("8 916 123-45-67",)),),
)
BOUND = {"+79265550011", "+79161234567"}

Maker = Callable[..., Awaitable["Api"]]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


def api_settings(tmp: Path) -> Settings:
    settings = load_settings(write_config(tmp))
    return dataclasses.replace(settings, http=HttpSettings(listen="127.0.0.1:0", clients=CLIENTS))


def memory_entries(settings: Settings) -> list[JournalEntry]:
    """The oracle: the same captures through the in-memory journal."""
    pipeline = build_pipeline(settings)
    for _ in replay_captures(pipeline, CAPTURES):
        pass
    return pipeline.journal.entries()


async def seed(url: str, settings: Settings, *, customers: bool = True) -> None:
    database = open_database(url)
    try:
        await upgrade(database)
        journal = await make_journal(database)
        await replay_events(build_pipeline(settings), journal, capture_events(CAPTURES))
        if customers:
            await journal.upsert_customer(ROMASHKA, now=at("11-28 12:00"))
    finally:
        await database.dispose()


@dataclass
class Seeded:
    """A seeded SQLite file to copy, and the settings it was seeded with."""

    path: Path
    settings: Settings


def seed_sqlite_template(tmp: Path) -> Seeded:
    settings = api_settings(tmp)
    path = tmp / "template.sqlite3"
    asyncio.run(seed(f"sqlite+aiosqlite:///{path}", settings))
    return Seeded(path, settings)


def copy_sqlite(template: Path, target: Path) -> str:
    shutil.copy(template, target)
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{template}{suffix}")
        if extra.exists():
            shutil.copy(extra, Path(f"{target}{suffix}"))
    return f"sqlite+aiosqlite:///{target}"


@dataclass
class Api:
    """A running app and a client with 1C's credentials."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    journal: SqlJournal
    settings: Settings

    @property
    def auth(self) -> dict[str, str]:
        return basic(USER, PASSWORD)

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def call(self, method: str, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", self.auth)
        async with self.client.request(method, path, **kwargs) as response:
            body = await response.read()
            assert response.status == status, (response.status, body[:500])
            if response.content_type == "application/json":
                return await response.json()
            return body

    async def get(self, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        return await self.call("GET", path, status=status, **kwargs)

    async def put(self, path: str, body: Any, *, status: int = 200, **kwargs: Any) -> Any:
        return await self.call("PUT", path, json=body, status=status, **kwargs)

    async def calls(self, **params: Any) -> list[dict[str, Any]]:
        """Every page of ``GET /calls`` with these filters, following the cursor."""
        items: list[dict[str, Any]] = []
        cursor = None
        query = {k: v for k, v in params.items() if v is not None}
        for _ in range(100):
            page_query = dict(query, limit=query.get("limit", 7))
            if cursor:
                page_query["cursor"] = cursor
            page = await self.get("/api/v1/calls", params=page_query)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items
        raise AssertionError("cursor never ended")


async def originating_api(make_api: Maker, stack: contextlib.AsyncExitStack) -> Api:
    """An app whose clients all have the ``originate`` scope too, and whose originator speaks
    AMI over a real TCP session to the fake PBX (capture 18 answering ``Originate``). No
    daemon reads that session's events: a request stays as the PBX's answer left it."""
    from pbxjournal.originate import Originator

    pbx = FakePbx([], speed=0, click_to_call=capture("18-click-to-call-originate"))
    port = await pbx.start()
    stack.push_async_callback(pbx.close)
    session = await open_session(AmiSettings(port=port))
    stack.push_async_callback(session.close)
    plain = await make_api()
    clients = tuple(dataclasses.replace(c, scopes=("read", "write", "originate")) for c in CLIENTS)
    settings = dataclasses.replace(
        plain.settings, http=HttpSettings(listen="127.0.0.1:0", clients=clients)
    )
    originator = Originator(settings, session.send_action, lambda: [])
    return await make_api(settings=settings, originator=originator)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_sqlite_template(tmp_path_factory.mktemp("http-template"))


@pytest.fixture
async def make_api(
    aiohttp_client: Any, tmp_path: Path, sqlite_template: Seeded
) -> AsyncIterator[Maker]:
    """``await make_api(engine="sqlite"|"postgresql", settings=..., **init_app_kwargs)`` →
    :class:`Api` (``settings`` replaces the seeded ones for the app, e.g. other clients)."""
    databases = []
    clients = []

    async def make(engine: str = "sqlite", settings: Settings | None = None, **kwargs: Any) -> Api:
        settings = settings or sqlite_template.settings
        if engine == "sqlite":
            url = copy_sqlite(sqlite_template.path, tmp_path / f"journal-{len(databases)}.sqlite3")
        else:
            url = await fresh_url(engine, tmp_path)
            await seed(url, settings)
        database = open_database(url)
        databases.append(database)
        journal = await make_journal(database)
        kwargs.setdefault("merged_cache", tmp_path / "merged")
        app = init_app(settings, journal, **kwargs)
        client = await aiohttp_client(app)
        clients.append(client)
        return Api(client, app, journal, settings)

    try:
        yield make
    finally:
        for client in clients:  # the app (and its feed) stops before its database goes
            await client.close()
        for database in databases:
            await database.dispose()
