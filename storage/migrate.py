"""Apply the journal's Alembic migrations from code: ``pbxjournal migrate``, the daemon's and
``replay --database``'s start, and the tests.

Alembic is configured here rather than from an ``alembic.ini``: the scripts ship inside the
``storage`` package and the URL comes from the settings. The migration runs on the writer
engine (on SQLite, under ``BEGIN IMMEDIATE``), inside the caller's event loop, through
``run_sync``; nothing blocks the loop.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from storage.engine import Database

__all__ = ["alembic_config", "current_revision", "downgrade", "head_revision", "upgrade"]

SCRIPTS = Path(__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


#: The region a migration reads numbers in when the caller names none (``[pbx]
#: default_region``'s default).
DEFAULT_REGION = "RU"


async def _run(database: Database, action: str, revision: str, region: str) -> None:
    def apply(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        # Migration 0012 writes each number's national form, which depends on the region.
        config.attributes["region"] = region
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)

    async with database.writer.begin() as connection:
        await connection.run_sync(apply)


async def upgrade(
    database: Database, revision: str = "head", *, region: str = DEFAULT_REGION
) -> None:
    """Bring the schema up to ``revision`` (default: the newest); ``region`` is the PBX's
    (``[pbx] default_region``), in which numbers are read."""
    await _run(database, "upgrade", revision, region)


async def downgrade(database: Database, revision: str = "base") -> None:
    """Take the schema down to ``revision`` (default: empty)."""
    await _run(database, "downgrade", revision, DEFAULT_REGION)


async def current_revision(database: Database) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with database.engine.connect() as connection:
        return await connection.run_sync(read)
