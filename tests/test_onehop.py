"""The SQLite engines' cursor (storage.onehop): one hop to aiosqlite's thread per statement,
and every result SQLAlchemy reads the same as with its own adapter's cursor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.engine import open_database
from storage.onehop import OneHopCursor

_THINGS = sa.Table(
    "things",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, unique=True, nullable=False),
    sa.Column("size", sa.Float),
)


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every call of a function on an aiosqlite connection's thread, from now on."""
    hops: list[int] = []
    execute = aiosqlite.Connection._execute

    async def noted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(1)
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", noted)
    return hops


async def exercise(engine: AsyncEngine) -> list[Any]:
    """What SQLAlchemy makes of a cursor's results, statement by statement: rows and column
    names, rows changed, inserted keys, an empty result, a batch insert, and errors."""
    seen: list[Any] = []
    async with engine.begin() as connection:
        await connection.run_sync(_THINGS.metadata.create_all)
        inserted = await connection.execute(_THINGS.insert().values(name="a", size=1.5))
        seen.append(("inserted key", inserted.inserted_primary_key, inserted.rowcount))
        batch = await connection.execute(
            _THINGS.insert(), [{"name": n, "size": float(i)} for i, n in enumerate("bcdef")]
        )
        seen.append(("batch", batch.rowcount))
        rows = await connection.execute(sa.select(_THINGS).order_by(_THINGS.c.id))
        seen.append(("columns", list(rows.keys())))
        seen.append(("rows", [tuple(row) for row in rows]))
        seen.append(("first", (await connection.execute(sa.select(_THINGS.c.name))).first()))
        none = await connection.execute(sa.select(_THINGS).where(_THINGS.c.id < 0))
        seen.append(("none", none.all(), list(none.keys())))
        changed = await connection.execute(
            _THINGS.update().where(_THINGS.c.size >= 2).values(size=0.0)
        )
        seen.append(("updated", changed.rowcount))
        gone = await connection.execute(_THINGS.delete().where(_THINGS.c.name == "f"))
        seen.append(("deleted", gone.rowcount))
        returned = await connection.execute(
            _THINGS.insert().values(name="g", size=7.0).returning(_THINGS.c.id, _THINGS.c.name)
        )
        seen.append(("returning", returned.all()))
        streamed = await connection.stream(sa.select(_THINGS.c.name).order_by(_THINGS.c.name))
        seen.append(("streamed", [row async for row in streamed]))
        for statement in (
            _THINGS.insert().values(name="a"),  # a duplicate name
            sa.text("SELECT nothing FROM nowhere"),
        ):
            with pytest.raises(sa.exc.DBAPIError) as raised:
                await connection.execute(statement)
            error = raised.value
            seen.append(("error", type(error).__name__, type(error.orig).__name__, str(error.orig)))
        count = await connection.execute(sa.select(sa.func.count()).select_from(_THINGS))
        seen.append(("count after errors", count.scalar_one()))
    return seen


async def test_a_statement_is_one_hop_and_reads_as_with_the_stock_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'onehop.sqlite3'}")
    stock = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'stock.sqlite3'}")
    try:
        async with database.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            assert isinstance(raw.dbapi_connection.cursor(), OneHopCursor)  # type: ignore[union-attr]
        hops = count_hops(monkeypatch)
        async with database.engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))  # after its BEGIN
            hops.clear()
            for _ in range(10):
                await connection.execute(sa.text("SELECT 1"))
            hopped = len(hops)
            await connection.rollback()
        assert hopped == 10, hopped
        hops.clear()
        async with stock.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))  # a new connection's own hops
            hops.clear()
            for _ in range(10):
                await connection.execute(sa.text("SELECT 1"))
        # The stock cursor: open, execute, fetch, close (what is saved: the change's measure).
        assert len(hops) >= 30, len(hops)

        assert await exercise(database.writer) == await exercise(stock)
    finally:
        await database.dispose()
        await stock.dispose()
