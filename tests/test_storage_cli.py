"""``pbxjournal replay --database``, ``calls`` and ``migrate``: the commands, as run by a user.

The captures replayed into SQLite and into PostgreSQL must give the journal the in-memory
replay gives: the same call objects (rows, statuses, flags, employees, recordings, even ids
and versions, since the writes happen in the same order).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from storage.migrate import head_revision
from tests.db import ENGINES, fresh_url, postgres_url, reset_postgres
from tests.scenarios import TRACES, capture
from tests.test_replay import json_lines, run_cli, write_config

CAPTURES = [str(p) for p in sorted(TRACES.glob("*.ami"))]


def last_per_id(stdout: str) -> dict[int, dict[str, Any]]:
    return {line["id"]: line for line in json_lines(stdout)}


def replay(config: Path, *extra: str) -> dict[int, dict[str, Any]]:
    result = run_cli("replay", *CAPTURES, "--json", "--config", str(config), *extra)
    assert result.returncode == 0, result.stderr
    return last_per_id(result.stdout)


async def test_captures_in_sqlite_and_postgresql_give_the_memory_journal(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    pg = await postgres_url()
    await reset_postgres(pg)
    memory = replay(config)
    sqlite = replay(config, "--database", f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}")
    postgres = replay(config, "--database", pg)
    assert len(memory) == 70
    assert sqlite == memory
    assert postgres == memory
    recorded = [o for o in memory.values() if o["recordings"]]
    assert len(recorded) > 20  # recordings are compared too, not only empty lists


@pytest.mark.parametrize("engine", ENGINES)
async def test_replaying_a_capture_twice_adds_no_row(tmp_path: Path, engine: str) -> None:
    url = await fresh_url(engine, tmp_path)
    config = str(write_config(tmp_path))
    path = str(capture("14-two-overlapping-incoming"))
    first = run_cli("replay", path, "--json", "--config", config, "--database", url)
    assert first.returncode == 0, first.stderr
    assert len(last_per_id(first.stdout)) == 2
    again = run_cli("replay", path, path, "--json", "--config", config, "--database", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""  # nothing new, nothing changed
    listed = run_cli("calls", "--internal", "show", "--json", "--config", config, "--database", url)
    assert listed.returncode == 0, listed.stderr
    assert len(json_lines(listed.stdout)) == 2


def test_calls_prints_the_journal_with_filters(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}"
    config = str(write_config(tmp_path))
    result = run_cli("replay", *CAPTURES, "--config", config, "--database", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("70 calls")

    def calls(*args: str) -> list[dict[str, Any]]:
        shown = run_cli("calls", "--json", "--config", config, "--database", url, *args)
        assert shown.returncode == 0, shown.stderr
        return json_lines(shown.stdout)

    missed = calls("--kind", "missed", "--limit", "500")
    assert missed and all(c["status"] in ("no_answer", "lost") for c in missed)
    lost_first = calls("--kind", "lost", "--first-contact", "--limit", "500")
    assert lost_first and all(c["status"] == "lost" and c["first_contact"] for c in lost_first)
    internal = calls("--internal", "only")
    assert internal and all(c["direction"] == "internal" for c in internal)
    mine = calls("--employee", "105", "--limit", "500")
    assert mine and all(any(e["extension"] == "105" for e in c["employees"]) for c in mine)
    found = calls("-q", "8 916 123-45-67")
    assert [c["number"] for c in found] == ["+79161234567"]
    day = calls(
        "--from", "2026-11-28", "--to", "2026-11-28", "--internal", "show", "--limit", "500"
    )
    assert len(day) == 70
    assert calls("--from", "2026-11-29") == []
    page = run_cli("calls", "--limit", "5", "--config", config, "--database", url)
    assert page.returncode == 0, page.stderr
    assert page.stdout.strip().endswith("5 calls")
    cursor = page.stderr.split("--cursor ")[1].strip()
    following = calls("--limit", "5", "--cursor", cursor)
    assert len(following) == 5
    assert following[0]["started_at"] <= calls("--limit", "5")[-1]["started_at"]


def test_calls_refuses_bad_filters(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}"
    bad_kind = run_cli("calls", "--kind", "weird", "--database", url)
    assert bad_kind.returncode == 2 and "unknown kind 'weird'" in bad_kind.stderr
    bad_date = run_cli("calls", "--from", "yesterday", "--database", url)
    assert bad_date.returncode == 2 and "ISO 8601" in bad_date.stderr
    bad_cursor = run_cli("calls", "--cursor", "zzz", "--database", url)
    assert bad_cursor.returncode == 2 and "--cursor" in bad_cursor.stderr


def test_migrate_command_creates_the_journal(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'j.sqlite3'}"
    result = run_cli("migrate", "--database", url)
    assert result.returncode == 0, result.stderr
    assert f"revision {head_revision()}" in result.stderr
    again = run_cli("migrate", "--database", url)
    assert again.returncode == 0, again.stderr


def test_migrate_command_with_a_bad_url_says_so(tmp_path: Path) -> None:
    result = run_cli("migrate", "--database", "mysql://nope/x")
    assert result.returncode == 1
    assert "unsupported database" in result.stderr


def _slow_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosqlite's worker threads take 0.2 s to stop: a loaded machine, on purpose."""
    from aiosqlite import core

    stop = core.Connection.stop

    def slow(self: Any) -> Any:
        # Queued before the stop, which ends the thread.
        self._tx.put_nowait((None, lambda: time.sleep(0.2)))
        return stop(self)

    monkeypatch.setattr(core.Connection, "stop", slow)


@pytest.mark.parametrize("settled", [False, True])
def test_a_tool_lets_a_failed_sqlite_connection_end_before_the_loop_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: bool
) -> None:
    """A connection that fails to open (a missing directory) stops aiosqlite's worker thread
    without waiting for it; if ``asyncio.run`` closes the loop first, the thread dies with
    "Event loop is closed" and prints a traceback after the tool's one-line error (one CI
    rehearsal: ``pbxjournal replay``). ``run_tool`` waits for the thread; plain
    ``asyncio.run`` is shown to lose the race when the thread is slow."""
    import asyncio
    import threading

    import sqlalchemy as sa

    from storage.engine import open_database, run_tool

    _slow_stop(monkeypatch)
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))

    async def fail() -> None:
        database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'j.sqlite3'}")
        try:
            async with database.sessions() as session:
                await session.execute(sa.text("SELECT 1"))
        finally:
            await database.dispose()

    with pytest.raises(sa.exc.OperationalError):
        (run_tool if settled else asyncio.run)(fail())
    time.sleep(0.5)  # the thread, if still alive, finishes (and fails) now
    if settled:
        assert died == []
    else:
        assert [type(e).__name__ for e in died] == ["RuntimeError"], died
