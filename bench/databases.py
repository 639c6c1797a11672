"""The journal a benchmark writes to: a SQLite file in its work directory, or a PostgreSQL
database of its own made next to the one a URL names (``scripts/test-postgres`` prints one),
dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["scratch_database"]


async def scratch_database(
    postgres: str | None, workdir: Path, tag: str
) -> tuple[str, Callable[[], Awaitable[None]] | None]:
    """The journal's URL, and how to drop it afterwards (PostgreSQL; None for SQLite).

    The PostgreSQL database is called ``<database of the URL>_<tag>_<pid>``, made from
    ``template0`` with the C.UTF-8 collation the schema's trigram indexes expect; one left
    behind by a run that died is dropped first.
    """
    if not postgres:
        return f"sqlite+aiosqlite:///{workdir / 'journal.sqlite3'}", None
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    base = make_url(postgres)
    name = f"{base.database}_{tag}_{os.getpid()}"

    async def admin(*statements: str) -> None:
        connection = await asyncpg.connect(
            user=base.username,
            password=base.password,
            host=base.host,
            port=base.port,
            database=base.database,
        )
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    await admin(
        f"DROP DATABASE IF EXISTS {name}",
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
        "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
    )

    async def drop() -> None:
        await admin(f"DROP DATABASE IF EXISTS {name}")

    return base.set(database=name).render_as_string(False), drop
