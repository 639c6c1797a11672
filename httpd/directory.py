"""1C's directory: customers (upsert, delete, bulk import), numbers, employees.

Every write goes through :class:`storage.store.SqlJournal` in one transaction and bumps the
version of each call whose customer (or search text) it changed, so 1C sees the rows change
on its next ``GET /changes``; the feed is told at once, so waiting long-polls wake. Writes are
idempotent: the same ``PUT`` or import twice changes nothing the second time.

An import is checked whole first (a bad record is a 4xx and nothing is written), then written
500 customers per transaction, so that calls go in between them and the feed hears each part
(:meth:`storage.store.SqlJournal.import_customers`).

Numbers are accepted in any written form and compared normalised (DESIGN section 1); a
string that is no phone number at all (no digits) is a 422 ``invalid_number``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from httpd.errors import ApiError, json_response
from httpd.keys import FEED, JOURNAL
from httpd.params import (
    Query,
    bad,
    expect_object,
    object_field,
    path_text,
    read_json,
    string_list,
)
from storage import api as storage_api
from storage import directory as storage_directory
from storage.directory import (
    ContactRecord,
    CustomerRecord,
    DirectoryError,
    EmployeeRecord,
    MobileTaken,
    NumberOwner,
)
from storage.numbers import normalize_number
from storage.store import Change, SqlJournal

__all__ = ["parse_customer", "routes"]

routes = web.RouteTableDef()

_ID = 64
_NAME = 500
_RAW_NUMBER = 64
_NUMBER = 32
_MAX_NUMBERS = 100
_MAX_CONTACTS = 500
_MAX_IMPORT = 20_000
_BODY_LIMIT = 256 * 1024
IMPORT_BODY_LIMIT = 32 * 1024 * 1024


def _check_number(raw: str, where: str, region: str) -> str:
    number = normalize_number(raw, region)
    if number is None or len(number) > _NUMBER:
        raise ApiError(422, "invalid_number", f"{where}: not a phone number: {raw[:40]!r}")
    return number


def parse_customer(
    value: Any, where: str, region: str, *, customer_id: str | None
) -> CustomerRecord:
    """A customer of a request body; ``customer_id`` from the path, or the body's ``id``."""
    allowed = ["name", "numbers", "contacts"] + ([] if customer_id else ["id"])
    body = expect_object(value, where, allowed)
    if customer_id is None:
        customer_id = object_field(body, "id", where, max_length=_ID)
    assert customer_id is not None
    name = object_field(body, "name", where, max_length=_NAME)
    assert name is not None
    numbers = string_list(body, "numbers", where, max_items=_MAX_NUMBERS, max_length=_RAW_NUMBER)
    for index, raw in enumerate(numbers):
        _check_number(raw, f"{where}.numbers[{index}]", region)
    raw_contacts = body.get("contacts", [])
    if not isinstance(raw_contacts, list):
        raise bad("invalid_body", f"{where}.contacts: expected an array of objects")
    if len(raw_contacts) > _MAX_CONTACTS:
        raise bad("invalid_body", f"{where}.contacts: more than {_MAX_CONTACTS} items")
    contacts = []
    seen: set[str] = set()
    for index, item in enumerate(raw_contacts):
        at = f"{where}.contacts[{index}]"
        contact = expect_object(item, at, ("id", "name", "numbers"))
        contact_id = object_field(contact, "id", at, max_length=_ID)
        assert contact_id is not None
        if contact_id in seen:
            raise bad("invalid_body", f"{at}.id: {contact_id!r} appears twice")
        seen.add(contact_id)
        contact_name = object_field(contact, "name", at, max_length=_NAME)
        assert contact_name is not None
        contact_numbers = string_list(
            contact, "numbers", at, max_items=_MAX_NUMBERS, max_length=_RAW_NUMBER
        )
        for n, raw in enumerate(contact_numbers):
            _check_number(raw, f"{at}.numbers[{n}]", region)
        contacts.append(ContactRecord(contact_id, contact_name, contact_numbers))
    return CustomerRecord(customer_id, name, numbers, tuple(contacts))


async def _committed(request: web.Request, changes: list[Change]) -> dict[str, Any]:
    request.app[FEED].committed(changes)
    return await _summary(request, changes)


async def _summary(request: web.Request, changes: list[Change]) -> dict[str, Any]:
    """``changed_calls``, and ``last_version``: the version of the last row this request
    changed or, when it changed none (a repeated PUT, an unchanged import, a second DELETE),
    the journal's current version, so that it is never null."""
    last = max((c.version for c in changes), default=None)
    if last is None:
        last = await request.app[JOURNAL].last_version()
    return {"changed_calls": len({c.id for c in changes}), "last_version": last}


def _directory_error(exc: DirectoryError) -> ApiError:
    if isinstance(exc, storage_api.UnknownCustomer):
        return ApiError(404, "customer_not_found", str(exc))
    if isinstance(exc, storage_api.UnknownContact):
        return ApiError(404, "contact_not_found", str(exc))
    return ApiError(422, "invalid_number", str(exc))


@routes.put("/api/v1/customers/{customer_id}")
async def put_customer(request: web.Request) -> web.Response:
    customer_id = path_text(request, "customer_id", max_length=_ID)
    Query(request).done()
    journal = request.app[JOURNAL]
    body = await read_json(request, limit=_BODY_LIMIT)
    record = parse_customer(body, "body", journal.region, customer_id=customer_id)
    try:
        changes = await journal.upsert_customer(record, time.time())
    except DirectoryError as exc:
        raise _directory_error(exc) from None
    return json_response({"id": customer_id, **await _committed(request, changes)})


@routes.get("/api/v1/customers")
async def find_customers(request: web.Request) -> web.Response:
    """Type-ahead: customers whose name (or a contact person's) contains ``q``."""
    query = Query(request)
    text = query.text("q", max_length=200, default="", allow_empty=True) or ""
    limit = query.integer("limit", default=20, low=1, high=100)
    query.done()
    async with request.app[JOURNAL].database.sessions() as session:
        found = await storage_directory.find_customers(session, text, limit)
    return json_response({"items": [{"id": i, "name": n} for i, n in found]})


@routes.get("/api/v1/customers/{customer_id}")
async def get_customer(request: web.Request) -> web.Response:
    customer_id = path_text(request, "customer_id", max_length=_ID)
    Query(request).done()
    async with request.app[JOURNAL].database.sessions() as session:
        customer = await storage_directory.read_customer(session, customer_id)
    if customer is None:
        raise ApiError(404, "customer_not_found", f"no customer {customer_id!r}")
    return json_response(customer)


@routes.delete("/api/v1/customers/{customer_id}")
async def delete_customer(request: web.Request) -> web.Response:
    customer_id = path_text(request, "customer_id", max_length=_ID)
    Query(request).done()
    found, changes = await storage_api.delete_customer(request.app[JOURNAL], customer_id)
    summary = await _committed(request, changes)
    return json_response({"id": customer_id, "deleted": found, **summary})


@routes.post("/api/v1/customers:import")
async def import_customers(request: web.Request) -> web.Response:
    Query(request).done()
    journal = request.app[JOURNAL]
    body = await read_json(request, limit=IMPORT_BODY_LIMIT)
    if not isinstance(body, list):
        raise bad("invalid_body", "body: expected a JSON array of customers")
    if len(body) > _MAX_IMPORT:
        raise bad("invalid_body", f"body: more than {_MAX_IMPORT} customers; send them in parts")
    # Parsing normalises every number (~30 µs each, 60,000 in a typical full import): in a
    # thread, so that the event loop keeps answering (/healthz, long-polls) meanwhile.
    records = await asyncio.to_thread(_parse_customers, body, journal.region)
    feed = request.app[FEED]
    try:
        # Written in parts, one transaction each, so that calls are written between them;
        # the feed hears each part as it commits (see SqlJournal.import_customers).
        changes = await journal.import_customers(records, time.time(), committed=feed.committed)
    except DirectoryError as exc:
        raise _directory_error(exc) from None
    return json_response({"imported": len(records), **await _summary(request, changes)})


def _parse_customers(body: list[Any], region: str) -> list[CustomerRecord]:
    return [
        parse_customer(item, f"body[{index}]", region, customer_id=None)
        for index, item in enumerate(body)
    ]


def _owner(number: str, owner: NumberOwner | None) -> dict[str, Any]:
    if owner is None:
        return {"number": number, "registered": False, "customer": None}
    contact = None
    if owner.contact_id is not None:
        contact = {"id": owner.contact_id, "name": owner.contact_name}
    return {
        "number": number,
        "registered": True,
        "customer": {"id": owner.customer_id, "name": owner.customer_name, "contact": contact},
    }


def _path_number(request: web.Request, journal: SqlJournal) -> tuple[str, str]:
    raw = path_text(request, "number", max_length=_RAW_NUMBER)
    return raw, _check_number(raw, "number", journal.region)


@routes.get("/api/v1/numbers/{number}")
async def get_number(request: web.Request) -> web.Response:
    journal = request.app[JOURNAL]
    raw, number = _path_number(request, journal)
    Query(request).done()
    return json_response(_owner(number, await journal.lookup_number(raw)))


@routes.put("/api/v1/numbers/{number}")
async def put_number(request: web.Request) -> web.Response:
    journal = request.app[JOURNAL]
    raw, number = _path_number(request, journal)
    Query(request).done()
    body = expect_object(
        await read_json(request, limit=_BODY_LIMIT), "body", ("customer_id", "contact_id")
    )
    customer_id = object_field(body, "customer_id", "body", max_length=_ID)
    contact_id = object_field(
        body, "contact_id", "body", required=False, max_length=_ID, nullable=True
    )
    assert customer_id is not None
    try:
        before, changes = await storage_api.bind_number(journal, raw, customer_id, contact_id)
    except DirectoryError as exc:
        raise _directory_error(exc) from None
    owner = await journal.lookup_number(raw)
    # Binding takes the number from whoever had it: say so, 1C may want to tell the user.
    moved_from = None
    if before is not None:
        moved_from = {"customer_id": before.customer_id, "contact_id": before.contact_id}
    summary = await _committed(request, changes)
    return json_response({**_owner(number, owner), "moved_from": moved_from, **summary})


@routes.delete("/api/v1/numbers/{number}")
async def delete_number(request: web.Request) -> web.Response:
    journal = request.app[JOURNAL]
    raw, number = _path_number(request, journal)
    Query(request).done()
    try:
        found, changes = await storage_api.unbind_number(journal, raw)
    except DirectoryError as exc:
        raise _directory_error(exc) from None
    summary = await _committed(request, changes)
    return json_response({"number": number, "unbound": found, **summary})


def _employee(record: EmployeeRecord) -> Mapping[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "extensions": list(record.extensions),
        "mobile": list(record.mobile or ()),
    }


@routes.get("/api/v1/employees")
async def list_employees(request: web.Request) -> web.Response:
    Query(request).done()
    records = await request.app[JOURNAL].employees()
    return json_response({"items": [_employee(r) for r in records]})


@routes.put("/api/v1/employees/{employee_id}")
async def put_employee(request: web.Request) -> web.Response:
    employee_id = path_text(request, "employee_id", max_length=_ID)
    Query(request).done()
    body = expect_object(
        await read_json(request, limit=_BODY_LIMIT), "body", ("name", "extensions", "mobile")
    )
    name = object_field(body, "name", "body", max_length=_NAME)
    assert name is not None
    extensions = string_list(body, "extensions", "body", max_items=50, max_length=_ID)
    if any(not e.strip() or e != e.strip() for e in extensions):
        raise bad("invalid_body", "body.extensions: extensions must not be blank or padded")
    # Mobiles: any written form; absent keeps the stored ones, [] removes them.
    mobile = (
        tuple(string_list(body, "mobile", "body", max_items=10, max_length=64))
        if "mobile" in body
        else None
    )
    record = EmployeeRecord(employee_id, name, tuple(sorted(set(extensions))), mobile)
    try:
        moved = await request.app[JOURNAL].upsert_employee(record)
    except MobileTaken as exc:
        raise ApiError(409, "mobile_taken", str(exc)) from None
    except DirectoryError as exc:
        raise ApiError(422, "invalid_number", str(exc)) from None
    record = next(r for r in await request.app[JOURNAL].employees() if r.id == employee_id)
    # An extension another employee had moves here; that employee is kept (with what is
    # left, maybe nothing) and named, so that 1C can DELETE it if it is gone.
    moved_from = [
        {
            "id": m.employee_id,
            "extensions": list(m.extensions),
            "extensions_left": list(m.extensions_left),
        }
        for m in moved
    ]
    return json_response({**_employee(record), "moved_from": moved_from})


@routes.delete("/api/v1/employees/{employee_id}")
async def delete_employee(request: web.Request) -> web.Response:
    employee_id = path_text(request, "employee_id", max_length=_ID)
    Query(request).done()
    found = await request.app[JOURNAL].delete_employee(employee_id)
    return json_response({"id": employee_id, "deleted": found})
