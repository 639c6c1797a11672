"""Customers, their contact persons and numbers, and employees: who a number and a phone are.

Theory of operation
-------------------
1C owns the customer directory and pushes it (DESIGN section 5): one customer at a time, in
bulk, or a single number bound to a customer or a contact person. Numbers are stored
normalised (:func:`storage.numbers.normalize_number`, the PBX's default region), so
``8 916 123-45-67`` bound in 1C is the ``79161234567`` the PBX presents.

Binding is about what the journal *shows*: a call's ``customer`` and ``unregistered`` follow
the number's current owner, so every bind, unbind, customer rename or delete refreshes the
calls with the affected numbers (:func:`refresh_numbers`) and bumps the version of each row
whose customer, contact or search text changed. The *status* does not follow: the rules use
whether the number was registered when the call ended (``registered_at_end``), which a later
binding does not rewrite.

Employees are seeded from ``[employees]`` at start (only what the database lacks, so edits
made over HTTP survive a restart) and edited over HTTP. A rename refreshes the search text of
the employee's calls but bumps no version: 1C shows names from ``GET /employees``, and a
rename would otherwise re-send every call the employee ever took.

These functions run inside :meth:`storage.store.SqlJournal.transaction`, which serialises
writers; they receive its ``bump`` to version the rows they change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, load_only

from storage.models import (
    Call,
    CallParticipant,
    Contact,
    Customer,
    Employee,
    EmployeeExtension,
    EmployeeMobile,
    PhoneNumber,
)
from storage.numbers import normalize_number
from storage.search import fold, search_text
from storage.searchkeys import KeyId, add_call_keys, note_keys

__all__ = [
    "IMPORT_CHUNK",
    "Bump",
    "ContactRecord",
    "CustomerRecord",
    "DirectoryError",
    "EmployeeRecord",
    "ExtensionsMoved",
    "MobileTaken",
    "NumberOwner",
    "PreparedCustomer",
    "bind_number",
    "call_search_text",
    "delete_customer",
    "delete_employee",
    "employee_names",
    "find_customers",
    "import_chunk",
    "list_employees",
    "mobile_owners",
    "owner_of",
    "owners_of",
    "prepare_import",
    "read_customer",
    "read_employee_names",
    "read_owners",
    "refresh_numbers",
    "refresh_numbers_in",
    "seed_employees",
    "set_employee_mobiles",
    "unbind_number",
    "upsert_customer",
    "upsert_employee",
]

Bump = Callable[[Call], None]
_T = TypeVar("_T")
_CHUNK = 500  # ids per IN (...) list: far below SQLite's and asyncpg's parameter limits


class DirectoryError(ValueError):
    """A directory request that cannot be applied (unknown customer, bad number...)."""


@dataclass(frozen=True, slots=True)
class ContactRecord:
    id: str
    name: str
    numbers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A customer as 1C pushes it; its numbers and contacts replace the stored ones."""

    id: str
    name: str
    numbers: tuple[str, ...] = ()
    contacts: tuple[ContactRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class EmployeeRecord:
    id: str
    name: str
    extensions: tuple[str, ...] = ()
    #: External numbers (mobiles), any written form; None: keep what is stored.
    mobile: tuple[str, ...] | None = None


class MobileTaken(DirectoryError):
    """A mobile given to an employee is another employee's mobile or a customer's number."""

    def __init__(self, number: str, owner: str, owner_id: str) -> None:
        super().__init__(f"{number} is the number of {owner} {owner_id!r}")
        self.number = number
        #: "employee" or "customer".
        self.owner = owner
        self.owner_id = owner_id


@dataclass(frozen=True, slots=True)
class NumberOwner:
    number: str
    customer_id: str
    customer_name: str
    contact_id: str | None = None
    contact_name: str | None = None


def _normalized(raw: str, region: str) -> str:
    number = normalize_number(raw, region)
    if number is None:
        raise DirectoryError(f"not a phone number: {raw!r}")
    return number


def _chunks(items: Sequence[_T]) -> Iterable[list[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


async def owner_of(session: AsyncSession, number: str | None) -> NumberOwner | None:
    """Who ``number`` (normalised) is bound to now, if anyone."""
    if not number:
        return None
    return (await owners_of(session, [number])).get(number)


async def owners_of(session: AsyncSession, numbers: Iterable[str | None]) -> dict[str, NumberOwner]:
    """Who each of ``numbers`` (normalised) is bound to now; unbound numbers are left out."""
    return await session.run_sync(read_owners, list(numbers))


def read_owners(session: Session, numbers: Iterable[str | None]) -> dict[str, NumberOwner]:
    """:func:`owners_of` in a synchronous session (the batch writer's thread)."""
    wanted = sorted({n for n in numbers if n})
    owners: dict[str, NumberOwner] = {}
    for chunk in _chunks(wanted):
        rows = session.execute(
            sa.select(
                PhoneNumber.number,
                PhoneNumber.customer_id,
                Customer.name,
                PhoneNumber.contact_id,
                Contact.name,
            )
            .join(Customer, Customer.id == PhoneNumber.customer_id)
            .outerjoin(Contact, Contact.id == PhoneNumber.contact_id)
            .where(PhoneNumber.number.in_(chunk))
        )
        for number, customer_id, customer, contact_id, contact in rows:
            owners[number] = NumberOwner(number, customer_id, customer, contact_id, contact)
    return owners


async def employee_names(session: AsyncSession, extensions: Iterable[str]) -> dict[str, str]:
    """The name of the employee each of ``extensions`` belongs to (unknown ones left out)."""
    return await session.run_sync(read_employee_names, list(extensions))


def read_employee_names(session: Session, extensions: Iterable[str]) -> dict[str, str]:
    """:func:`employee_names` in a synchronous session (the batch writer's thread)."""
    wanted = sorted(set(extensions))
    names: dict[str, str] = {}
    for chunk in _chunks(wanted):
        rows = session.execute(
            sa.select(EmployeeExtension.extension, Employee.name)
            .join(Employee, Employee.id == EmployeeExtension.employee_id)
            .where(EmployeeExtension.extension.in_(chunk))
        )
        names.update((extension, name) for extension, name in rows)
    return names


def call_search_text(
    row: Call,
    extensions: Sequence[str],
    names: Sequence[str | None],
    region: str,
    employees: Mapping[str, str],
) -> str:
    """The search text of a call row: its number, customer and contact names (``names``),
    its employees' extensions and names (``employees``, from :func:`employee_names`)."""
    return search_text(
        number=row.number,
        region=region,
        names=[*names, *(employees.get(e) for e in extensions)],
        extensions=extensions,
    )


async def _recompute(
    session: AsyncSession, rows: Sequence[Call], region: str, *, bump: Bump | None
) -> None:
    """Bring customer, contact and search text of ``rows`` up to date with the directory."""
    await session.run_sync(_recompute_rows, rows, region, bump)


def _recompute_rows(session: Session, rows: Sequence[Call], region: str, bump: Bump | None) -> None:
    """:func:`_recompute` in a synchronous session."""
    ids = [row.id for row in rows]
    extensions: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(ids):
        parts = session.execute(
            sa.select(CallParticipant.call_id, CallParticipant.extension)
            .where(CallParticipant.call_id.in_(chunk))
            .order_by(CallParticipant.call_id, CallParticipant.ordinal)
        )
        for call_id, extension in parts:
            extensions[call_id].append(extension)
    owners = read_owners(session, (row.number for row in rows))
    employees = read_employee_names(session, (e for exts in extensions.values() for e in exts))
    keys: dict[KeyId, tuple[str, float]] = {}
    for row in rows:
        owner = owners.get(row.number) if row.direction != "internal" and row.number else None
        exts = extensions.get(row.id, [])
        names = [owner.customer_name, owner.contact_name] if owner else []
        text = search_text(
            number=row.number,
            region=region,
            names=[*names, *(employees.get(e) for e in exts)],
            extensions=exts,
        )
        customer_id = owner.customer_id if owner else None
        contact_id = owner.contact_id if owner else None
        before = (row.customer_id, row.contact_id, row.search_text)
        if before == (customer_id, contact_id, text):
            continue
        add_call_keys(
            keys,
            row.started_at,
            number=row.number,
            owner=owner,
            extensions=exts,
            employees=employees,
            region=region,
        )
        row.customer_id, row.contact_id, row.search_text = customer_id, contact_id, text
        row.unregistered = row.direction != "internal" and owner is None
        if bump is not None:
            bump(row)
    session.flush()
    note_keys(session, keys)


_REFRESH_COLUMNS = (
    Call.id,
    Call.number,
    Call.number_raw,
    Call.direction,
    Call.customer_id,
    Call.contact_id,
    Call.unregistered,
    Call.search_text,
    Call.version,
    Call.started_at,
)


async def refresh_numbers(
    session: AsyncSession, numbers: Iterable[str], region: str, bump: Bump
) -> None:
    """Re-show the calls of ``numbers`` with their current owners; bump what changed."""
    await session.run_sync(refresh_numbers_in, numbers, region, bump)


def refresh_numbers_in(session: Session, numbers: Iterable[str], region: str, bump: Bump) -> None:
    """:func:`refresh_numbers` in a synchronous session."""
    wanted = sorted(set(numbers))
    rows: list[Call] = []
    for chunk in _chunks(wanted):
        query = sa.select(Call).where(Call.number.in_(chunk)).options(load_only(*_REFRESH_COLUMNS))
        rows.extend(session.scalars(query).all())
    rows.sort(key=lambda r: (r.started_at, r.id))
    _recompute_rows(session, rows, region, bump)


async def _numbers_of(session: AsyncSession, condition: sa.ColumnElement[bool]) -> set[str]:
    return set((await session.scalars(sa.select(PhoneNumber.number).where(condition))).all())


async def upsert_customer(
    session: AsyncSession, record: CustomerRecord, now: float, region: str, bump: Bump
) -> None:
    """Create or replace a customer with exactly the numbers and contacts of ``record``."""
    wanted: dict[str, tuple[str, str | None]] = {}
    for raw in record.numbers:
        wanted[_normalized(raw, region)] = (raw, None)
    for contact in record.contacts:
        for raw in contact.numbers:
            wanted[_normalized(raw, region)] = (raw, contact.id)
    affected: set[str] = set()
    customer = await session.get(Customer, record.id)
    if customer is None:
        session.add(Customer(id=record.id, name=record.name, updated_at=now))
    elif customer.name != record.name:
        customer.name, customer.updated_at = record.name, now
        affected |= await _numbers_of(session, PhoneNumber.customer_id == record.id)
    await session.flush()
    keep = {contact.id for contact in record.contacts}
    stale = await session.scalars(
        sa.select(Contact).where(Contact.customer_id == record.id, Contact.id.not_in(keep))
    )
    for gone in stale.all():
        affected |= await _drop_numbers(session, PhoneNumber.contact_id == gone.id)
        await session.delete(gone)
    for contact in record.contacts:
        contact_row = await session.get(Contact, contact.id)
        if contact_row is None:
            session.add(Contact(id=contact.id, customer_id=record.id, name=contact.name))
            continue
        if contact_row.customer_id != record.id:
            # 1C moved the person to another customer: their old bindings go with the move.
            affected |= await _drop_numbers(session, PhoneNumber.contact_id == contact.id)
            contact_row.customer_id = record.id
        if contact_row.name != contact.name:
            contact_row.name = contact.name
            affected |= await _numbers_of(session, PhoneNumber.contact_id == contact.id)
    await session.flush()
    affected |= await _drop_numbers(
        session, sa.and_(PhoneNumber.customer_id == record.id, PhoneNumber.number.not_in(wanted))
    )
    for number, (raw, contact_id) in wanted.items():
        bound = await session.get(PhoneNumber, number)
        if bound is None:
            session.add(
                PhoneNumber(number=number, raw=raw, customer_id=record.id, contact_id=contact_id)
            )
            affected.add(number)
            continue
        if (bound.customer_id, bound.contact_id) != (record.id, contact_id):
            bound.customer_id, bound.contact_id = record.id, contact_id
            affected.add(number)
        bound.raw = raw
    await session.flush()
    await refresh_numbers(session, affected, region, bump)


# -- bulk import ---------------------------------------------------------------------------
#
# ``POST /customers:import`` brings up to 20,000 customers. Applying them one by one with
# :func:`upsert_customer` costs a dozen queries each (~30 ms: ten minutes of the write lock
# for a full import). Instead the import checks every record first (:func:`prepare_import`),
# then applies ``IMPORT_CHUNK`` customers per transaction (:func:`import_chunk`): it reads
# every row the chunk can touch in a few ``IN (...)`` queries, replays
# :func:`upsert_customer`'s steps on that snapshot in memory (:class:`_Snapshot`), in the
# records' order, and writes the difference with one ``executemany`` per table and kind; the
# calls of the affected numbers are refreshed once at the end of the chunk.

#: Customers per transaction of an import: short enough that a call written meanwhile waits
#: a fraction of a second, long enough that the per-transaction costs do not dominate.
IMPORT_CHUNK = 500


@dataclass(frozen=True, slots=True)
class PreparedCustomer:
    """A customer of an import, checked: its numbers normalised, each with its contact."""

    record: CustomerRecord
    #: Normalised number → (as written, contact id or None); the last mention of a number wins.
    numbers: Mapping[str, tuple[str, str | None]]


def prepare_import(records: Iterable[CustomerRecord], region: str) -> list[PreparedCustomer]:
    """Check and normalise every record before anything is written: a bad number anywhere
    (or a contact listed twice in one customer) raises :class:`DirectoryError` and the
    import changes nothing."""
    prepared: list[PreparedCustomer] = []
    for record in records:
        wanted: dict[str, tuple[str, str | None]] = {}
        for raw in record.numbers:
            wanted[_normalized(raw, region)] = (raw, None)
        seen: set[str] = set()
        for contact in record.contacts:
            if contact.id in seen:
                raise DirectoryError(
                    f"customer {record.id!r}: contact {contact.id!r} appears twice"
                )
            seen.add(contact.id)
            for raw in contact.numbers:
                wanted[_normalized(raw, region)] = (raw, contact.id)
        prepared.append(PreparedCustomer(record, wanted))
    return prepared


_NumberRow = tuple[str, str, str | None]  # raw, customer id, contact id


def _rows_where(
    session: Session, columns: Sequence[Any], column: Any, values: Sequence[str]
) -> Iterator[Any]:
    """``SELECT columns WHERE column IN values``, ``_CHUNK`` values per query."""
    for chunk in _chunks(values):
        yield from session.execute(sa.select(*columns).where(column.in_(chunk)))


class _Snapshot:
    """The directory rows a chunk of an import can touch, as read, and as the chunk leaves
    them: :func:`upsert_customer`'s steps replayed on dictionaries, with the indexes its
    queries use (a customer's contacts and numbers, a contact's numbers)."""

    def __init__(
        self,
        customers: dict[str, tuple[str, float]],
        contacts: dict[str, tuple[str, str]],
        numbers: dict[str, _NumberRow],
    ) -> None:
        self.before = (dict(customers), dict(contacts), dict(numbers))
        self.customers = customers
        self.contacts: dict[str, tuple[str, str]] = {}
        self.numbers: dict[str, _NumberRow] = {}
        self._contacts_of: defaultdict[str, set[str]] = defaultdict(set)
        self._customer_numbers: defaultdict[str, set[str]] = defaultdict(set)
        self._contact_numbers: defaultdict[str, set[str]] = defaultdict(set)
        for contact_id, contact in contacts.items():
            self._set_contact(contact_id, contact)
        for number, bound in numbers.items():
            self._set_number(number, bound)

    @classmethod
    def read(cls, session: Session, chunk: Sequence[PreparedCustomer]) -> _Snapshot:
        """Every row :func:`upsert_customer` would read for these customers: the customers,
        their contacts and the contacts they name, the numbers of all those, and the numbers
        they want (whoever holds them now)."""
        customer_ids = sorted({c.record.id for c in chunk})
        named = sorted({contact.id for c in chunk for contact in c.record.contacts})
        wanted = sorted({number for c in chunk for number in c.numbers})
        customers = {
            i: (name, at)
            for i, name, at in _rows_where(
                session,
                (Customer.id, Customer.name, Customer.updated_at),
                Customer.id,
                customer_ids,
            )
        }
        contacts: dict[str, tuple[str, str]] = {}
        for column, values in ((Contact.customer_id, customer_ids), (Contact.id, named)):
            found = _rows_where(
                session, (Contact.id, Contact.customer_id, Contact.name), column, values
            )
            contacts.update((i, (owner, name)) for i, owner, name in found)
        numbers: dict[str, _NumberRow] = {}
        number_columns = (
            PhoneNumber.number,
            PhoneNumber.raw,
            PhoneNumber.customer_id,
            PhoneNumber.contact_id,
        )
        by: tuple[tuple[Any, Sequence[str]], ...] = (
            (PhoneNumber.customer_id, customer_ids),
            (PhoneNumber.contact_id, sorted(contacts)),
            (PhoneNumber.number, wanted),
        )
        for key, keys in by:
            bound = _rows_where(session, number_columns, key, keys)
            numbers.update((n, (raw, owner, contact)) for n, raw, owner, contact in bound)
        return cls(customers, contacts, numbers)

    def _set_contact(self, contact_id: str, value: tuple[str, str] | None) -> None:
        old = self.contacts.pop(contact_id, None)
        if old is not None:
            self._contacts_of[old[0]].discard(contact_id)
        if value is not None:
            self.contacts[contact_id] = value
            self._contacts_of[value[0]].add(contact_id)

    def _set_number(self, number: str, value: _NumberRow | None) -> None:
        old = self.numbers.pop(number, None)
        if old is not None:
            self._customer_numbers[old[1]].discard(number)
            if old[2] is not None:
                self._contact_numbers[old[2]].discard(number)
        if value is not None:
            self.numbers[number] = value
            self._customer_numbers[value[1]].add(number)
            if value[2] is not None:
                self._contact_numbers[value[2]].add(number)

    def _drop_contact_numbers(self, contact_id: str) -> set[str]:
        dropped = set(self._contact_numbers[contact_id])
        for number in dropped:
            self._set_number(number, None)
        return dropped

    def upsert(self, customer: PreparedCustomer, now: float) -> set[str]:
        """:func:`upsert_customer` on the snapshot; return the numbers whose calls it
        changes (the same ones :func:`upsert_customer` refreshes)."""
        record, wanted = customer.record, customer.numbers
        affected: set[str] = set()
        current = self.customers.get(record.id)
        if current is None or current[0] != record.name:
            if current is not None:
                affected |= self._customer_numbers[record.id]
            self.customers[record.id] = (record.name, now)
        keep = {contact.id for contact in record.contacts}
        for gone in sorted(self._contacts_of[record.id] - keep):
            affected |= self._drop_contact_numbers(gone)
            self._set_contact(gone, None)
        for contact in record.contacts:
            row = self.contacts.get(contact.id)
            if row is None:
                self._set_contact(contact.id, (record.id, contact.name))
                continue
            if row[0] != record.id:
                # 1C moved the person to another customer: their old bindings go with the move.
                affected |= self._drop_contact_numbers(contact.id)
            if row[1] != contact.name:
                affected |= self._contact_numbers[contact.id]
            self._set_contact(contact.id, (record.id, contact.name))
        for number in sorted(self._customer_numbers[record.id] - wanted.keys()):
            self._set_number(number, None)
            affected.add(number)
        for number, (raw, contact_id) in wanted.items():
            bound = self.numbers.get(number)
            if bound is None or bound[1:] != (record.id, contact_id):
                affected.add(number)
            self._set_number(number, (raw, record.id, contact_id))
        return affected

    def write(self, session: Session) -> None:
        """Write what changed since :meth:`read`: an ``executemany`` per table and kind, in
        the order the foreign keys need. A number that changes is deleted and inserted again,
        so that no step sees it pointing at a contact that is gone or not there yet."""
        customers, contacts, numbers = self.before
        connection = session.connection()
        new_customers = [
            {"id": i, "name": name, "updated_at": at}
            for i, (name, at) in self.customers.items()
            if i not in customers
        ]
        renamed = [
            {"b_id": i, "b_name": name, "b_at": at}
            for i, (name, at) in self.customers.items()
            if i in customers and customers[i] != (name, at)
        ]
        if new_customers:
            connection.execute(sa.insert(Customer), new_customers)
        if renamed:
            connection.execute(
                sa.update(Customer)
                .where(Customer.id == sa.bindparam("b_id"))
                .values(name=sa.bindparam("b_name"), updated_at=sa.bindparam("b_at")),
                renamed,
            )
        stale = sorted(n for n, bound in numbers.items() if self.numbers.get(n) != bound)
        for chunk in _chunks(stale):
            connection.execute(sa.delete(PhoneNumber).where(PhoneNumber.number.in_(chunk)))
        for chunk in _chunks(sorted(contacts.keys() - self.contacts.keys())):
            connection.execute(sa.delete(Contact).where(Contact.id.in_(chunk)))
        new_contacts = [
            {"id": i, "customer_id": owner, "name": name}
            for i, (owner, name) in self.contacts.items()
            if i not in contacts
        ]
        moved = [
            {"b_id": i, "b_customer": owner, "b_name": name}
            for i, (owner, name) in self.contacts.items()
            if i in contacts and contacts[i] != (owner, name)
        ]
        if new_contacts:
            connection.execute(sa.insert(Contact), new_contacts)
        if moved:
            connection.execute(
                sa.update(Contact)
                .where(Contact.id == sa.bindparam("b_id"))
                .values(customer_id=sa.bindparam("b_customer"), name=sa.bindparam("b_name")),
                moved,
            )
        bound_now = [
            {"number": n, "raw": raw, "customer_id": owner, "contact_id": contact}
            for n, (raw, owner, contact) in self.numbers.items()
            if numbers.get(n) != (raw, owner, contact)
        ]
        if bound_now:
            connection.execute(sa.insert(PhoneNumber), bound_now)


def import_chunk(
    session: Session, chunk: Sequence[PreparedCustomer], now: float, region: str, bump: Bump
) -> None:
    """Apply ``chunk`` (from :func:`prepare_import`) as :func:`upsert_customer` would, one
    customer after the other, in a few set-based statements; the calls of every affected
    number are refreshed once, with the owners they end up with."""
    snapshot = _Snapshot.read(session, chunk)
    affected: set[str] = set()
    for customer in chunk:
        affected |= snapshot.upsert(customer, now)
    snapshot.write(session)
    refresh_numbers_in(session, affected, region, bump)


async def _drop_numbers(session: AsyncSession, condition: sa.ColumnElement[bool]) -> set[str]:
    numbers = await _numbers_of(session, condition)
    if numbers:
        await session.execute(sa.delete(PhoneNumber).where(condition))
    return numbers


async def delete_customer(session: AsyncSession, customer_id: str, region: str, bump: Bump) -> bool:
    """Remove a customer, its contacts and its bindings; False if it was not there."""
    if await session.get(Customer, customer_id) is None:
        return False
    affected = await _drop_numbers(session, PhoneNumber.customer_id == customer_id)
    # Unbind the calls first: the foreign keys would null them without a new version.
    await refresh_numbers(session, affected, region, bump)
    shown = await session.scalars(
        sa.select(Call)
        .where(Call.customer_id == customer_id)
        .options(load_only(*_REFRESH_COLUMNS))
        .order_by(Call.started_at, Call.id)
    )
    await _recompute(session, list(shown.all()), region, bump=bump)
    await session.execute(sa.delete(Contact).where(Contact.customer_id == customer_id))
    await session.execute(sa.delete(Customer).where(Customer.id == customer_id))
    return True


async def bind_number(
    session: AsyncSession,
    raw: str,
    *,
    customer_id: str,
    contact_id: str | None,
    region: str,
    bump: Bump,
) -> None:
    number = _normalized(raw, region)
    if await session.get(Customer, customer_id) is None:
        raise DirectoryError(f"unknown customer {customer_id!r}")
    if contact_id is not None:
        contact = await session.get(Contact, contact_id)
        if contact is None or contact.customer_id != customer_id:
            raise DirectoryError(f"customer {customer_id!r} has no contact {contact_id!r}")
    bound = await session.get(PhoneNumber, number)
    if bound is None:
        session.add(
            PhoneNumber(number=number, raw=raw, customer_id=customer_id, contact_id=contact_id)
        )
    else:
        bound.raw, bound.customer_id, bound.contact_id = raw, customer_id, contact_id
    await session.flush()
    await refresh_numbers(session, [number], region, bump)


async def unbind_number(session: AsyncSession, raw: str, region: str, bump: Bump) -> bool:
    number = _normalized(raw, region)
    if not await _drop_numbers(session, PhoneNumber.number == number):
        return False
    await refresh_numbers(session, [number], region, bump)
    return True


async def _refresh_extensions(session: AsyncSession, extensions: set[str], region: str) -> None:
    if not extensions:
        return
    ids = sorted(
        set(
            (
                await session.scalars(
                    sa.select(CallParticipant.call_id).where(
                        CallParticipant.extension.in_(sorted(extensions))
                    )
                )
            ).all()
        )
    )
    for chunk in _chunks(ids):
        query = sa.select(Call).where(Call.id.in_(chunk)).options(load_only(*_REFRESH_COLUMNS))
        await _recompute(session, list((await session.scalars(query)).all()), region, bump=None)


@dataclass(frozen=True, slots=True)
class ExtensionsMoved:
    """Extensions an upsert took from another employee, and what that employee kept."""

    employee_id: str
    extensions: tuple[str, ...]
    extensions_left: tuple[str, ...]


async def _extensions_of(session: AsyncSession, employee_id: str) -> set[str]:
    return set(
        (
            await session.scalars(
                sa.select(EmployeeExtension.extension).where(
                    EmployeeExtension.employee_id == employee_id
                )
            )
        ).all()
    )


async def upsert_employee(
    session: AsyncSession, record: EmployeeRecord, region: str
) -> list[ExtensionsMoved]:
    """Create or replace an employee; an extension another employee had moves to this one.

    The employees it was taken from are kept, even with no extension left (1C owns its staff
    and may remove them with :func:`delete_employee`), and returned with what they kept."""
    employee = await session.get(Employee, record.id)
    renamed = employee is None or employee.name != record.name
    if employee is None:
        session.add(Employee(id=record.id, name=record.name))
    else:
        employee.name = record.name
    await session.flush()
    old = await _extensions_of(session, record.id)
    new = set(record.extensions)
    await session.execute(
        sa.delete(EmployeeExtension).where(
            EmployeeExtension.employee_id == record.id, EmployeeExtension.extension.not_in(new)
        )
    )
    taken: defaultdict[str, list[str]] = defaultdict(list)
    for extension in sorted(new - old):
        owned = await session.get(EmployeeExtension, extension)
        if owned is None:
            session.add(EmployeeExtension(extension=extension, employee_id=record.id))
        else:
            taken[owned.employee_id].append(extension)
            owned.employee_id = record.id
    await session.flush()
    await _refresh_extensions(session, (old | new) if renamed else (old ^ new), region)
    return [
        ExtensionsMoved(
            previous,
            tuple(extensions),
            tuple(sorted(await _extensions_of(session, previous))),
        )
        for previous, extensions in sorted(taken.items())
    ]


async def delete_employee(session: AsyncSession, employee_id: str, region: str) -> bool:
    """Remove an employee and free their extensions; False if there was no such employee.

    Their calls stay as they are; the search text of those calls loses the name (as a rename
    does, without a new version)."""
    if await session.get(Employee, employee_id) is None:
        return False
    freed = await _extensions_of(session, employee_id)
    await session.execute(
        sa.delete(EmployeeExtension).where(EmployeeExtension.employee_id == employee_id)
    )
    await session.execute(sa.delete(Employee).where(Employee.id == employee_id))
    await session.flush()
    await _refresh_extensions(session, freed, region)
    return True


async def seed_employees(
    session: AsyncSession, records: Iterable[EmployeeRecord], region: str
) -> int:
    """Add what the database lacks; return how many employees or extensions were added."""
    added: set[str] = set()
    count = 0
    for record in records:
        if await session.get(Employee, record.id) is None:
            session.add(Employee(id=record.id, name=record.name))
            count += 1
        await session.flush()
        for extension in record.extensions:
            if await session.get(EmployeeExtension, extension) is None:
                session.add(EmployeeExtension(extension=extension, employee_id=record.id))
                added.add(extension)
        await session.flush()
    # Calls taken before an extension was known are found by its new name from now on.
    await _refresh_extensions(session, added, region)
    # Configured mobiles no employee or customer has yet (an edit over HTTP survives).
    for record in records:
        for raw in record.mobile or ():
            number = normalize_number(raw, region)
            if number is None or await _mobile_owner(session, number, record.id) is not None:
                continue
            if await session.get(EmployeeMobile, number) is None:
                ordinal = await session.scalar(
                    sa.select(sa.func.count())
                    .select_from(EmployeeMobile)
                    .where(EmployeeMobile.employee_id == record.id)
                )
                session.add(
                    EmployeeMobile(
                        number=number, raw=raw, employee_id=record.id, ordinal=ordinal or 0
                    )
                )
                await session.flush()
                count += 1
    return count + len(added)


async def list_employees(session: AsyncSession) -> list[EmployeeRecord]:
    rows = await session.execute(
        sa.select(Employee.id, Employee.name, EmployeeExtension.extension)
        .outerjoin(EmployeeExtension, EmployeeExtension.employee_id == Employee.id)
        .order_by(Employee.id, EmployeeExtension.extension)
    )
    found: dict[str, tuple[str, list[str]]] = {}
    for employee_id, name, extension in rows:
        entry = found.setdefault(employee_id, (name, []))
        if extension is not None:
            entry[1].append(extension)
    mobiles: dict[str, list[str]] = defaultdict(list)
    for employee_id, number in await session.execute(
        sa.select(EmployeeMobile.employee_id, EmployeeMobile.number).order_by(
            EmployeeMobile.employee_id, EmployeeMobile.ordinal
        )
    ):
        mobiles[employee_id].append(number)
    return [
        EmployeeRecord(i, name, tuple(exts), tuple(mobiles.get(i, ())))
        for i, (name, exts) in found.items()
    ]


async def _mobile_owner(
    session: AsyncSession, number: str, employee_id: str
) -> tuple[str, str] | None:
    """Who else has ``number``: ("employee", id) for another employee's mobile,
    ("customer", id) for a customer's (or contact's) number, None when nobody."""
    owner = await session.scalar(
        sa.select(EmployeeMobile.employee_id).where(
            EmployeeMobile.number == number, EmployeeMobile.employee_id != employee_id
        )
    )
    if owner is not None:
        return "employee", owner
    bound = await session.get(PhoneNumber, number)
    if bound is not None:
        return "customer", bound.customer_id
    return None


async def set_employee_mobiles(
    session: AsyncSession, employee_id: str, raws: Sequence[str], region: str
) -> tuple[str, ...]:
    """Replace an employee's mobiles with ``raws`` (normalised; repeats collapse, the first
    written form kept). A number that is another employee's mobile or a customer's number is
    refused (:class:`MobileTaken`), nothing changed: one number cannot be both, and the
    journal would credit calls to the wrong person. Returns the normalised numbers."""
    wanted: dict[str, str] = {}
    for raw in raws:
        wanted.setdefault(_normalized(raw, region), raw)
    for number in wanted:
        owner = await _mobile_owner(session, number, employee_id)
        if owner is not None:
            raise MobileTaken(number, *owner)
    await session.execute(
        sa.delete(EmployeeMobile).where(EmployeeMobile.employee_id == employee_id)
    )
    await session.flush()
    session.add_all(
        EmployeeMobile(number=number, raw=raw, employee_id=employee_id, ordinal=ordinal)
        for ordinal, (number, raw) in enumerate(wanted.items())
    )
    await session.flush()
    return tuple(wanted)


async def mobile_owners(session: AsyncSession) -> tuple[list[str], dict[str, str]]:
    """What the channel classifier needs from the directory: every extension, and each
    employee's mobile (normalised) → that employee's first extension (an employee with no
    extension cannot be a call's participant and is left out)."""
    extensions: dict[str, str] = {}
    for extension, employee_id in await session.execute(
        sa.select(EmployeeExtension.extension, EmployeeExtension.employee_id).order_by(
            EmployeeExtension.extension
        )
    ):
        extensions.setdefault(employee_id, extension)
    everyone = list((await session.scalars(sa.select(EmployeeExtension.extension))).all())
    mobiles = {
        number: extensions[employee_id]
        for number, employee_id in await session.execute(
            sa.select(EmployeeMobile.number, EmployeeMobile.employee_id)
        )
        if employee_id in extensions
    }
    return sorted(everyone), mobiles


async def find_customers(session: AsyncSession, text: str, limit: int) -> list[tuple[str, str]]:
    """Customers (id, name) whose name, id or a contact person's name contains ``text``, folded
    as the journal's search folds (case, ё/е), by name, at most ``limit``. Folding is done
    here, not in SQL (SQLite's ``lower`` knows only ASCII): a directory of tens of thousands of
    names is read in a few milliseconds."""
    wanted = fold(text)
    if not wanted:
        return []
    by_contact = {
        customer_id
        for customer_id, name in await session.execute(sa.select(Contact.customer_id, Contact.name))
        if wanted in fold(name)
    }
    found: list[tuple[str, str]] = []
    rows = await session.execute(
        sa.select(Customer.id, Customer.name).order_by(Customer.name, Customer.id)
    )
    for customer_id, name in rows:
        if customer_id in by_contact or wanted in fold(name) or wanted in fold(customer_id):
            found.append((customer_id, name))
            if len(found) >= limit:
                break
    return found


async def read_customer(session: AsyncSession, customer_id: str) -> dict[str, Any] | None:
    """One customer with its own numbers and its contact persons with theirs; None if absent."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        return None
    contacts = (
        await session.scalars(
            sa.select(Contact).where(Contact.customer_id == customer_id).order_by(Contact.name)
        )
    ).all()
    numbers = (
        await session.scalars(
            sa.select(PhoneNumber)
            .where(PhoneNumber.customer_id == customer_id)
            .order_by(PhoneNumber.number)
        )
    ).all()
    own = [n.number for n in numbers if n.contact_id is None]
    return {
        "id": customer.id,
        "name": customer.name,
        "numbers": own,
        "contacts": [
            {
                "id": c.id,
                "name": c.name,
                "numbers": [n.number for n in numbers if n.contact_id == c.id],
            }
            for c in contacts
        ],
    }
