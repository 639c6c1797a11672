"""Journal operations the HTTP API needs beyond :class:`storage.store.SqlJournal`'s methods.

Built only from storage's public pieces (``SqlJournal.transaction`` and
:mod:`storage.directory`), in one write transaction each, like the journal's own methods;
they add what the API must tell 1C: whether the thing to delete existed.
"""

from __future__ import annotations

from storage import directory
from storage.directory import DirectoryError, NumberOwner
from storage.models import Contact, Customer
from storage.numbers import normalize_number
from storage.store import Change, SqlJournal

__all__ = [
    "UnknownContact",
    "UnknownCustomer",
    "bind_number",
    "delete_customer",
    "unbind_number",
]


class UnknownCustomer(DirectoryError):
    """No customer has this id."""


class UnknownContact(DirectoryError):
    """The customer has no contact person with this id."""


async def bind_number(
    journal: SqlJournal, number: str, customer_id: str, contact_id: str | None = None
) -> tuple[NumberOwner | None, list[Change]]:
    """``SqlJournal.bind_number``, telling an unknown customer or contact by its type.

    Returns whom the number was taken from (its owner before, when that was another
    customer or another contact person; None when it was unbound or already theirs) and the
    rows changed."""
    async with journal.transaction() as tx:
        if await tx.session.get(Customer, customer_id) is None:
            raise UnknownCustomer(f"unknown customer {customer_id!r}")
        if contact_id is not None:
            contact = await tx.session.get(Contact, contact_id)
            if contact is None or contact.customer_id != customer_id:
                raise UnknownContact(f"customer {customer_id!r} has no contact {contact_id!r}")
        before = await directory.owner_of(tx.session, normalize_number(number, journal.region))
        if before is not None and (before.customer_id, before.contact_id) == (
            customer_id,
            contact_id,
        ):
            before = None
        await directory.bind_number(
            tx.session,
            number,
            customer_id=customer_id,
            contact_id=contact_id,
            region=journal.region,
            bump=tx.bump,
        )
        return before, sorted(tx.changes)


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
