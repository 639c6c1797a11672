"""Attacks on the change feed and on journal cursors (issue "Holes found by attacking the
daemon", points 2 and 4).

- A client's ``since`` never moves server state: a ``since`` ahead of the journal is a 409
  carrying the journal's ``journal_id`` and ``last_version`` (1C then re-reads from 0), and
  the feed's version, its metric and its long-polls are as if the request never came.
- The journal has an identity (``journal_state.journal_id``, a UUID made by the migration
  that creates or upgrades the database), in every ``/changes`` answer.
- A cursor is validated part by part: a forged one is a 400 ``invalid_cursor`` naming the
  parameter (``GET /calls``) or one line and exit status 2 (``pbxjournal calls``), never a
  500 or a traceback.

Everything runs against the real app on a real port over a real SQLite file or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.assembly import Direction
from httpd.app import change_feed
from storage.engine import Database, open_database
from storage.migrate import upgrade
from storage.queries import (
    CursorError,
    SinceAheadError,
    changes,
    decode_cursor,
    encode_cursor,
    journal_identity,
)
from tests.calls import at, make_call
from tests.db import ENGINES
from tests.http_support import TOKEN, Api, Maker, copy_sqlite
from tests.test_replay import run_cli, write_config

_numbers = itertools.count(1)
AHEAD = 999_999_999_999


def new_call() -> Any:
    return make_call(
        Direction.INCOMING,
        f"+7998{next(_numbers):07d}",
        at("11-28 09:00") + next(_numbers),
        answered=True,
    )


async def write(api: Api) -> list[Any]:
    """What the daemon does for each finished call: write, then tell the feed."""
    call = new_call()
    written = await api.journal.write(call, [], call.ended_at)
    change_feed(api.app).committed(written)
    return written


async def metric_version(api: Api) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with api.client.get("/metrics", headers=headers) as response:
        assert response.status == 200
        text = await response.text()
    found = re.search(r"^pbxjournal_journal_version (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


async def head(api: Api) -> dict[str, Any]:
    """A /changes answer at the journal's newest version (every row read)."""
    since = 0
    for _ in range(100):
        page: dict[str, Any] = await api.get(
            "/api/v1/changes", params={"since": since, "limit": 1000}
        )
        if not page["items"]:
            return page
        since = page["last_version"]
    raise AssertionError("the feed never ended")


# -- point 2: a since ahead of the journal ----------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_since_ahead_of_the_journal_is_a_409_and_moves_no_server_state(
    engine: str, make_api: Maker
) -> None:
    api = await make_api(engine)
    feed = change_feed(api.app)
    now = await head(api)
    last, journal_id = now["last_version"], now["journal_id"]
    assert await metric_version(api) == last

    refused = await api.get("/api/v1/changes", params={"since": AHEAD, "wait": 0.1}, status=409)
    assert refused["error"]["code"] == "journal_changed"
    assert "since" in refused["error"]["message"]
    assert refused["journal_id"] == journal_id
    assert refused["last_version"] == last
    # A plain poll too (no wait), and a since one above the journal.
    for since in (AHEAD, last + 1):
        again = await api.get("/api/v1/changes", params={"since": since}, status=409)
        assert again["last_version"] == last
    assert feed.version == last
    assert await metric_version(api) == last

    # A normal long-poll waits quietly (no query loop) and is woken by the next commit.
    waiting = asyncio.create_task(api.get("/api/v1/changes", params={"since": last, "wait": 10}))
    async with asyncio.timeout(5):
        while feed.waiting < 1:  # noqa: ASYNC110 (a test watching a counter)
            await asyncio.sleep(0.005)
    queried = feed.answers_from_database
    await asyncio.sleep(0.3)  # a window in which a poisoned feed queried ~30 times
    assert feed.answers_from_database - queried <= 1
    assert not waiting.done()
    written = await write(api)
    committed = time.perf_counter()
    page = await asyncio.wait_for(waiting, 5)
    assert time.perf_counter() - committed < 0.5
    assert [i["version"] for i in page["items"]] == [c.version for c in written]
    assert page["journal_id"] == journal_id
    assert await metric_version(api) == written[-1].version


async def test_a_restored_older_journal_tells_the_client_to_reread(
    make_api: Maker, tmp_path: Path
) -> None:
    """1C saved a version of a journal that was later replaced by an older backup of it: its
    next poll is a 409 (not an empty answer forever), and from 0 it reads everything."""
    api = await make_api()
    before = await head(api)
    for _ in range(3):
        await write(api)
    saved = (await head(api))["last_version"]
    assert saved == before["last_version"] + 3
    backup = await make_api()  # the journal as it was before those three calls
    refused = await backup.get("/api/v1/changes", params={"since": saved}, status=409)
    assert refused["last_version"] == before["last_version"]
    assert refused["journal_id"] == before["journal_id"]
    reread = await backup.get("/api/v1/changes", params={"since": 0, "limit": 1000})
    assert len(reread["items"]) == 70


async def test_a_client_of_another_journal_is_told_to_reread(make_api: Maker) -> None:
    api = await make_api()
    now = await head(api)
    mine, last = now["journal_id"], now["last_version"]
    same = await api.get("/api/v1/changes", params={"since": last, "journal_id": mine})
    assert same["journal_id"] == mine and same["items"] == []
    other = str(uuid.uuid4())
    refused = await api.get(
        "/api/v1/changes", params={"since": 5, "journal_id": other, "wait": 1}, status=409
    )
    assert refused["error"]["code"] == "journal_changed"
    assert "journal_id" in refused["error"]["message"]
    assert refused["journal_id"] == mine and refused["last_version"] == last
    for wrong in ("not-a-uuid", "x" * 100):
        error = await api.get(
            "/api/v1/changes", params={"since": 0, "journal_id": wrong}, status=400
        )
        assert error["error"]["message"].startswith("journal_id")


@pytest.mark.parametrize("engine", ENGINES)
async def test_every_changes_answer_carries_the_journal_id(engine: str, make_api: Maker) -> None:
    api = await make_api(engine)
    first = await api.get("/api/v1/changes", params={"since": 0, "limit": 5})
    journal_id = first["journal_id"]
    assert uuid.UUID(journal_id).version == 4
    now = await head(api)
    timed_out = await api.get(
        "/api/v1/changes", params={"since": now["last_version"], "wait": 0.05}
    )
    assert timed_out == {"items": [], "last_version": now["last_version"], "journal_id": journal_id}
    waiting = asyncio.create_task(
        api.get("/api/v1/changes", params={"since": now["last_version"], "wait": 10})
    )
    feed = change_feed(api.app)
    async with asyncio.timeout(5):
        while feed.waiting < 1:  # noqa: ASYNC110 (a test watching a counter)
            await asyncio.sleep(0.005)
    await write(api)
    woken = await asyncio.wait_for(waiting, 5)
    assert len(woken["items"]) == 1 and woken["journal_id"] == journal_id


async def test_the_journal_id_is_made_once(empty_database: Database) -> None:
    await upgrade(empty_database)
    async with empty_database.sessions() as session:
        identity = await journal_identity(session)
        again = await journal_identity(session)
    assert identity == again and identity.version == 0
    assert uuid.UUID(identity.journal_id).version == 4
    await upgrade(empty_database)  # at head: a no-op, the id is not made again
    async with empty_database.sessions() as session:
        assert await journal_identity(session) == identity


async def test_an_existing_database_gets_a_journal_id_on_upgrade(
    empty_database: Database,
) -> None:
    await upgrade(empty_database, "0002")
    async with empty_database.writer.begin() as connection:
        await connection.execute(sa.text("UPDATE journal_state SET last_version = 42"))
    await upgrade(empty_database)
    async with empty_database.sessions() as session:
        identity = await journal_identity(session)
    assert identity.version == 42
    assert uuid.UUID(identity.journal_id).version == 4


async def test_two_journals_have_different_ids_and_a_copy_the_same(tmp_path: Path) -> None:
    async def identity(url: str, *, migrate: bool) -> str:
        database = open_database(url)
        try:
            if migrate:
                await upgrade(database)
            async with database.sessions() as session:
                return (await journal_identity(session)).journal_id
        finally:
            await database.dispose()

    first = await identity(f"sqlite+aiosqlite:///{tmp_path / 'a.sqlite3'}", migrate=True)
    second = await identity(f"sqlite+aiosqlite:///{tmp_path / 'b.sqlite3'}", migrate=True)
    copied = copy_sqlite(tmp_path / "a.sqlite3", tmp_path / "copy.sqlite3")
    assert first != second
    assert await identity(copied, migrate=False) == first, "a copy of the file is the same journal"


async def test_the_query_refuses_a_since_ahead_of_the_journal(database: Database) -> None:
    async with database.sessions() as session:
        entries, last = await changes(session, 0)
        assert entries == [] and last == 0
        with pytest.raises(SinceAheadError) as raised:
            await changes(session, 1)
    assert raised.value.version == 0


# -- point 4: forged cursors ----------------------------------------------------------


def forge(value: Any) -> str:
    raw = json.dumps(value, allow_nan=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED = [
    "WyIxIiwxZTk5OV0",  # ["1",1e999]: the OverflowError of the issue
    forge(["1", 1e999]),
    forge(["inf", 1]),
    forge(["-inf", 1]),
    forge(["nan", 1]),
    forge(["1e999", 1]),
    forge([float("nan"), 1]),
    forge([1795837497.07, 42]),  # a number where the string belongs
    forge(["1795837497.07", 42.0]),
    forge(["1795837497.07", True]),
    forge(["1795837497.07", "42"]),
    forge(["1795837497.07", -1]),
    forge(["1795837497.07", 2**63]),
    forge(["-5", 42]),
    forge(["1e300", 42]),
    forge(["1_795_837_497", 42]),
    forge([" 1795837497.07", 42]),
    forge(["1795837497.07"]),
    forge(["1795837497.07", 42, 0]),
    forge({"started": "1795837497.07", "id": 42}),
    forge(None),
    forge("x"),
    forge(["9" * 100, 1]),
    forge([[[[[[[[[[]]]]]]]]]]),
    base64.urlsafe_b64encode(b"\xff\xfe[1,2]").decode(),
    "WyIxNzk1ODM3NDk3LjA3IiwgNDJd!!",
    "W",
    "====",
    "WyIxNzk1ODM3NDk3LjA3IiwgNDJd===",
    "WyIx Nzk1ODM3NDk3LjA3IiwgNDJd",
]


async def test_forged_cursors_are_a_400_naming_the_cursor(make_api: Maker) -> None:
    api = await make_api()
    for cursor in FORGED:
        error = await api.get("/api/v1/calls", params={"cursor": cursor}, status=400)
        assert error["error"]["code"] == "invalid_cursor", cursor
        assert error["error"]["message"].startswith("cursor: "), error


async def test_a_real_cursor_still_pages(make_api: Maker) -> None:
    api = await make_api()
    first = await api.get("/api/v1/calls", params={"limit": 5, "internal": "show"})
    cursor = first["next_cursor"]
    assert decode_cursor(cursor) == (
        decode_cursor(cursor)[0],
        first["items"][-1]["id"],
    )
    second = await api.get(
        "/api/v1/calls", params={"limit": 5, "internal": "show", "cursor": cursor}
    )
    assert not {c["id"] for c in first["items"]} & {c["id"] for c in second["items"]}


def test_decode_cursor_round_trips_and_refuses_forgeries() -> None:
    for started, call_id in ((1795837497.07, 42), (0.0, 0), (1e-300, 2**63 - 1)):
        assert decode_cursor(encode_cursor(started, call_id)) == (started, call_id)
    for cursor in FORGED:
        with pytest.raises(CursorError):
            decode_cursor(cursor)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_EXTREMES = st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, -1.0, 2**63, 2**64])
_PAIRS = st.tuples(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        _EXTREMES.map(str),
        st.text(alphabet="0123456789.e+-_infaINF ", max_size=40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(),
    ),
    st.one_of(
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        _EXTREMES,
        st.booleans(),
    ),
).map(list)
#: Cursors as an attacker makes them: the forgeries above, pairs of the right shape with
#: values out of range, any JSON, any base64, any text.
_CURSORS = st.one_of(
    st.sampled_from(FORGED),
    _PAIRS.map(forge),
    _JSON.map(forge),
    st.binary(max_size=140).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=",
        max_size=200,
    ),
    st.text(max_size=200),
)


@given(_CURSORS)
@settings(max_examples=400, deadline=None)
def test_decode_cursor_never_raises_anything_but_a_cursor_error(cursor: str) -> None:
    try:
        started, call_id = decode_cursor(cursor)
    except CursorError:
        return
    assert type(started) is float and type(call_id) is int
    assert 0.0 <= started <= 253402300799.0 and 0 <= call_id <= 2**63 - 1


@pytest.mark.parametrize("engine", ENGINES)
async def test_random_and_forged_cursors_never_give_a_5xx(engine: str, make_api: Maker) -> None:
    api = await make_api(engine)
    answers: list[tuple[str, int, Any]] = []

    @given(_CURSORS)
    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def probe(cursor: str) -> None:
        answers.append((cursor, 0, None))

    probe()  # hypothesis draws the cursors; the requests run on this test's loop below
    for index, (cursor, _, _) in enumerate(answers):
        async with api.client.get(
            "/api/v1/calls", params={"cursor": cursor}, headers=api.auth
        ) as response:
            body = await response.json()
            answers[index] = (cursor, response.status, body)
    assert answers
    for cursor, status, body in answers:
        assert status < 500, (cursor, status, body)
        if status != 200:
            assert body["error"]["code"] in {"invalid_cursor", "invalid_parameter"}, body
            assert body["error"]["message"].startswith("cursor"), body


def test_the_cli_refuses_a_forged_cursor_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}"
    config = str(write_config(tmp_path))
    assert run_cli("migrate", "--config", config, "--database", url).returncode == 0
    for cursor in ("WyIxIiwxZTk5OV0", forge(["nan", 1]), forge(["1795837497.07", -1])):
        result = run_cli("calls", "--cursor", cursor, "--config", config, "--database", url)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pbxjournal calls: --cursor: "), lines
        assert "Traceback" not in result.stderr
