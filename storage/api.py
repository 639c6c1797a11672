"""Journal operations the HTTP API needs beyond :class:`storage.store.SqlJournal`'s methods.

Built only from storage's public pieces (``SqlJournal.transaction`` and
:mod:`storage.directory`), in one write transaction each, like the journal's own methods;
they add what the API must tell 1C: whether the thing to delete existed.
"""

from __future__ import annotations

from storage import directory
from storage.store import Change, SqlJournal

__all__ = ["delete_customer", "unbind_number"]


async def delete_customer(journal: SqlJournal, customer_id: str) -> tuple[bool, list[Change]]:
    """Remove a customer and unbind its numbers: (whether it existed, the rows changed)."""
    async with journal.transaction() as tx:
        found = await directory.delete_customer(tx.session, customer_id, journal.region, tx.bump)
        return found, sorted(tx.changes)


async def unbind_number(journal: SqlJournal, number: str) -> tuple[bool, list[Change]]:
    """Unbind a number: (whether it was bound, the rows changed)."""
    async with journal.transaction() as tx:
        found = await directory.unbind_number(tx.session, number, journal.region, tx.bump)
        return found, sorted(tx.changes)
