"""Alembic migrations on both engines: empty → head → empty, and head matches the models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from storage.engine import Database
from storage.migrate import current_revision, downgrade, head_revision, upgrade
from storage.models import Base

JOURNAL_TABLES = {
    "calls",
    "call_participants",
    "call_legs",
    "call_transfers",
    "call_recordings",
    "call_comments",
    "customers",
    "contacts",
    "numbers",
    "employees",
    "employee_extensions",
    "journal_state",
    "open_conversations",
}


async def table_names(database: Database) -> set[str]:
    def names(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    async with database.engine.connect() as connection:
        return await connection.run_sync(names)


async def test_upgrade_from_empty_to_head_and_back_to_empty(empty_database: Database) -> None:
    assert await table_names(empty_database) == set()
    await upgrade(empty_database)
    tables = await table_names(empty_database)
    assert tables >= JOURNAL_TABLES
    assert await current_revision(empty_database) == head_revision()
    if empty_database.is_sqlite:
        assert "calls_search" in tables  # the FTS5 index
    else:
        async with empty_database.engine.connect() as connection:
            statistics = await connection.scalar(
                text("SELECT count(*) FROM pg_statistic_ext WHERE stxname = 'st_calls_flags'")
            )
        assert statistics == 1
    await downgrade(empty_database)
    assert await table_names(empty_database) == {"alembic_version"}
    assert await current_revision(empty_database) is None
    # And up again: the downgrade left nothing behind that would get in the way.
    await upgrade(empty_database)
    assert await table_names(empty_database) >= JOURNAL_TABLES


async def test_upgrade_twice_is_a_no_op(database: Database) -> None:
    await upgrade(database)
    assert await current_revision(database) == head_revision()


def _is_search_index(diff: Any) -> bool:
    """The trigram index is the migration's own (the ORM cannot express it)."""
    kind = diff[0]
    if kind == "remove_table":
        return str(diff[1].name).startswith("calls_search")
    if kind == "remove_index":
        return str(diff[1].name) == "ix_calls_search_trgm"
    return False


async def test_the_migrated_schema_is_the_models_schema(database: Database) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return [d for d in compare_metadata(context, Base.metadata) if not _is_search_index(d)]

    async with database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


#: The revision that added ``calls.callback_of`` (issue 17), and the one before it.
CALLBACK_OF_REVISION = "0006"
BEFORE_CALLBACK_OF = "0005"


async def test_a_filled_journal_gains_callback_of_empty(empty_database: Database) -> None:
    """Upgrading a journal with calls in it to the click-to-call revision keeps every call
    and returns none of them (NULL); the column then takes a link."""
    await upgrade(empty_database, BEFORE_CALLBACK_OF)
    columns = (
        "pbx, conversation_id, linkedids, started_at, answered_at, ended_at, approximate_end, "
        "direction, answered, number, number_raw, did, ring_seconds, talk_seconds, queues, "
        "announced_recordings, recording_hints, status, attention, first_contact, "
        "registered_at_end, unregistered, window_closes_at, settled, fingerprint, search_text, "
        "version"
    )
    async with empty_database.engine.begin() as connection:
        for index in (1, 2):
            await connection.execute(
                text(
                    f"INSERT INTO calls ({columns}) VALUES ('main', :cid, '[]', :at, NULL, :end, "
                    "false, 'incoming', false, '+79267001122', '79267001122', NULL, 5.0, 0.0, "
                    "'[]', '[]', '[]', 'lost', true, true, false, true, NULL, false, 'x', '', :v)"
                ),
                {"cid": f"17.{index}", "at": 1000.0 * index, "end": 1000.0 * index + 5, "v": index},
            )
    await upgrade(empty_database, CALLBACK_OF_REVISION)
    assert await current_revision(empty_database) == CALLBACK_OF_REVISION
    async with empty_database.engine.begin() as connection:
        rows = (
            await connection.execute(
                text("SELECT conversation_id, callback_of FROM calls ORDER BY id")
            )
        ).all()
        assert [tuple(r) for r in rows] == [("17.1", None), ("17.2", None)]
        first = await connection.scalar(text("SELECT min(id) FROM calls"))
        await connection.execute(
            text("UPDATE calls SET callback_of = :first WHERE conversation_id = '17.2'"),
            {"first": first},
        )
        linked = await connection.scalar(
            text("SELECT callback_of FROM calls WHERE conversation_id = '17.2'")
        )
    assert linked == first
    await downgrade(empty_database, BEFORE_CALLBACK_OF)
    async with empty_database.engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM calls"))
    assert count == 2


#: Issue 18's migration of the rules' bounded reads, and the revision it follows (one place:
#: the chain is renumbered when branches merge).
NUMBER_READS = "0008"
BEFORE_NUMBER_READS = "0007"


async def test_number_reads_upgrade_a_filled_journal(empty_database: Database) -> None:
    """A journal written before ``ix_calls_number_missed`` gets it on upgrade, keeps every row
    as it was, and its calls' rules read through it afterwards."""
    from connector.assembly import Direction
    from storage.store import SqlJournal
    from tests.calls import at, make_call
    from tests.db import make_journal

    def plan_uses_index(connection: Connection) -> bool:
        missed = (
            "SELECT id FROM calls WHERE number = '+79161234567' "
            "AND window_closes_at IS NOT NULL AND ended_at >= 0 AND ended_at <= 2e9"
        )
        if empty_database.is_sqlite:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {missed}").all()
        else:
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = connection.exec_driver_sql(f"EXPLAIN {missed}").all()
        return "ix_calls_number_missed" in " ".join(str(r) for r in rows)

    async def rows(journal: SqlJournal) -> list[tuple[int, str, bool, bool, int]]:
        entries = await journal.entries(range(1, 100))
        return [(e.id, e.status.value, e.attention, e.first_contact, e.version) for e in entries]

    await upgrade(empty_database, BEFORE_NUMBER_READS)
    journal = await make_journal(empty_database)
    number = "+79161234567"
    start = at("11-20 10:00")
    for hour in range(0, 48, 3):
        answered = hour in (0, 6)
        call = make_call(Direction.INCOMING, number, start + hour * 3600, answered=answered)
        await journal.write(call, [], call.ended_at)
    before = await rows(journal)
    assert len(before) == 16 and any(status == "lost" for _, status, *_ in before)
    await upgrade(empty_database, NUMBER_READS)
    assert await current_revision(empty_database) == NUMBER_READS
    assert await rows(journal) == before
    async with empty_database.engine.connect() as connection:
        assert await connection.run_sync(plan_uses_index)
    # A call back after the upgrade answers the lost calls of the last day.
    back = make_call(Direction.OUTGOING, number, start + 48 * 3600, answered=True)
    await journal.write(back, [], back.ended_at)
    after = {i: (status, attention) for i, status, attention, *_ in await rows(journal)}
    lost = [i for i, status, *_ in before if status == "lost"]
    answered_now = {i for i in lost if after[i] == ("no_answer", False)}
    assert answered_now and all(after[i] == ("lost", True) for i in set(lost) - answered_now)


#: Issue 18's record of the rules setting the verdicts were computed with, and the revision
#: it follows.
RULES_SETTINGS = "0009"
BEFORE_RULES_SETTINGS = "0008"


async def test_rules_settings_upgrade_a_filled_journal(empty_database: Database) -> None:
    """A journal written before ``journal_state.rules_window`` keeps every row on upgrade and
    has no window recorded (unknown): the first repair re-evaluates it, with the window now
    configured, and records that one; the downgrade keeps the rows."""
    from connector.assembly import Direction
    from storage.rules import AttentionWindow
    from storage.store import SqlJournal
    from tests.calls import at, make_call
    from tests.db import MOSCOW, make_journal

    async def rows(journal: SqlJournal) -> list[tuple[int, str, bool, float | None, int]]:
        entries = await journal.entries(range(1, 100))
        return [(e.id, e.status.value, e.attention, e.window_closes_at, e.version) for e in entries]

    await upgrade(empty_database, BEFORE_RULES_SETTINGS)
    journal = await make_journal(empty_database, AttentionWindow.fixed(86400.0, MOSCOW))
    number = "+79161234567"
    start = at("11-20 10:00")
    for hour in range(0, 48, 3):
        answered = hour in (0, 6, 30)
        call = make_call(Direction.INCOMING, number, start + hour * 3600, answered=answered)
        await journal.write(call, [], call.ended_at)
    before = await rows(journal)
    await upgrade(empty_database, RULES_SETTINGS)
    assert await current_revision(empty_database) == RULES_SETTINGS
    assert await rows(journal) == before
    assert await journal.recorded_window() is None
    # Restarted with a one-hour window: the missed calls answered 3+ hours later are lost.
    hour = await make_journal(empty_database, AttentionWindow.fixed(3600.0, MOSCOW))
    repair = await hour.repair_window(at("11-25 10:00"))
    assert repair is not None and repair.recorded is None and repair.configured == "fixed 3600s"
    after = {i: (status, closes) for i, status, _, closes, _ in await rows(hour)}
    missed = [r for r in before if r[3] is not None]
    assert repair.rows == len(missed) and repair.changed == len(missed)  # every window moved
    assert all(after[i][1] == end - 86400.0 + 3600.0 for i, _, _, end, _ in missed if end)
    assert any(s == "no_answer" and after[i][0] == "lost" for i, s, *_ in missed)
    assert await hour.recorded_window() == "fixed 3600s"
    await downgrade(empty_database, BEFORE_RULES_SETTINGS)
    async with empty_database.engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM calls"))
    assert count == len(before)
