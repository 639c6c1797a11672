"""Alembic environment for the journal: async engines, SQLite and PostgreSQL alike.

``storage.migrate`` runs Alembic inside an engine's ``run_sync`` and hands the connection over
in ``config.attributes["connection"]``, so migrations run on the daemon's own event loop and
its SQLite connection set-up (WAL, foreign keys, ``BEGIN IMMEDIATE``). The plain ``alembic``
command (``-x url=...`` or ``sqlalchemy.url``) gets an engine of its own here.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from storage.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    from storage.engine import open_database

    database = open_database(url)
    try:
        async with database.writer.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await database.dispose()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("alembic: pass the journal URL with -x url=...")
    asyncio.run(_run_with_own_engine(url))


if context.is_offline_mode():
    raise SystemExit("alembic: offline (--sql) mode is not supported; run against a database")
run_migrations_online()
