"""Issue 18's "Мои звонки" at ten million calls: ``extension_calls``, each extension's calls in
journal order with the call's class, and a call's participants in one read.

"My calls" with a rare flag walked the flag's index (or the journal) and probed the
participants' index for every entry: with 40 employees one call in ~27 is the employee's, so a
page of a rare flag read thousands of rows. ``extension_calls`` has one row per call and
extension taking part in it (a call with the same extension twice has one), carrying the
call's start and its ``ix_calls_class`` columns: its key ``(extension, started_at, call_id)``
is the extension's calls newest first with their flags (a dense filter walks it and tests the
flags on the entry), and ``ix_extension_calls_class`` is one range per extension and class (a
rare one merges them, as ``ix_calls_class`` does for the journal; ``storage.queries``).

Triggers keep it equal to ``call_participants`` joined to ``calls``, whatever writes them (the
writer, a rewrite of a call, re-evaluation, window repair, a binding that changes
``unregistered``, a deletion): a participant inserted copies its call's columns; one deleted
takes its extension's row with it unless the call has that extension again; an update of a
call's start or class columns moves its rows (matched on the old values, so the order in which
a transaction writes a call and its participants does not matter).

``call_participants`` is rebuilt ``WITHOUT ROWID`` on SQLite (the rows in the key's order: a
call's participants are one leaf, not the key's index and then the table's rows) and gets
its columns in its key's index on PostgreSQL (``INCLUDE``: an index-only scan).

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

CLASS = ("direction", "answered", "attention", "first_contact", "unregistered", "status")
COLUMNS = ("extension", "started_at", "call_id", *CLASS)
PARTICIPANT_COLUMNS = (
    "extension",
    "role",
    "placed",
    "rang",
    "answered_at",
    "rang_at",
    "talk_seconds",
    "on_mobile",
)

_CLASS_LIST = ", ".join(CLASS)
_CHANGED = " OR ".join(
    f"old.{column} IS {{not_same}} new.{column}" for column in ("started_at", *CLASS)
)
_SET = ", ".join(f"{column} = new.{column}" for column in ("started_at", *CLASS))

#: Every row ``extension_calls`` should hold, in its key's order (the migration's and the
#: benchmark's bulk fill; the tests compare the table to it).
EXPECTED = (
    "SELECT DISTINCT p.extension, c.started_at, c.id, "
    + ", ".join(f"c.{column}" for column in CLASS)
    + " FROM call_participants p JOIN calls c ON c.id = p.call_id"
)
FILL = (
    f"INSERT INTO extension_calls ({', '.join(COLUMNS)}) {EXPECTED} "
    "ORDER BY p.extension, c.started_at, c.id"
)
CLASS_INDEX = (
    f"CREATE INDEX ix_extension_calls_class ON extension_calls "
    f"(extension, {_CLASS_LIST}, started_at, call_id)"
)

SQLITE_TRIGGERS = [
    # A participant: its extension's row, with the call's columns as they are now.
    "CREATE TRIGGER extension_calls_participant_insert AFTER INSERT ON call_participants "
    f"BEGIN INSERT OR IGNORE INTO extension_calls ({', '.join(COLUMNS)}) "
    f"SELECT new.extension, started_at, id, {_CLASS_LIST} FROM calls WHERE id = new.call_id; "
    "END",
    # Gone, unless the call has the extension again.
    "CREATE TRIGGER extension_calls_participant_delete AFTER DELETE ON call_participants "
    "WHEN NOT EXISTS (SELECT 1 FROM call_participants "
    "WHERE call_id = old.call_id AND extension = old.extension) "
    "BEGIN DELETE FROM extension_calls WHERE extension = old.extension "
    "AND started_at = (SELECT started_at FROM calls WHERE id = old.call_id) "
    "AND call_id = old.call_id; END",
    # Nothing writes a participant's extension or call again; if anything did, as a delete
    # and an insert.
    "CREATE TRIGGER extension_calls_participant_update "
    "AFTER UPDATE OF call_id, extension ON call_participants "
    "BEGIN DELETE FROM extension_calls WHERE extension = old.extension "
    "AND started_at = (SELECT started_at FROM calls WHERE id = old.call_id) "
    "AND call_id = old.call_id AND NOT EXISTS (SELECT 1 FROM call_participants "
    "WHERE call_id = old.call_id AND extension = old.extension); "
    f"INSERT OR IGNORE INTO extension_calls ({', '.join(COLUMNS)}) "
    f"SELECT new.extension, started_at, id, {_CLASS_LIST} FROM calls WHERE id = new.call_id; "
    "END",
    # A call that moves or changes class moves its rows (found by their old key).
    "CREATE TRIGGER extension_calls_call_update "
    f"AFTER UPDATE OF started_at, {_CLASS_LIST} ON calls "
    f"WHEN {_CHANGED.format(not_same='NOT')} "
    f"BEGIN UPDATE extension_calls SET {_SET} "
    "WHERE extension IN (SELECT extension FROM call_participants WHERE call_id = old.id) "
    "AND started_at = old.started_at AND call_id = old.id; END",
    # Before the call goes (its participants go after it, by the foreign key).
    "CREATE TRIGGER extension_calls_call_delete BEFORE DELETE ON calls "
    "BEGIN DELETE FROM extension_calls "
    "WHERE extension IN (SELECT extension FROM call_participants WHERE call_id = old.id) "
    "AND started_at = old.started_at AND call_id = old.id; END",
]
SQLITE_TRIGGERS_DROP = [
    "DROP TRIGGER IF EXISTS extension_calls_call_delete",
    "DROP TRIGGER IF EXISTS extension_calls_call_update",
    "DROP TRIGGER IF EXISTS extension_calls_participant_update",
    "DROP TRIGGER IF EXISTS extension_calls_participant_delete",
    "DROP TRIGGER IF EXISTS extension_calls_participant_insert",
]

_PG_INSERT = (
    f"INSERT INTO extension_calls ({', '.join(COLUMNS)}) "
    f"SELECT NEW.extension, c.started_at, c.id, "
    + ", ".join(f"c.{column}" for column in CLASS)
    + " FROM calls c WHERE c.id = NEW.call_id ON CONFLICT DO NOTHING;"
)
_PG_DELETE = (
    "DELETE FROM extension_calls e USING calls c WHERE c.id = OLD.call_id "
    "AND e.extension = OLD.extension AND e.started_at = c.started_at "
    "AND e.call_id = OLD.call_id AND NOT EXISTS (SELECT 1 FROM call_participants p "
    "WHERE p.call_id = OLD.call_id AND p.extension = OLD.extension);"
)
POSTGRES_TRIGGERS = [
    "CREATE FUNCTION extension_calls_participant() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    f"IF TG_OP IN ('DELETE', 'UPDATE') THEN {_PG_DELETE} END IF; "
    f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {_PG_INSERT} END IF; "
    "RETURN NULL; END $$",
    "CREATE TRIGGER extension_calls_participant "
    "AFTER INSERT OR DELETE OR UPDATE OF call_id, extension ON call_participants "
    "FOR EACH ROW EXECUTE FUNCTION extension_calls_participant()",
    "CREATE FUNCTION extension_calls_call() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF TG_OP = 'DELETE' THEN "
    "DELETE FROM extension_calls WHERE call_id = OLD.id AND started_at = OLD.started_at "
    "AND extension IN (SELECT extension FROM call_participants WHERE call_id = OLD.id); "
    "RETURN OLD; END IF; "
    f"UPDATE extension_calls SET {_SET.replace('new.', 'NEW.')} "
    "WHERE call_id = OLD.id AND started_at = OLD.started_at "
    "AND extension IN (SELECT extension FROM call_participants WHERE call_id = OLD.id); "
    "RETURN NULL; END $$",
    "CREATE TRIGGER extension_calls_call_update "
    f"AFTER UPDATE OF started_at, {_CLASS_LIST} ON calls FOR EACH ROW "
    f"WHEN ({_CHANGED.format(not_same='DISTINCT FROM')}) "
    "EXECUTE FUNCTION extension_calls_call()",
    # Before the call goes: the foreign key's cascade removes its participants after it.
    "CREATE TRIGGER extension_calls_call_delete BEFORE DELETE ON calls FOR EACH ROW "
    "EXECUTE FUNCTION extension_calls_call()",
]
POSTGRES_TRIGGERS_DROP = [
    "DROP TRIGGER IF EXISTS extension_calls_call_delete ON calls",
    "DROP TRIGGER IF EXISTS extension_calls_call_update ON calls",
    "DROP TRIGGER IF EXISTS extension_calls_participant ON call_participants",
    "DROP FUNCTION IF EXISTS extension_calls_call()",
    "DROP FUNCTION IF EXISTS extension_calls_participant()",
]


def triggers(dialect: str) -> list[str]:
    return SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRES_TRIGGERS


def drop_triggers(dialect: str) -> list[str]:
    return SQLITE_TRIGGERS_DROP if dialect == "sqlite" else POSTGRES_TRIGGERS_DROP


def _participants_sqlite(*, with_rowid: bool) -> None:
    """``call_participants`` copied into a table of the other layout, in its key's order."""
    columns = ("call_id", "ordinal", *PARTICIPANT_COLUMNS)
    op.create_table(
        "call_participants_new",
        sa.Column("call_id", BigId, nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("extension", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("placed", sa.Boolean(), nullable=False),
        sa.Column("rang", sa.Boolean(), nullable=False),
        sa.Column("answered_at", sa.Double(), nullable=True),
        sa.Column("rang_at", sa.Double(), nullable=True),
        sa.Column("talk_seconds", sa.Double(), nullable=False),
        sa.Column("on_mobile", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["calls.id"],
            ondelete="CASCADE",
            name="fk_call_participants_call_id_calls",
        ),
        sa.PrimaryKeyConstraint("call_id", "ordinal", name="pk_call_participants"),
        sqlite_with_rowid=with_rowid,
    )
    names = ", ".join(columns)
    op.execute(
        f"INSERT INTO call_participants_new ({names}) SELECT {names} FROM call_participants "
        "ORDER BY call_id, ordinal"
    )
    op.drop_index("ix_call_participants_extension", table_name="call_participants")
    op.drop_table("call_participants")
    op.rename_table("call_participants_new", "call_participants")
    op.create_index("ix_call_participants_extension", "call_participants", ["extension", "call_id"])


def _participants_postgres(include: Sequence[str]) -> None:
    key = "PRIMARY KEY (call_id, ordinal)"
    if include:
        key += f" INCLUDE ({', '.join(include)})"
    op.execute(
        "ALTER TABLE call_participants DROP CONSTRAINT pk_call_participants, "
        f"ADD CONSTRAINT pk_call_participants {key}"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _participants_sqlite(with_rowid=False)
    else:
        _participants_postgres(PARTICIPANT_COLUMNS)
    op.create_table(
        "extension_calls",
        sa.Column("extension", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("call_id", BigId, nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("answered", sa.Boolean(), nullable=False),
        sa.Column("attention", sa.Boolean(), nullable=False),
        sa.Column("first_contact", sa.Boolean(), nullable=False),
        sa.Column("unregistered", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint(
            "extension",
            "started_at",
            "call_id",
            name="pk_extension_calls",
            postgresql_include=list(CLASS),
        ),
        sqlite_with_rowid=False,
    )
    op.execute(FILL)
    op.execute(CLASS_INDEX)
    for statement in triggers(dialect):
        op.execute(statement)
    op.execute("ANALYZE extension_calls")
    op.execute("ANALYZE call_participants")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in drop_triggers(dialect):
        op.execute(statement)
    op.drop_table("extension_calls")
    if dialect == "sqlite":
        _participants_sqlite(with_rowid=True)
    else:
        _participants_postgres(())
